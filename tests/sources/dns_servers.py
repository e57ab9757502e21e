"""DNS servers for the tests: Debian's dnsmasq serving a test zone, unbound answering over TLS, and a server that
misbehaves on purpose (garbage, truncation, a wrong id, silence).

dnsmasq answers authoritatively for ``example.test`` (SOA serial 2024010101, NS, MX, TXT, A and AAAA records)
on 127.0.0.1 and ::1. unbound answers the same names over DNS over TLS with a certificate the test makes.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port, stop_processes, wait_until
from tests.tools import require_tool

ZONE = "example.test"
SERIAL = 2024010101
RECORDS = {  # what a probe of each name and type must find in the answer section
    ("www.example.test", "A"): ["192.0.2.10"],
    ("www.example.test", "AAAA"): ["2001:db8::10"],
    ("example.test", "MX"): ["10 mail.example.test."],
}


def _free_port_both() -> int:
    """A port free for UDP and TCP on 127.0.0.1 (a DNS server binds both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free for both UDP and TCP")


def _answers(port: int, family: int = socket.AF_INET) -> bool:
    """Whether a DNS server answers a query on the port (a bare SOA query, by hand: no dnspython in the test's
    own readiness check)."""
    query = struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 0) + b"".join(
        bytes([len(label)]) + label.encode() for label in ZONE.split(".")) + b"\0" + struct.pack("!HH", 6, 1)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.sendto(query, ("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
        return sock.recv(4096)[:2] == b"\x12\x34"


@pytest.fixture
def dnsmasq() -> Iterator[int]:
    """Debian's dnsmasq serving the test zone on 127.0.0.1 and ::1; yields its port (UDP and TCP)."""
    binary = require_tool("dnsmasq")
    port = _free_port_both()
    process = subprocess.Popen(
        [binary, "--no-daemon", "--conf-file=/dev/null", f"--port={port}", "--listen-address=127.0.0.1,::1",
         "--bind-interfaces", "--no-resolv", "--no-hosts", "--pid-file=", "--user=root",
         f"--auth-server=ns.{ZONE},127.0.0.1", f"--auth-zone={ZONE}", f"--auth-soa={SERIAL},hostmaster.{ZONE}",
         f"--host-record=www.{ZONE},192.0.2.10,2001:db8::10", f"--host-record=ns.{ZONE},127.0.0.1",
         f"--host-record=mail.{ZONE},192.0.2.25", f"--mx-host={ZONE},mail.{ZONE},10",
         f"--txt-record={ZONE},v=spf1 -all"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _answers(port), what="dnsmasq answering")
    except AssertionError:
        stop_processes([process])
        raise AssertionError(f"dnsmasq did not start: {process.stderr.read().decode()[-1000:]}") from None
    yield port
    stop_processes([process])


def make_certificate(directory: Path, name: str = "dns.example.test") -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` (and 127.0.0.1): (cert, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@dataclass
class TlsServer:
    port: int
    cert: Path
    name: str


@pytest.fixture
def unbound_tls(tmp_path) -> Iterator[TlsServer]:  # noqa: ANN001 - pytest's tmp_path
    """Debian's unbound answering the test zone over DNS over TLS (and plain TCP/UDP on another port)."""
    binary = require_tool("unbound")
    cert, key = make_certificate(tmp_path)
    port = _free_port_both()
    config = tmp_path / "unbound.conf"
    config.write_text(f"""server:
    interface: 127.0.0.1@{port}
    tls-port: {port}
    tls-service-key: "{key}"
    tls-service-pem: "{cert}"
    do-daemonize: no
    use-syslog: no
    logfile: ""
    chroot: ""
    username: ""
    directory: "{tmp_path}"
    pidfile: ""
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    local-zone: "{ZONE}." static
    local-data: "{ZONE}. 600 IN SOA ns.{ZONE}. hostmaster.{ZONE}. {SERIAL} 1200 180 1209600 600"
    local-data: "www.{ZONE}. 600 IN A 192.0.2.10"
    local-data: "www.{ZONE}. 600 IN AAAA 2001:db8::10"
    local-data: "{ZONE}. 600 IN MX 10 mail.{ZONE}."
remote-control:
    control-enable: no
""")
    process = subprocess.Popen([binary, "-d", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True

    try:
        wait_until(up, what="unbound listening")
    except AssertionError:
        stop_processes([process])
        raise AssertionError(f"unbound did not start: {process.stderr.read().decode()[-1000:]}") from None
    yield TlsServer(port, cert, "dns.example.test")
    stop_processes([process])


class BadDnsServer:
    """A DNS server on 127.0.0.1 (UDP and TCP, one port) that answers every query the way ``mode`` says:

    - ``garbage``: bytes that are no DNS message
    - ``truncated``: a valid header for the query with the TC bit set and no records
    - ``wrong_id``: a well-formed answer with another id
    - ``silent``: never answers (TCP: accepts the connection and reads, never writes)
    - ``short``: TCP only: announces a 512-byte message and closes after 3 bytes
    - ``flaky``: silent to the first query, a well-formed answer (no records) to every other
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.port = _free_port_both()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(16)
        self.queries = 0
        self._held: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for thread in self._threads:
            thread.start()

    def answer(self, query: bytes) -> bytes | None:
        self.queries += 1
        if self.mode == "silent" or (self.mode == "flaky" and self.queries == 1):
            return None
        if self.mode == "garbage":
            return b"\x13\x37 this is not DNS \xff\xfe"
        question_end = 12
        while query[question_end]:
            question_end += query[question_end] + 1
        question = query[12:question_end + 5]
        query_id = struct.unpack("!H", query[:2])[0]
        if self.mode == "wrong_id":
            query_id ^= 0xFFFF
        flags = 0x8000 | 0x0400 | (0x0200 if self.mode == "truncated" else 0)  # QR, AA, TC
        return struct.pack("!HHHHHH", query_id, flags, 1, 0, 0, 0) + question

    def _serve_udp(self) -> None:
        while True:
            try:
                query, client = self.udp.recvfrom(4096)
            except OSError:
                return
            answer = self.answer(query)
            if answer is not None:
                self.udp.sendto(answer, client)

    def _serve_tcp(self) -> None:
        while True:
            try:
                connection, _ = self.tcp.accept()
            except OSError:
                return
            self._held.append(connection)
            try:
                length = struct.unpack("!H", connection.recv(2))[0]
                query = connection.recv(length)
                if self.mode == "short":
                    connection.sendall(struct.pack("!H", 512) + b"abc")
                    connection.close()
                    continue
                answer = self.answer(query)
                if answer is not None:
                    connection.sendall(struct.pack("!H", len(answer)) + answer)
            except OSError:
                pass

    def close(self) -> None:
        for sock in (self.udp, self.tcp, *self._held):
            sock.close()


@pytest.fixture
def bad_dns() -> Iterator:
    """``bad_dns(mode) -> BadDnsServer``, closed after the test."""
    servers: list[BadDnsServer] = []

    def start(mode: str) -> BadDnsServer:
        servers.append(BadDnsServer(mode))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ticking_answer(query: bytes, ttl: int, address: bytes = bytes([192, 0, 2, 10])) -> bytes:
    """dnsmasq's answer to ``www.example.test A`` (the A record, and the zone's NS record in the authority
    section), with every TTL set to ``ttl`` (what a caching resolver sends as its TTLs count down) and the A
    record's ``address``."""
    question_end = 12
    while query[question_end]:
        question_end += query[question_end] + 1
    question = query[12:question_end + 5]
    flags = 0x8400 | (struct.unpack("!H", query[2:4])[0] & 0x0100)  # QR, AA, the query's RD
    zone = b"\x07example\x04test\x00"
    ns = b"\x02ns" + zone
    return (query[:2] + struct.pack("!HHHHH", flags, 1, 1, 1, 0) + question
            + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + address
            + zone + struct.pack("!HHIH", 2, 1, ttl, len(ns)) + ns)


def serve_ticking(port: int, changing: str) -> None:
    """Answers every UDP query on 127.0.0.1:port with ``ticking_answer``, ``changing`` the TTLs (one lower each
    time) or the address (the next of 10.0.0.0/8 each time): no two answers have the same bytes. Run in a
    process of its own (the benchmark does not count its CPU): ``python -m tests.sources.dns_servers PORT ttl``.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", port))
    count = 0
    print("ready", flush=True)
    while True:
        query, client = sock.recvfrom(4096)
        count = (count + 1) % (1 << 24)
        if changing == "ttl":
            answer = ticking_answer(query, 0x7FFFFFFF - count)
        else:
            answer = ticking_answer(query, 600, (10 << 24 | count).to_bytes(4, "big"))
        sock.sendto(answer, client)


def _ticking(changing: str) -> Iterator[int]:
    import sys

    port = _free_port_both()
    process = subprocess.Popen([sys.executable, "-m", "tests.sources.dns_servers", str(port), changing],
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    yield port
    stop_processes([process])


@pytest.fixture
def ticking_dns() -> Iterator[int]:
    """A DNS server (a process of its own) whose answers differ in their TTLs, counting down as a caching
    resolver's do; yields its port."""
    yield from _ticking("ttl")


@pytest.fixture
def changing_dns() -> Iterator[int]:
    """A DNS server (a process of its own) whose every answer has another address: no answer is ever seen twice;
    yields its port."""
    yield from _ticking("address")


if __name__ == "__main__":
    import sys

    serve_ticking(int(sys.argv[1]), sys.argv[2])
