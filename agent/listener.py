"""Where the agent listens, and the guard in front of every connection to it.

aiohttp has no limit on connections and no deadline for a request's head: 500 clients sending half a request
each held 500 descriptors for as long as they liked, until real scrapes and probes failed for lack of them.
``GuardedProtocol`` wraps aiohttp's protocol for each connection:

- at most ``max_connections`` are open. A new one beyond that evicts the longest-idle keep-alive connection,
  else the one that has waited longest for its request head: a scraper sends its head at once and is served,
  while clients that hold connections without asking anything only evict each other. A new connection is
  refused only when every open one is busy with a request;
- a connection must complete each request head within ``header_timeout`` of its opening or of the first byte
  of that request, else it is closed: a slow or silent client cannot hold a slot; a keep-alive connection may
  stay idle between requests for ``idle_timeout``;
- ``client_allowed_sans`` (exporter-toolkit) is checked right after the TLS handshake.

The limit leaves room for the agent's own descriptors (probes, log files): ``descriptor_budget`` caps it below
the process's file limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
DEFAULT_MAX_CONNECTIONS = 512  # Prometheus's --web.max-connections default
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 120.0  # longer than any sane scrape interval, so Prometheus keeps its connection
RESERVED_DESCRIPTORS = 64  # beyond probes in flight: log files, positions file, stdio, the event loop's own


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
        self.open: dict[GuardedProtocol, None] = {}  # insertion order: oldest first

    def admit(self, connection: GuardedProtocol) -> bool:
        if len(self.open) >= self.max_connections:
            waiting = [c for c in self.open if c.state != "busy"]
            if not waiting:
                self.on_close("limit")
                return False
            # idle keep-alive connections first, then those still sending a head; oldest first in each
            evicted = min(waiting, key=lambda c: (c.state != "idle", c.since))
            evicted.close("evicted_idle" if evicted.state == "idle" else "evicted_waiting")
        self.open[connection] = None
        return True

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], GuardedProtocol]:
        return lambda: GuardedProtocol(inner, self)


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's limit and head deadline."""

    def __init__(self, inner_factory: Callable[[], asyncio.Protocol], guard: ConnectionGuard):
        self._inner_factory = inner_factory
        self._guard = guard
        self._inner: Any = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.state = "head"  # head: waiting for a request head; busy: serving a request; idle: kept alive
        self.since = time.monotonic()  # when the state began

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a stream server: TCP or TLS
        self._transport = transport
        if not self._guard.admit(self):
            transport.abort()
            return
        allowed = self._guard.allowed_sans()
        if allowed is not None and not _has_allowed_san(transport.get_extra_info("peercert"), allowed):
            self.close("tls_san")
            return
        self._arm(self._guard.header_timeout, "header_timeout")
        self._inner = self._inner_factory()
        self._inner.connection_made(transport)

    # aiohttp's handler is told when a request starts and ends by the web middleware (see web.py), through
    # the connection found on the request's transport.
    def request_started(self) -> None:
        self.state, self.since = "busy", time.monotonic()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def request_done(self) -> None:
        self.state, self.since = "idle", time.monotonic()
        self._arm(self._guard.idle_timeout, "idle_timeout")

    def _arm(self, seconds: float, reason: str) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self.close, reason)

    def close(self, reason: str) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._guard.open.pop(self, None)
        self._guard.on_close(reason)
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.state == "idle":  # the next request begins: its head has header_timeout to arrive
            self.state, self.since = "head", time.monotonic()
            self._arm(self._guard.header_timeout, "header_timeout")
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._guard.open.pop(self, None)
        if self._inner is not None:
            self._inner.connection_lost(exc)


def connection_of(request: web.Request) -> GuardedProtocol | None:
    """The guarded connection a request arrived on."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, GuardedProtocol) else None


def _has_allowed_san(peercert: dict[str, Any] | None, allowed: list[str]) -> bool:
    """exporter-toolkit's check: some DNS, IP, e-mail or URI SAN of the client certificate is in the list."""
    if not peercert:
        return False
    values = {value for kind, value in peercert.get("subjectAltName", ())
              if kind in ("DNS", "IP Address", "email", "URI")}
    return bool(values & set(allowed))


async def listen(runner: web.AppRunner, addresses: list[ListenAddress], guard: ConnectionGuard,
                 ssl_context: Any = None) -> list[asyncio.Server]:
    """One asyncio server per address, every connection behind ``guard``."""
    loop = asyncio.get_running_loop()
    factory = guard.protocol_factory(runner.server)  # type: ignore[arg-type]
    servers = []
    try:
        for address in addresses:
            servers.append(await loop.create_server(factory, address.host, address.port, ssl=ssl_context,
                                                    reuse_address=True, backlog=128))
    except OSError:
        for server in servers:
            server.close()
        raise
    return servers
