"""Runs the agent: starts one task per source, serves HTTP, reloads and shuts down cleanly.

Reload swaps the config only when the new one validates. A source whose config did not change keeps its
task and its store group (so its counters and log offsets carry on); changed sources restart fresh; removed
ones disappear from /metrics. A source that crashes on a bug is logged, counted and restarted with backoff:
it never takes the agent or another source down.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from agent import __version__
from agent.config import AgentConfig, ConfigError
from agent.sources.base import Source, SourceContext
from agent.sources.http import HttpSource, trace_config
from agent.sources.logs import LogSource
from agent.sources.logs.positions import Positions
from agent.store import Store
from agent.web import make_app
from agent.webconfig import WebConfig

log = logging.getLogger(__name__)

SOURCE_KINDS: dict[str, type[Source]] = {"http": HttpSource, "logs": LogSource}

_RESTART_BACKOFF = (1.0, 60.0)  # first and longest wait before restarting a crashed source


@dataclass
class _Running:
    config: Any
    source: Source
    task: asyncio.Task


class Agent:
    """One running agent. ``load`` returns a fresh validated config (or raises ConfigError) on each call."""

    def __init__(self, load: Callable[[], AgentConfig], listen: str = ":9910", web_config: WebConfig | None = None):
        self._load = load
        self.listen = listen
        self.web_config = web_config
        self.config = load()
        self.store = Store(self.config.global_.labels)
        self.ready = False
        self.started_at = time.time()
        self._running: dict[tuple[str, str], _Running] = {}
        self._reload_lock = asyncio.Lock()
        self._stopped = asyncio.Event()
        self._web_runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._positions: Positions | None = None
        self._positions_task: asyncio.Task | None = None
        self._self = self.store.group("agent")
        self._reload_ok = self._self.gauge("kpi_agent_config_last_reload_successful",
                                           "Whether the last configuration reload attempt was successful")
        self._reload_ts = self._self.gauge("kpi_agent_config_last_reload_success_timestamp_seconds",
                                           "Timestamp of the last successful configuration reload")
        self._reloads = self._self.counter("kpi_agent_config_reloads", "Configuration reload attempts", ["result"])
        self._crashes = self._self.counter("kpi_agent_source_crashes",
                                           "Sources restarted after an unexpected error (a bug: please report)",
                                           ["source", "kind"])
        self._source_count = self._self.gauge("kpi_agent_sources", "Configured sources", ["kind"])
        build = self._self.gauge("kpi_agent_build_info", "Build information; the value is always 1",
                                 ["version", "python_version"])
        build.set((__version__, platform.python_version()), 1)
        for result in ("success", "failure"):
            self._reloads.ensure((result,))
        self._reload_ok.set((), 1)
        self._reload_ts.set((), time.time())

    @property
    def bound_port(self) -> int | None:
        """The TCP port actually listened on (useful with port 0)."""
        if self._web_runner is None or not self._web_runner.addresses:
            return None
        return self._web_runner.addresses[0][1]

    async def start(self) -> None:
        ssl_context = self.web_config.ssl_context() if self.web_config else None
        # force_close: every probe opens its own connection, as blackbox does, so connect and TLS are
        # measured and a half-dead keep-alive connection cannot hide a down target.
        self._session = aiohttp.ClientSession(
            trace_configs=[trace_config()],
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, force_close=True),
            cookie_jar=aiohttp.DummyCookieJar())
        self._positions = Positions(self.config.positions_file)
        self._context = SourceContext(self._session, asyncio.Semaphore(self.config.global_.max_concurrent_probes),
                                      self._positions)
        self._positions_task = asyncio.create_task(self._positions.run(), name="positions")
        self._web_runner = web.AppRunner(make_app(self, self.web_config), access_log=None)
        await self._web_runner.setup()
        host, _, port = self.listen.rpartition(":")
        site = web.TCPSite(self._web_runner, host or None, int(port), ssl_context=ssl_context)
        await site.start()
        self._apply(self.config)
        self.ready = True
        log.info("agent started", extra={"listen": self.listen, "sources": len(self._running),
                                          "config": self.config.file})

    async def reload(self) -> str | None:
        """Load and apply the config again; returns None on success or the error text."""
        async with self._reload_lock:
            try:
                config = await asyncio.get_running_loop().run_in_executor(None, self._load)
            except ConfigError as exc:
                self._reload_ok.set((), 0)
                self._reloads.inc(("failure",))
                log.error("reload failed, keeping the running config", extra={"error": str(exc)})
                return str(exc)
            if config.positions_file != self.config.positions_file:
                log.warning("positions_file changed: it takes effect at the next restart",
                            extra={"running": self.config.positions_file, "configured": config.positions_file})
            self._apply(config)
            self._reload_ok.set((), 1)
            self._reload_ts.set((), time.time())
            self._reloads.inc(("success",))
            log.info("config reloaded", extra={"sources": len(self._running)})
            return None

    def _apply(self, config: AgentConfig) -> None:
        """Start, keep or stop sources so that exactly ``config``'s are running."""
        wanted = {(kind, c.name): c for kind, c in config.sources()}
        for key in list(self._running):
            if key not in wanted or wanted[key] != self._running[key].config:
                running = self._running.pop(key)
                running.task.cancel()
                self.store.drop_group(_owner(key))
                self._crashes.remove(key[::-1])
        for key, source_config in wanted.items():
            if key not in self._running:
                group = self.store.group(_owner(key))
                source = SOURCE_KINDS[key[0]](source_config, group, self._context)
                task = asyncio.create_task(self._supervise(source), name=_owner(key))
                self._running[key] = _Running(source_config, source, task)
        self.config = config
        self.store.const_labels = dict(config.global_.labels)
        self._source_count.clear()
        for kind in SOURCE_KINDS:
            self._source_count.set((kind,), sum(1 for k in wanted if k[0] == kind))

    async def _supervise(self, source: Source) -> None:
        delay = _RESTART_BACKOFF[0]
        while True:
            try:
                await source.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("source crashed; restarting", extra={"source": source.name, "kind": source.kind,
                                                                   "retry_in_seconds": delay})
                self._crashes.inc((source.name, source.kind))
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RESTART_BACKOFF[1])

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        self.ready = False
        tasks = [r.task for r in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        if self._positions_task:
            self._positions_task.cancel()
            await asyncio.gather(self._positions_task, return_exceptions=True)
        if self._positions:
            self._positions.flush()
        if self._web_runner:
            await self._web_runner.cleanup()
        if self._session:
            await self._session.close()
        log.info("agent stopped")


def _owner(key: tuple[str, str]) -> str:
    return f"{key[0]}/{key[1]}"


async def serve(agent: Agent) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads."""
    loop = asyncio.get_running_loop()
    try:
        await agent.start()
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(agent.reload()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.request_stop)
        await agent.wait_stopped()
    finally:
        await agent.stop()
