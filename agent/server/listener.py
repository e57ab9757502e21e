"""Where the agent listens, and the guard in front of every connection to it.

Without a guard, 500 clients sending half a request each held 500 descriptors for as long as they liked,
until real scrapes and probes failed for lack of them. Every connection (``agent.server.protocol.Connection``)
obeys the guard:

- at most ``max_connections`` are open. A new one beyond that evicts the longest-idle keep-alive connection,
  else the one that has waited longest for its request head: a scraper sends its head at once and is served,
  while clients that hold connections without asking anything only evict each other. A new connection is
  refused only when every open one is busy with a request;
- a connection must complete each request head within ``header_timeout`` of its opening or of the first byte
  of that request, else it is closed: a slow or silent client cannot hold a slot; a keep-alive connection may
  stay idle between requests for ``idle_timeout``;
- ``client_allowed_sans`` (exporter-toolkit) is checked right after the TLS handshake.

The limit leaves room for the agent's own descriptors (probes, log files): ``descriptor_budget`` caps it below
the process's file limit. The guard admits a connection as it is accepted (``Listener``), not when asyncio gets
round to it: asyncio's own accept loop takes up to its backlog of connections at once before any is admitted,
so 500 half-open clients pushed a server at its limit past the file limit, and accepting stopped for a second
(EMFILE) while real scrapes waited. Here at most ``ACCEPT_BATCH`` are accepted per turn of the event loop, each
admitted (evicting another if need be) before the next, so the server never holds more than
``max_connections + ACCEPT_BATCH`` descriptors, the extra ones only until the evicted close on the next turn.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import re
import resource
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.server.protocol import Connection, Handler

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
DEFAULT_MAX_CONNECTIONS = 512  # Prometheus's --web.max-connections default
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 120.0  # longer than any sane scrape interval, so Prometheus keeps its connection
RESERVED_DESCRIPTORS = 64  # beyond probes in flight: log files, positions file, stdio, the event loop's own
ACCEPT_BATCH = 16  # connections accepted per turn of the event loop; well inside RESERVED_DESCRIPTORS
ACCEPT_RETRY = 0.1  # seconds before accepting again when the process is out of descriptors anyway
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class ListenAddress:
    """``host:port`` as Go's net.Listen reads it: an empty host means every interface, IPv6 in brackets."""

    host: str | None
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} has no port: use host:port, :port or [::1]:port")
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{text!r}: port {port!r} is not a number from 0 to 65535")
        if host.startswith("[") and host.endswith("]"):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise ValueError(f"{text!r}: {host} is not an IPv6 address") from None
            return cls(host[1:-1], int(port))
        if ":" in host:
            raise ValueError(f"{text!r}: an IPv6 address goes in brackets, e.g. [::1]:9910")
        if host and not _HOSTNAME_RE.match(host):
            raise ValueError(f"{text!r}: {host!r} is not a host name or an IPv4 address")
        return cls(host or None, int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host or ""
        return f"{host}:{self.port}"


def descriptor_budget(wanted: int, reserved: int) -> int:
    """Connections the server may hold: ``wanted``, but never so many that the agent runs out of descriptors
    for ``reserved`` of its own (probes in flight, log files, ...)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft - reserved - RESERVED_DESCRIPTORS))


class ConnectionGuard:
    """The open connections of every listener of one server, and what happened to the ones it closed."""

    def __init__(self, max_connections: int, header_timeout: float = DEFAULT_HEADER_TIMEOUT,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, on_close: Callable[[str], None] = lambda reason: None,
                 allowed_sans: Callable[[], list[str] | None] = lambda: None):
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.on_close = on_close  # called with the reason of every connection the guard closes
        self.allowed_sans = allowed_sans
        self.open: dict[Connection, None] = {}  # insertion order: oldest first

    def admit(self, connection: Connection) -> bool:
        if len(self.open) >= self.max_connections:
            # never one being served, nor one whose last response is still being written
            waiting = [c for c in self.open if c.state != "busy" and c.flushed]
            if not waiting:
                self.on_close("limit")
                return False
            # idle keep-alive connections first, then those still sending a head; oldest first in each
            evicted = min(waiting, key=lambda c: (c.state != "idle", c.since))
            evicted.close("evicted_idle" if evicted.state == "idle" else "evicted_waiting")
        self.open[connection] = None
        return True

    def release(self, connection: Connection) -> None:
        self.open.pop(connection, None)


class Listener:
    """One listening socket: accepts connections and has the guard admit each one before accepting the next."""

    def __init__(self, sock: socket.socket, handler: Handler, guard: ConnectionGuard,
                 ssl_context: ssl.SSLContext | None):
        self._sock = sock
        self._handler = handler
        self._guard = guard
        self._ssl_context = ssl_context
        self._loop = asyncio.get_running_loop()
        self._retry: asyncio.TimerHandle | None = None
        self._loop.add_reader(sock.fileno(), self._accept)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        """Stop accepting; connections already accepted are the guard's to close."""
        if self._retry is not None:
            self._retry.cancel()
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # nothing more to accept now, or a client that hung up while queued
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:  # one client's trouble (EPROTO, EPERM): go on with the next
                    log.warning("could not accept a connection", extra={"err": str(exc)})
                    continue
                # descriptors used up elsewhere (more log files or probes than reserved): the connections
                # wait in the listen queue, and accepting resumes shortly, as Go's server does
                log.error("out of file descriptors: accepting connections paused", extra={"err": str(exc)})
                self._loop.remove_reader(self._sock.fileno())
                self._retry = self._loop.call_later(ACCEPT_RETRY, self._resume)
                return
            sock.setblocking(False)
            connection = Connection(self._handler, self._guard)
            if self._guard.admit(connection):
                connection.start(sock, self._ssl_context)
            else:
                sock.close()

    def _resume(self) -> None:
        self._retry = None
        if self._sock.fileno() >= 0:
            self._loop.add_reader(self._sock.fileno(), self._accept)


def _numeric_addresses(address: ListenAddress) -> list[tuple] | None:
    """What getaddrinfo says of every interface (no host) or an IP address, answered without a resolver, so
    without a worker thread, and with the host as bytes (a str goes through the IDNA codec and its Unicode
    tables); None for a host name."""
    host = address.host
    if host is not None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None
    return socket.getaddrinfo(host.encode() if host else None, address.port, type=socket.SOCK_STREAM,
                              flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST)


async def _bind(address: ListenAddress) -> list[socket.socket]:
    """Listening sockets for ``address``: one per address the host resolves to (every interface, IPv4 and IPv6,
    for an empty host), with the backlog the system allows, as Go's net.Listen does."""
    infos = _numeric_addresses(address)
    if infos is None:  # a host name: the resolver may block, so it runs in a worker thread
        infos = await asyncio.get_running_loop().getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # the IPv4 socket takes IPv4, as Go's dual listeners do
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from None
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def listen(handler: Handler, addresses: list[ListenAddress], guard: ConnectionGuard,
                 ssl_context: ssl.SSLContext | None = None) -> list[Listener]:
    """A ``Listener`` per address (per resolved address), every connection behind ``guard``; all or none."""
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            sockets += await _bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return [Listener(sock, handler, guard, ssl_context) for sock in sockets]
