"""ICMP echo sockets, shared by every ICMP probe of the agent.

Linux offers two: a ping socket (``SOCK_DGRAM`` + ``IPPROTO_ICMP``), allowed to any process whose group is inside
``net.ipv4.ping_group_range`` (the kernel picks the echo id and hands each socket its own replies), and a raw
socket, allowed with ``CAP_NET_RAW`` (it sees every ICMP packet of the host, so replies are matched by our id).
The ping socket is tried first, as blackbox_exporter does. One socket per address family, source address and
don't-fragment setting serves every probe: replies are matched to their request by sequence number, payload and
sender, and timed by the kernel's receive timestamp (``SO_TIMESTAMPNS``), so a busy event loop does not inflate
round trips. The hop limit is set per packet (ancillary data), so probes with different ``ttl`` share a socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import socket
import struct
import time
from dataclasses import dataclass

ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
PROTOCOL: dict[int, int] = {socket.AF_INET: socket.IPPROTO_ICMP, socket.AF_INET6: socket.IPPROTO_ICMPV6}
# Linux constants the socket module does not always name
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_MTU_DISCOVER, IP_PMTUDISC_DO = getattr(socket, "IP_MTU_DISCOVER", 10), getattr(socket, "IP_PMTUDISC_DO", 2)
IPV6_DONTFRAG = getattr(socket, "IPV6_DONTFRAG", 62)
_TIMESPEC = struct.Struct("@qq")
_INT = struct.Struct("@i")
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, id, sequence


class NoSocket(Exception):
    """Neither socket kind may be opened: the words for the operator say why and what to change."""


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ping_group_range() -> str:
    try:
        with open("/proc/sys/net/ipv4/ping_group_range") as file:
            return " ".join(file.read().split())
    except OSError:
        return "unreadable"


def open_echo_socket(family: int) -> tuple[socket.socket, bool]:
    """A ping socket if the process may open one, else a raw socket: (socket, is_raw). Raises NoSocket."""
    try:
        return socket.socket(family, socket.SOCK_DGRAM, PROTOCOL[family]), False
    except PermissionError:
        pass
    try:
        return socket.socket(family, socket.SOCK_RAW, PROTOCOL[family]), True
    except PermissionError:
        groups = sorted({os.getgid(), *os.getgroups()})
        raise NoSocket(
            f"no ICMP socket may be opened: a ping socket needs the process's group ({', '.join(map(str, groups))}) "
            f"inside net.ipv4.ping_group_range (now {_ping_group_range()!r}; e.g. sysctl -w "
            "net.ipv4.ping_group_range='0 2147483647'), a raw socket needs CAP_NET_RAW (e.g. "
            "AmbientCapabilities=CAP_NET_RAW in the systemd unit)") from None


def socket_problem(family: int) -> str | None:
    """Why ICMP probes of this address family cannot run here, or None (opens and closes a socket)."""
    try:
        sock, _ = open_echo_socket(family)
    except NoSocket as exc:
        return str(exc)
    except OSError as exc:  # the family itself is missing (a kernel without IPv6)
        return f"no ICMP socket for IPv{6 if family == socket.AF_INET6 else 4}: {exc.strerror or exc}"
    sock.close()
    return None


@dataclass
class Echo:
    """One echo request in flight."""

    address: str
    payload: bytes
    sent_ns: int
    reply: asyncio.Future[tuple[float, int | None]]  # (round trip in seconds, hop limit of the reply)


class EchoSocket:
    """One shared socket and the echo requests in flight on it, by sequence number."""

    def __init__(self, family: int, source: str | None, dont_fragment: bool):
        self.family = family
        self.sock, self.raw = open_echo_socket(family)
        try:
            self._configure(source, dont_fragment)
        except BaseException:
            self.sock.close()
            raise
        # A ping socket's id is its local "port", which the kernel sets in every request; a raw socket's is ours.
        self.ident = secrets.randbits(16) if self.raw else self.sock.getsockname()[1]
        self._sequence = secrets.randbits(16)
        self._in_flight: dict[int, Echo] = {}
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _configure(self, source: str | None, dont_fragment: bool) -> None:
        sock = self.sock
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if self.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            if dont_fragment:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
        else:
            if not self.raw:  # a raw socket reads the TTL from the IP header it receives
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            if dont_fragment:
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        if source:
            sock.bind((source, 0))
        elif not self.raw:
            sock.bind(("::" if self.family == socket.AF_INET6 else "0.0.0.0", 0))  # the kernel picks our id

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for echo in self._in_flight.values():
            echo.reply.cancel()
        self._in_flight.clear()

    def send(self, address: str, payload: bytes, ttl: int) -> Echo:
        """Sends one echo request to ``address`` with hop limit ``ttl`` (0: the socket's, the system's default);
        raises OSError when the kernel refuses it (no route)."""
        sequence = self._next_sequence()
        header = _HEADER.pack(ECHO_REQUEST[self.family], 0, 0, self.ident, sequence)
        packet = header[:2] + checksum(header + payload).to_bytes(2, "big") + header[4:] + payload
        if self.family == socket.AF_INET6:
            ancillary = [(socket.IPPROTO_IPV6, IPV6_HOPLIMIT, _INT.pack(ttl))] if ttl else []
            destination: tuple = (address, 0, 0, 0)
        else:
            ancillary = [(socket.IPPROTO_IP, socket.IP_TTL, _INT.pack(ttl))] if ttl else []
            destination = (address, 0)
        echo = Echo(address, payload, time.time_ns(), self._loop.create_future())
        self.sock.sendmsg([packet], ancillary, 0, destination)
        self._in_flight[sequence] = echo
        return echo

    def forget(self, echoes: list[Echo]) -> None:
        """The probe is done with these requests (answered or not): late replies are dropped."""
        for sequence, echo in list(self._in_flight.items()):
            if echo in echoes:
                del self._in_flight[sequence]

    def _next_sequence(self) -> int:
        for _ in range(65536):
            self._sequence = (self._sequence + 1) & 0xFFFF
            if self._sequence not in self._in_flight:
                return self._sequence
        raise OSError("65,536 echo requests in flight on one socket")

    def _readable(self) -> None:
        while True:
            try:
                data, ancillary, _, sender = self.sock.recvmsg(65535, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued for a ping socket (no IP_RECVERR): the request times out
                continue
            self._received(data, ancillary, sender[0])

    def _received(self, data: bytes, ancillary: list[tuple[int, int, bytes]], sender: str) -> None:
        received_ns = None
        hop_limit = None
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                received_ns = seconds * 1_000_000_000 + nanoseconds
            elif (level, kind) in ((socket.IPPROTO_IP, socket.IP_TTL), (socket.IPPROTO_IPV6, IPV6_HOPLIMIT)):
                hop_limit = _INT.unpack_from(value)[0] if len(value) >= 4 else value[0]
        if self.raw and self.family == socket.AF_INET:  # the IP header comes first
            if len(data) < 20:
                return
            header_length = (data[0] & 0x0F) * 4
            hop_limit = data[8]
            data = data[header_length:]
        if len(data) < _HEADER.size:
            return
        kind, _, _, ident, sequence = _HEADER.unpack_from(data)
        if kind != ECHO_REPLY[self.family] or (self.raw and ident != self.ident):
            return
        echo = self._in_flight.get(sequence)
        if echo is None or echo.reply.done() or data[_HEADER.size:] != echo.payload:
            return
        if not _same_address(sender, echo.address):
            return
        round_trip = max(0, (received_ns or time.time_ns()) - echo.sent_ns) / 1e9
        echo.reply.set_result((round_trip, hop_limit))


def _same_address(sender: str, address: str) -> bool:
    if sender == address:
        return True
    try:
        return ipaddress.ip_address(sender.split("%")[0]) == ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False


class EchoSockets:
    """The agent's echo sockets, opened on first use (on the event loop), closed at stop."""

    def __init__(self) -> None:
        self._sockets: dict[tuple[int, str | None, bool], EchoSocket] = {}

    def get(self, family: int, source: str | None, dont_fragment: bool) -> EchoSocket:
        """The shared socket for these settings; raises NoSocket (or OSError for a bad source address)."""
        key = (family, source, dont_fragment)
        sock = self._sockets.get(key)
        if sock is None:
            sock = self._sockets[key] = EchoSocket(family, source, dont_fragment)
        return sock

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
