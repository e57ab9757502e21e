"""`kpi-agent ui`: the wallboard at /, the full report at /report and its exports, all from one collection.

One set of pages is built at a time and shared by every viewer: ten screens on the wall cost Prometheus the
same queries as one. Pages are rebuilt when a viewer asks and the last build is older than half the refresh
interval, so what a screen shows is never older than one and a half intervals, and the wallboard and the
report it links to always show the same numbers. Charts are drawn in a worker thread; the server keeps
answering while they are. Scheduled deliveries, when configured, run beside it (agent/report/delivery.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from agent.formatting import without_credentials
from agent.kpi.model import ServiceSpec
from agent.kpi.prometheus_api import PrometheusClient
from agent.report.collect import collect
from agent.report.periods import PeriodChoice
from agent.report.schedule import ReportsConfig
from agent.series.store import Store
from agent.server.listener import ListenAddress
from agent.server.protocol import Request, Response
from agent.server.routes import Route, Server
from agent.server.routes import metrics_page as render_metrics
from agent.server.webconfig import LiveWebConfig

log = logging.getLogger("agent.report")

CSV = "text/csv; charset=utf-8"
DELIVERIES = "<!-- deliveries -->"  # where the wallboard shows the schedule's state, filled in when served


@dataclass(frozen=True)
class Pages:
    """Every page of one build: path -> (body, content type)."""

    files: dict[str, tuple[bytes, str]]


class Scoreboard:
    def __init__(self, specs: Sequence[ServiceSpec], prometheus_url: str, period: PeriodChoice, refresh: float,
                 history: int = 0, group_by: str = "service"):
        self.specs = tuple(specs)
        self.prometheus_url = prometheus_url
        self.period = period
        self.refresh = refresh
        self.history = history
        self.group_by = group_by
        self.deliveries_html = lambda: ""  # the scheduler's status line, once it runs
        self._pages = Pages({})
        self._built_at = -float("inf")
        self._building: asyncio.Task[Pages] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def page(self, path: str) -> tuple[bytes, str] | None:
        if time.monotonic() - self._built_at >= self.refresh / 2:
            if self._building is None:
                self._building = asyncio.create_task(self._build())
                self._building.add_done_callback(self._built)
            await asyncio.shield(self._building)
        return self._pages.files.get(path)

    def _built(self, task: asyncio.Task[Pages]) -> None:
        self._building = None
        if not task.cancelled() and task.exception() is None:
            self._pages, self._built_at = task.result(), time.monotonic()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _build(self) -> Pages:
        started = time.monotonic()
        report = await collect(self.specs, PrometheusClient(self.prometheus_url, self.session()), self.period,
                               time.time(), self.history)
        pages = await asyncio.to_thread(self._render, report)
        log.info("scoreboard built", extra={"kpis": len(report.results), "problems": len(report.problems()),
                                            "queries": report.queries,
                                            "seconds": round(time.monotonic() - started, 3)})
        return pages

    def _render(self, report) -> Pages:  # noqa: ANN001 - agent.report.model.Report
        from agent.report.exports import history_csv, report_json, summary_csv
        from agent.report.render import render
        from agent.report.wallboard import render_wallboard

        html = "text/html; charset=utf-8"
        return Pages({
            "/": (render_wallboard(report, self.refresh, self.group_by, "report", DELIVERIES).encode(), html),
            "/report": (render(report, self.refresh).encode(), html),
            "/summary.csv": (summary_csv(report).encode(), CSV),
            "/history.csv": (history_csv(report).encode(), CSV),
            "/report.json": (report_json(report).encode(), "application/json"),
        })

    async def close(self) -> None:
        if self._building is not None:
            self._building.cancel()
        if self._session is not None:
            await self._session.close()


PATHS = ("/", "/report", "/summary.csv", "/history.csv", "/report.json")


def routes(board: Scoreboard, extra: Sequence[Route] = ()) -> list[Route]:
    def serve_page(path: str):  # noqa: ANN202 - a handler
        async def handler(request: Request) -> Response:
            found = await board.page(path)
            if found is None:
                return Response.text("not built yet\n", 503)
            body, content_type = found
            if path == "/":  # the deliveries' state changes between builds: always the current one
                body = body.replace(DELIVERIES.encode(), board.deliveries_html().encode(), 1)
            response = Response(200, body, content_type)
            response.headers["Cache-Control"] = "no-store"
            return response
        return handler

    async def healthy(request: Request) -> Response:
        return Response.text("OK\n")

    return [*(("GET", path, serve_page(path)) for path in PATHS), ("GET", "/-/healthy", healthy), *extra]


def metrics_route(store: Store) -> Route:
    """/metrics of the ui itself: its HTTP server's requests and the scheduled deliveries."""
    async def handler(request: Request) -> Response:
        body, headers = await render_metrics(store.snapshot(), request.header("Accept"),
                                             request.header("Accept-Encoding"))
        content_type = headers.pop("Content-Type")
        return Response(200, body, content_type, headers)

    return ("GET", "/metrics", handler)


async def serve(board: Scoreboard, listen: ListenAddress, web_config: LiveWebConfig | None = None,
                reports: ReportsConfig | None = None, chromium: str = "") -> None:
    """Serve until SIGTERM or SIGINT, behind the agent's own server protections (TLS, basic auth, rate limit,
    connection guard) from an exporter-toolkit file; with the scheduled ``reports`` delivered meanwhile."""
    store = Store()
    background: list[Coroutine[Any, Any, None]] = []
    if reports is not None:
        from agent.report.delivery import Deliveries

        deliveries = Deliveries(reports, board.specs, board.prometheus_url, board.session, chromium,
                                store.group("deliveries"))
        board.deliveries_html = deliveries.status_html
        background.append(deliveries.run())
    server = Server(routes(board, [metrics_route(store)]), store.group("scoreboard"), web_config)
    await server.start([listen])
    log.info("scoreboard listening", extra={"listen": str(listen), "kpis": sum(len(s.kpis) for s in board.specs),
                                            "prometheus": without_credentials(board.prometheus_url)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(job) for job in background]
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await board.close()
        await server.stop()
