"""`kpi-agent ui`: the report as a live scoreboard page that reloads itself.

One page is built at a time and shared by every viewer: ten screens on the wall cost Prometheus the same
queries as one. A page is rebuilt when a viewer asks and the last one is older than half the refresh
interval, so what a screen shows is never older than one and a half intervals. Charts are drawn in a worker
thread; the server keeps answering while they are.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence

import aiohttp

from agent.kpi.prometheus_api import PrometheusClient
from agent.kpi.spec import ServiceSpec
from agent.report.model import collect
from agent.report.periods import PeriodChoice
from agent.report.render import render
from agent.series.store import Group
from agent.server.listener import ListenAddress
from agent.server.protocol import Request, Response
from agent.server.routes import Route, Server
from agent.server.webconfig import LiveWebConfig

log = logging.getLogger("agent.report")


class Scoreboard:
    def __init__(self, specs: Sequence[ServiceSpec], prometheus_url: str, period: PeriodChoice, refresh: float,
                 history: int = 0):
        self.specs = tuple(specs)
        self.prometheus_url = prometheus_url
        self.period = period
        self.refresh = refresh
        self.history = history
        self._page = ""
        self._built_at = -float("inf")
        self._building: asyncio.Task[str] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def page(self) -> str:
        if time.monotonic() - self._built_at < self.refresh / 2:
            return self._page
        if self._building is None:
            self._building = asyncio.create_task(self._build())
            self._building.add_done_callback(self._built)
        return await asyncio.shield(self._building)

    def _built(self, task: asyncio.Task[str]) -> None:
        self._building = None
        if not task.cancelled() and task.exception() is None:
            self._page, self._built_at = task.result(), time.monotonic()

    async def _build(self) -> str:
        started = time.monotonic()
        if self._session is None:
            self._session = aiohttp.ClientSession()
        report = await collect(self.specs, PrometheusClient(self.prometheus_url, self._session), self.period,
                               time.time(), self.history)
        page = await asyncio.to_thread(render, report, self.refresh)
        log.info("scoreboard built", extra={"kpis": len(report.results), "problems": len(report.problems()),
                                            "seconds": round(time.monotonic() - started, 3)})
        return page

    async def close(self) -> None:
        if self._building is not None:
            self._building.cancel()
        if self._session is not None:
            await self._session.close()


def routes(board: Scoreboard) -> list[Route]:
    async def index(request: Request) -> Response:
        response = Response.html(await board.page())
        response.headers["Cache-Control"] = "no-store"
        return response

    async def healthy(request: Request) -> Response:
        return Response.text("OK\n")

    return [("GET", "/", index), ("GET", "/-/healthy", healthy)]


async def serve(board: Scoreboard, listen: ListenAddress, web_config: LiveWebConfig | None = None) -> None:
    """Serve until SIGTERM or SIGINT, behind the agent's own server protections (TLS, basic auth, rate limit,
    connection guard) from an exporter-toolkit file."""
    server = Server(routes(board), Group("scoreboard"), web_config)
    await server.start([listen])
    log.info("scoreboard listening", extra={"listen": str(listen), "prometheus": board.prometheus_url,
                                            "kpis": sum(len(s.kpis) for s in board.specs)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await board.close()
        await server.stop()
