"""The agent's HTTP server: /metrics and the lifecycle endpoints Prometheus users know.

/metrics copies the store on the event loop (dict copies, no rendering) and renders the text in a worker
thread, so a large exposition never stalls probes or log reading. There is deliberately no /probe?target=
endpoint: targets come only from the config, so the agent cannot be used as an open proxy.
"""

from __future__ import annotations

import asyncio
import gzip
import html
import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from agent import __version__
from agent.store import Snapshot, Store, render_families
from agent.webconfig import WebConfig

log = logging.getLogger(__name__)

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


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


class AgentView(Protocol):
    """What the HTTP server needs of the running agent (the runtime's Agent), without importing it."""

    store: Store
    ready: bool
    started_at: float

    @property
    def config(self) -> Any: ...

    async def reload(self) -> str | None: ...


# Below this size gzip costs more CPU than it saves on the wire.
_GZIP_MIN_BYTES = 1024

_PROCESS = ProcessCollector(registry=None)


class _Exposition(Collector):
    def __init__(self, snap: Snapshot):
        self._snap = snap

    def collect(self) -> Iterator[Any]:
        yield from render_families(self._snap)
        yield from _PROCESS.collect()


def render(snap: Snapshot, accept: str, accept_encoding: str) -> tuple[bytes, dict[str, str]]:
    """Exposition bytes and headers for one scrape (content negotiation as prometheus_client does it)."""
    encoder, content_type = choose_encoder(accept)
    body = encoder(_Exposition(snap))
    headers = {"Content-Type": content_type}
    if "gzip" in accept_encoding and len(body) >= _GZIP_MIN_BYTES:
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return body, headers


def make_app(agent: AgentView, web_config: WebConfig | None = None) -> web.Application:
    middlewares = [web_config.middleware()] if web_config else []
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/", _index)
    app.router.add_get("/metrics", _handler(agent, _metrics))
    app.router.add_get("/-/healthy", _healthy)
    app.router.add_get("/-/ready", _handler(agent, _ready))
    app.router.add_post("/-/reload", _handler(agent, _reload))
    app.router.add_put("/-/reload", _handler(agent, _reload))
    app.router.add_get("/api/v1/status", _handler(agent, _status))
    return app


def _handler(agent: AgentView, func: Callable[[AgentView, web.Request], Awaitable[web.StreamResponse]]
             ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await func(agent, request)

    return handle


async def _metrics(agent: AgentView, request: web.Request) -> web.Response:
    snap = agent.store.snapshot()
    loop = asyncio.get_running_loop()
    body, headers = await loop.run_in_executor(
        None, render, snap, request.headers.get("Accept", ""), request.headers.get("Accept-Encoding", ""))
    return web.Response(body=body, headers=headers)


async def _healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def _ready(agent: AgentView, request: web.Request) -> web.Response:
    if agent.ready:
        return web.Response(text="Ready.\n")
    return web.Response(status=503, text="Not ready: sources are starting.\n")


async def _reload(agent: AgentView, request: web.Request) -> web.Response:
    error = await agent.reload()
    if error:
        return web.Response(status=500, text=f"Reload failed; the previous config keeps running.\n{error}\n")
    return web.Response(text="Reloaded.\n")


async def _status(agent: AgentView, request: web.Request) -> web.Response:
    counts: dict[str, int] = {}
    for kind, _ in agent.config.sources:
        counts[kind] = counts.get(kind, 0) + 1
    status = {
        "version": __version__,
        "uptime_seconds": round(time.time() - agent.started_at, 3),
        "config_file": agent.config.file,
        "sources": [{"kind": kind, "count": count} for kind, count in sorted(counts.items())],
        "ready": agent.ready,
    }
    return web.Response(text=json.dumps(status), content_type="application/json")


async def _index(request: web.Request) -> web.Response:
    links = "".join(f'<li><a href="{html.escape(p)}">{html.escape(p)}</a></li>'
                    for p in ("/metrics", "/-/healthy", "/-/ready", "/api/v1/status"))
    page = (f"<!doctype html><html><head><title>kpi-agent</title></head><body><h1>kpi-agent {__version__}</h1>"
            f"<ul>{links}</ul><p>POST /-/reload reloads the config.</p></body></html>")
    return web.Response(text=page, content_type="text/html")
