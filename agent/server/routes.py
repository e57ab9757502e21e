"""The agent's HTTP server: /metrics and the lifecycle endpoints Prometheus users know, behind the protections
a server on a shared network needs.

/metrics writes the page on the event loop in slices of about 5 ms (agent.series.exposition), so a large page never
stalls probes or log reading for longer than a slice. There is deliberately no /probe?target=
endpoint: targets come only from the config, so the agent cannot be used as an open proxy.

Every request passes the same steps, in exporter-toolkit's order: the rate limit (429), basic auth (401;
bcrypt off the event loop, see webconfig.Authenticator), for requests that change state (POST/PUT /-/reload)
a same-origin check (403), so a web page an operator visits cannot make their browser reload the agent, then
the route, and the web config's response headers on whatever is answered. The protocol is agent.server.protocol's
and connections are guarded by agent.server.listener (limit, head deadline). Each request is counted and timed per
handler in the agent's own metrics.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from agent import __version__
from agent.series import exposition
from agent.series.pagesize import PageCost
from agent.series.selfmetrics import (
    CLOSE_REASONS,
    HTTP_CONNECTIONS,
    HTTP_CONNECTIONS_CLOSED,
    HTTP_CONNECTIONS_LIMIT,
    HTTP_DURATION,
    HTTP_REQUESTS,
    HTTP_RESPONSE_SIZE,
    WEB_CONFIG_OK,
)
from agent.series.store import Group, Snapshot, Store
from agent.server.listener import ConnectionGuard, ListenAddress, Listener, listen
from agent.server.protocol import Handler, Request, Response

if TYPE_CHECKING:  # a server without --web.config.file never loads the web config, bcrypt and TLS control
    from agent.server.access import Authenticator, TokenBucket
    from agent.server.webconfig import LiveWebConfig, WebConfig

Route = tuple[str, str, Handler]  # method, path, handler


class AgentView(Protocol):
    """What the HTTP server needs of the running agent (the runtime's Agent), without importing it."""

    store: Store
    ready: bool
    started_at: float
    last_reload_error: str | None
    page_cost: PageCost
    page_warning: str | None

    @property
    def config(self) -> Any: ...

    async def reload(self) -> str | None: ...

    def source_status(self) -> list[dict[str, Any]]: ...

    def remote_write_status(self) -> list[dict[str, Any]]: ...


# Every HTML page we serve (the status page, the scoreboard, the report) is self-contained: inline styles, images
# as data: URIs, no script, nothing fetched, no form. The policy says so, so that if an escaping bug ever let
# markup through, a browser would still run and load nothing; frame-ancestors (a header-only directive) keeps the
# pages out of other sites' frames.
PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")

# Below this size gzip costs more CPU than it saves on the wire.
_GZIP_MIN_BYTES = 1024
# Up to this size a page is compressed on the event loop (about 0.3 ms at 64 KiB): handing it to a worker thread
# and back costs more CPU than that (50 us for a 22 KB page that takes 107 us to compress).
_GZIP_INLINE_BYTES = 64 * 1024


async def metrics_page(snap: Snapshot, accept: str, accept_encoding: str) -> tuple[bytes, dict[str, str]]:
    """Exposition bytes and headers for one scrape: OpenMetrics when asked for, gzip when accepted. The page is
    written on the event loop in slices (see ``exposition.render_cooperatively``); gzip, which gives the GIL
    up while it works, runs in a worker thread for a page bigger than ``_GZIP_INLINE_BYTES``."""
    openmetrics = exposition.wants_openmetrics(accept)
    body = await exposition.render_cooperatively(snap, openmetrics)
    headers = {"Content-Type": exposition.OPENMETRICS if openmetrics else exposition.TEXT}
    if "gzip" in accept_encoding and len(body) >= _GZIP_MIN_BYTES:
        import gzip  # here: a page nobody asks gzipped for never loads zlib

        if len(body) <= _GZIP_INLINE_BYTES:
            body = gzip.compress(body, compresslevel=1)
        else:
            body = await asyncio.to_thread(gzip.compress, body, compresslevel=1)
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
        ("GET", "/api/v1/remote_write", _handler(agent, _remote_write)),
    ]


class Server:
    """An HTTP server of kpi-agent (the agent's, or the scoreboard's): ``routes`` behind the protections
    described above, on guarded listeners, counted in ``group``."""

    def __init__(self, routes: list[Route], group: Group, web_config: LiveWebConfig | None = None,
                 max_connections: int = 512, header_timeout: float = 10.0):
        self.web_config = web_config
        self._routes: dict[str, dict[str, Handler]] = {}
        for method, path, handler in routes:
            self._routes.setdefault(path, {})[method] = handler
        self._requests = group.counter(HTTP_REQUESTS)
        self._duration = group.histogram(HTTP_DURATION)
        self._size = group.histogram(HTTP_RESPONSE_SIZE)
        self._connections = group.gauge(HTTP_CONNECTIONS)
        self._closed = group.counter(HTTP_CONNECTIONS_CLOSED)
        self._config_ok = group.gauge(WEB_CONFIG_OK)
        for reason in CLOSE_REASONS:
            self._closed.ensure((reason,))
        for path in self._routes:
            self._duration.ensure((path,))
        group.gauge(HTTP_CONNECTIONS_LIMIT).set((), max_connections)
        if web_config is not None:
            self._config_ok.set((), 1)
            web_config.on_reload = lambda ok, error: self._config_ok.set((), 1 if ok else 0)
        self.guard = ConnectionGuard(
            max_connections, header_timeout, on_close=lambda reason: self._closed.inc((reason,)),
            allowed_sans=lambda: (list(tls.client_allowed_sans) if web_config and (tls := web_config.current().tls)
                                  and tls.client_allowed_sans is not None else None))
        self._access: tuple[Authenticator, TokenBucket] | None = None
        if web_config is not None:
            from agent.server.access import Authenticator, TokenBucket

            self._access = Authenticator(), TokenBucket()
        self._listeners: list[Listener] = []

    async def start(self, addresses: list[ListenAddress]) -> None:
        context = self.web_config.listening_context() if self.web_config else None
        self._listeners = await listen(self._answer, addresses, self.guard, context)

    @property
    def bound_port(self) -> int | None:
        return self._listeners[0].port if self._listeners else None

    def update_gauges(self) -> None:
        self._connections.set((), len(self.guard.open))

    async def stop(self) -> None:
        for listener in self._listeners:
            listener.close()
        for connection in list(self.guard.open):
            connection.close(None)
        if self._access is not None:
            self._access[0].close()

    async def _refusal(self, request: Request, config: WebConfig) -> Response | None:
        """What the web config answers a request it turns away (rate limit, basic auth), or None."""
        assert self._access is not None, "made with the web config"
        authenticator, bucket = self._access
        if not bucket.allow(config.rate_limit):
            return Response.text("Too Many Requests\n", 429)
        if config.basic_auth_users and not await authenticator.authorized(request.header("Authorization"),
                                                                          config.basic_auth_users):
            return Response.text("Unauthorized\n", 401, **{"WWW-Authenticate": 'Basic realm="kpi-agent"'})
        return None

    async def _answer(self, request: Request) -> Response:
        """Every request: rate limit, auth, the same-origin check, the route; then headers and metrics."""
        started = time.perf_counter()
        config = self.web_config.current() if self.web_config else None
        methods = self._routes.get(request.path)
        handler = methods.get("GET" if request.method == "HEAD" else request.method) if methods else None
        refusal = await self._refusal(request, config) if config is not None else None
        if refusal is not None:
            response = refusal
        elif request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
            response = Response.text("Cross-origin requests may not change the agent's state\n", 403)
        elif methods is None:
            response = Response.text("404: Not Found\n", 404)
        elif handler is None:
            allowed = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
            response = Response.text("405: Method Not Allowed\n", 405, Allow=allowed)
        else:
            response = await handler(request)
        if response.content_type.startswith("text/html"):
            response.headers["Content-Security-Policy"] = PAGE_POLICY
        if config is not None:
            response.headers.update(config.headers)  # the web config's own policy, if it sets one, wins
        name = request.path if methods is not None else "other"
        self._requests.inc((name, str(response.status)))
        self._duration.observe((name,), time.perf_counter() - started)
        self._size.observe((name,), float(len(response.body)))
        return response


def _same_origin(request: Request) -> bool:
    """False for a request a browser sent from another site (CSRF): by Sec-Fetch-Site, else by Origin. Tools
    (curl, Prometheus, kubectl) send neither and pass."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urllib.parse.urlsplit(origin).netloc.lower() == request.host.lower()


def _handler(agent: AgentView, func: Callable[[AgentView, Request], Awaitable[Response]]) -> Handler:
    async def handle(request: Request) -> Response:
        return await func(agent, request)

    return handle


async def _metrics(agent: AgentView, request: Request) -> Response:
    started = time.perf_counter()
    body, headers = await metrics_page(agent.store.snapshot(), request.header("Accept"),
                                       request.header("Accept-Encoding"))
    agent.page_cost.written(time.perf_counter() - started)
    content_type = headers.pop("Content-Type")
    return Response(200, body, content_type, headers)


async def _healthy(request: Request) -> Response:
    return Response.text("Healthy.\n")


async def _ready(agent: AgentView, request: Request) -> Response:
    if agent.ready:
        return Response.text("Ready.\n")
    return Response.text("Not ready: sources are starting.\n", 503)


async def _reload(agent: AgentView, request: Request) -> Response:
    error = await agent.reload()
    if error:
        return Response.text(f"Reload failed; the previous config keeps running.\n{error}\n", 500)
    return Response.text("Reloaded.\n")


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
        "page_warning": agent.page_warning,
    }


async def _status(agent: AgentView, request: Request) -> Response:
    return Response.json(_agent_facts(agent))


async def _sources(agent: AgentView, request: Request) -> Response:
    return Response.json(agent.source_status())


async def _remote_write(agent: AgentView, request: Request) -> Response:
    return Response.json(agent.remote_write_status())


async def _index(agent: AgentView, request: Request) -> Response:
    from agent.server import statuspage  # here: most agents are scraped, not looked at

    return Response.html(statuspage.render(_agent_facts(agent), agent.source_status(),
                                           remote_write=agent.remote_write_status()))
