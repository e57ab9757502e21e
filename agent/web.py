"""The agent's HTTP server: /metrics and the lifecycle endpoints Prometheus users know, behind the protections
a server on a shared network needs.

/metrics copies the store on the event loop (dict copies, no rendering) and renders the text in a worker
thread, so a large exposition never stalls probes or log reading. There is deliberately no /probe?target=
endpoint: targets come only from the config, so the agent cannot be used as an open proxy.

Every request passes one middleware, in exporter-toolkit's order: response headers from the web config, the
rate limit (429), basic auth (401; bcrypt off the event loop, see webconfig.Authenticator), and for requests
that change state (POST/PUT /-/reload) a same-origin check (403), so a web page an operator visits cannot make
their browser reload the agent. Connections are guarded by agent.listener (limit, head deadline). Each
request is counted and timed per handler in the agent's own metrics.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from agent import __version__, exposition, statuspage
from agent.listener import ConnectionGuard, ListenAddress, connection_of, listen
from agent.selfmetrics import (
    CLOSE_REASONS,
    HTTP_CONNECTIONS,
    HTTP_CONNECTIONS_CLOSED,
    HTTP_CONNECTIONS_LIMIT,
    HTTP_DURATION,
    HTTP_REQUESTS,
    HTTP_RESPONSE_SIZE,
    WEB_CONFIG_OK,
)
from agent.store import Group, Snapshot, Store
from agent.webconfig import Authenticator, LiveWebConfig, TokenBucket

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, Handler]  # method, path, handler


class AgentView(Protocol):
    """What the HTTP server needs of the running agent (the runtime's Agent), without importing it."""

    store: Store
    ready: bool
    started_at: float
    last_reload_error: str | None

    @property
    def config(self) -> Any: ...

    async def reload(self) -> str | None: ...

    def source_status(self) -> list[dict[str, Any]]: ...


# Below this size gzip costs more CPU than it saves on the wire.
_GZIP_MIN_BYTES = 1024

def render(snap: Snapshot, accept: str, accept_encoding: str) -> tuple[bytes, dict[str, str]]:
    """Exposition bytes and headers for one scrape: OpenMetrics when asked for, gzip when accepted."""
    openmetrics = exposition.wants_openmetrics(accept)
    body = exposition.render(snap, openmetrics)
    headers = {"Content-Type": exposition.OPENMETRICS if openmetrics else exposition.TEXT}
    if "gzip" in accept_encoding and len(body) >= _GZIP_MIN_BYTES:
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return body, headers


def agent_routes(agent: AgentView) -> list[Route]:
    """The agent's own endpoints."""
    return [
        ("GET", "/", _handler(agent, _index)),
        ("GET", "/metrics", _handler(agent, _metrics)),
        ("GET", "/-/healthy", _healthy),
        ("GET", "/-/ready", _handler(agent, _ready)),
        ("POST", "/-/reload", _handler(agent, _reload)),
        ("PUT", "/-/reload", _handler(agent, _reload)),
        ("GET", "/api/v1/status", _handler(agent, _status)),
        ("GET", "/api/v1/sources", _handler(agent, _sources)),
    ]


class Server:
    """An HTTP server of kpi-agent (the agent's, or the scoreboard's): ``routes`` behind the protections
    described above, on guarded listeners, counted in ``group``."""

    def __init__(self, routes: list[Route], group: Group, web_config: LiveWebConfig | None = None,
                 max_connections: int = 512, header_timeout: float = 10.0):
        self.web_config = web_config
        self.handlers = tuple(dict.fromkeys(path for _, path, _ in routes))
        self._requests = group.counter(HTTP_REQUESTS)
        self._duration = group.histogram(HTTP_DURATION)
        self._size = group.histogram(HTTP_RESPONSE_SIZE)
        self._connections = group.gauge(HTTP_CONNECTIONS)
        self._closed = group.counter(HTTP_CONNECTIONS_CLOSED)
        self._config_ok = group.gauge(WEB_CONFIG_OK)
        for reason in CLOSE_REASONS:
            self._closed.ensure((reason,))
        for path in self.handlers:
            self._duration.ensure((path,))
        group.gauge(HTTP_CONNECTIONS_LIMIT).set((), max_connections)
        if web_config is not None:
            self._config_ok.set((), 1)
            web_config.on_reload = lambda ok, error: self._config_ok.set((), 1 if ok else 0)
        self.guard = ConnectionGuard(
            max_connections, header_timeout, on_close=lambda reason: self._closed.inc((reason,)),
            allowed_sans=lambda: (list(tls.client_allowed_sans) if web_config and (tls := web_config.current().tls)
                                  and tls.client_allowed_sans is not None else None))
        self._authenticator = Authenticator()
        self._bucket = TokenBucket()
        self.app = web.Application(middlewares=[self._middleware])
        for method, path, handler in routes:
            self.app.router.add_route(method, path, handler)
        self._runner: web.AppRunner | None = None
        self._servers: list[asyncio.Server] = []

    async def start(self, addresses: list[ListenAddress]) -> None:
        # aiohttp's own keep-alive timer outlives the guard's idle timeout: the guard decides
        self._runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=self.guard.idle_timeout + 60)
        await self._runner.setup()
        context = self.web_config.listening_context() if self.web_config else None
        self._servers = await listen(self._runner, addresses, self.guard, context)

    @property
    def bound_port(self) -> int | None:
        if not self._servers or not self._servers[0].sockets:
            return None
        return self._servers[0].sockets[0].getsockname()[1]

    def update_gauges(self) -> None:
        self._connections.set((), len(self.guard.open))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self._runner is not None:  # closes every open connection
            await self._runner.cleanup()
        self._authenticator.close()

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        started = time.perf_counter()
        connection = connection_of(request)
        if connection is not None:
            connection.request_started()
        config = self.web_config.current() if self.web_config else None
        response: web.StreamResponse
        if config is not None and not self._bucket.allow(config.rate_limit):
            response = web.Response(status=429, text="Too Many Requests\n")
        elif config is not None and config.basic_auth_users and not await self._authenticator.authorized(
                request.headers.get("Authorization", ""), config.basic_auth_users):
            response = web.Response(status=401, text="Unauthorized\n",
                                    headers={"WWW-Authenticate": 'Basic realm="kpi-agent"'})
        elif request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
            response = web.Response(status=403, text="Cross-origin requests may not change the agent's state\n")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # 404, 405: answered here so they are counted like the rest
                response = web.Response(status=exc.status, text=exc.text, headers=exc.headers)
        if config is not None:
            response.headers.update(config.headers)
        await response.prepare(request)
        await response.write_eof()
        route = request.match_info.route.resource
        name = route.canonical if route is not None and route.canonical in self.handlers else "other"
        self._requests.inc((name, str(response.status)))
        self._duration.observe((name,), time.perf_counter() - started)
        self._size.observe((name,), float(response.body_length))
        if connection is not None:
            connection.request_done()
        return response


def _same_origin(request: web.Request) -> bool:
    """False for a request a browser sent from another site (CSRF): by Sec-Fetch-Site, else by Origin. Tools
    (curl, Prometheus, kubectl) send neither and pass."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin != "null" and urllib.parse.urlsplit(origin).netloc.lower() == request.host.lower()


def _handler(agent: AgentView, func: Callable[[AgentView, web.Request], Awaitable[web.StreamResponse]]) -> Handler:
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


def _agent_facts(agent: AgentView) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for kind, _ in agent.config.sources:
        counts[kind] = counts.get(kind, 0) + 1
    return {
        "version": __version__,
        "uptime_seconds": round(time.time() - agent.started_at, 3),
        "config_file": agent.config.file,
        "sources": [{"kind": kind, "count": count} for kind, count in sorted(counts.items())],
        "ready": agent.ready,
        "reload_error": agent.last_reload_error,
    }


async def _status(agent: AgentView, request: web.Request) -> web.Response:
    return web.json_response(_agent_facts(agent))


async def _sources(agent: AgentView, request: web.Request) -> web.Response:
    return web.json_response(agent.source_status())


async def _index(agent: AgentView, request: web.Request) -> web.Response:
    page = statuspage.render(_agent_facts(agent), agent.source_status())
    return web.Response(text=page, content_type="text/html")
