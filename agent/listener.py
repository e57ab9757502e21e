"""Where the agent listens, and the guard in front of every connection to it.

Without a guard, 500 clients sending half a request each held 500 descriptors for as long as they liked,
until real scrapes and probes failed for lack of them. Every connection (``agent.httpserver.Connection``)
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
the process's file limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.httpserver import Connection, Handler

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


async def listen(handler: Handler, addresses: list[ListenAddress], guard: ConnectionGuard,
                 ssl_context: Any = None) -> list[asyncio.Server]:
    """One asyncio server per address, every connection an ``httpserver.Connection`` behind ``guard``."""
    loop = asyncio.get_running_loop()
    servers = []
    try:
        for address in addresses:
            servers.append(await loop.create_server(lambda: Connection(handler, guard), address.host,
                                                    address.port, ssl=ssl_context, reuse_address=True, backlog=128))
    except OSError:
        for server in servers:
            server.close()
        raise
    return servers
