"""Runs the agent: starts every source (in a task of its own, unless its probes are started by the agent's one
probe schedule), serves HTTP, reloads and shuts down cleanly.

A reload swaps the config only when the new one validates and every new or changed source has been built:
sources are built first, into groups not yet attached to the store, then the store swaps the groups of the
old and new sources in one step (or refuses, changing nothing), and only then are the old tasks cancelled and
the new ones started. Whatever fails, the running sources keep running and the failure is counted. A source
whose config did not change keeps its task and its groups (its counters and log offsets carry on); removed
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
from typing import TYPE_CHECKING, Any, NamedTuple

from agent import __version__
from agent.config.agent import ConfigError
from agent.config.model import AgentConfig
from agent.runtime import hangup, heap, systemd
from agent.runtime.logconfig import suppressed_records
from agent.runtime.shard import UNSHARDED, Shard
from agent.series.family import SchemaError
from agent.series.pagesize import PageCost, samples
from agent.series.selfmetrics import (
    BUILD_INFO,
    CRASHES,
    LOG_SUPPRESSED,
    LOOP_LAG,
    LOOP_LAG_MAX,
    PROCESS_FAMILIES,
    RELOAD_OK,
    RELOAD_TIME,
    RELOADS,
    SOURCES,
)
from agent.series.store import Member, Store, series_count
from agent.server.listener import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, ListenAddress, descriptor_budget
from agent.server.routes import Server, agent_routes
from agent.sources.base import Source, SourceContext, SourceKind
from agent.sources.kinds import KINDS

if TYPE_CHECKING:  # only an agent run with --web.config.file loads it
    from agent.server.webconfig import LiveWebConfig

log = logging.getLogger(__name__)

_RESTART_BACKOFF = (1.0, 60.0)  # first and longest wait before restarting a crashed source
_LAG_TICK = 0.1  # the event loop watchdog's timer
_LAG_WINDOW = 60.0  # kpi_agent_event_loop_lag_max_seconds looks back this far
_PAGE_CHECK = 10.0  # seconds between two looks at the size of /metrics (counting 400,000 series takes ~30 ms)

class SourceKey(NamedTuple):
    """Which source: its kind and its name (unique within the kind)."""

    kind: str
    name: str


class StartError(Exception):
    """The sources of a valid config could not be built (a file changed since it was checked)."""


class _Running:
    """A running source: its config, and how it runs (its own task, or started without one). Called with what
    a task-less source raised (a bug): it is the ``crashed`` callback the source was started with."""

    __slots__ = ("agent", "config", "source", "task", "started", "restart", "delay")

    def __init__(self, agent: Agent, config: Any, source: Source[Any]):
        self.agent = agent
        self.config = config
        self.source = source
        self.task: asyncio.Task[None] | None = None  # ``run`` in a task, unless the source started without one
        self.started = False  # started without a task, and not stopped since
        self.restart: asyncio.TimerHandle | None = None  # a crashed task-less source waits for this to start again
        self.delay = _RESTART_BACKOFF[0]  # before the next restart of a task-less source

    @property
    def running(self) -> bool:
        """Collecting: not stopped, not waiting to be restarted after a crash."""
        return not self.task.done() if self.task is not None else self.started

    def __call__(self, exc: BaseException) -> None:
        self.agent._crashed(self, exc)


def _owners(key: SourceKey) -> tuple[str, str]:
    """Store group owners of a source: its data series, and its self-metrics."""
    return f"{key.kind}/{key.name}", f"{key.kind}/{key.name}/self"


class Agent:
    """One running agent. ``load`` returns a fresh validated config (or raises ConfigError) on each call."""

    def __init__(self, load: Callable[[], AgentConfig], listen: list[str] | str = ":9910",
                 web_config: LiveWebConfig | None = None, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 header_timeout: float = DEFAULT_HEADER_TIMEOUT, shard: Shard = UNSHARDED):
        self._load = load
        self.shard = shard
        self.listen = [ListenAddress.parse(a) for a in ([listen] if isinstance(listen, str) else listen)]
        self.web_config = web_config
        self._max_connections = max_connections
        self._header_timeout = header_timeout
        self.config = self._load_config()
        self.store = Store(self.config.global_.labels, reserved=PROCESS_FAMILIES)
        self.ready = False
        self.started_at = time.time()
        self.last_reload_error: str | None = None
        self.page_cost = PageCost()  # the server records what writing /metrics took
        self.page_warning: str | None = None  # set while /metrics would not fit a scrape
        self.sources: dict[SourceKey, _Running] = {}
        self._reload_lock = asyncio.Lock()
        self._stopped = asyncio.Event()
        self.server: Server | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._page_watch: asyncio.Task[None] | None = None
        self._context: SourceContext | None = None
        self.remote_write: Any = None  # agent.push.endpoint.RemoteWrite, once a config has remote_write
        own = self._own = self.store.group("agent")
        self._reload_ok = own.gauge(RELOAD_OK)
        self._reload_ts = own.gauge(RELOAD_TIME)
        self._reloads = own.counter(RELOADS)
        self._crashes = own.counter(CRASHES)
        self._source_count = own.gauge(SOURCES)
        own.gauge(BUILD_INFO).set((__version__, platform.python_version()), 1)
        for result in ("success", "failure"):
            self._reloads.ensure((result,))
        self._reload_ok.set((), 1)
        self._reload_ts.set((), time.time())

    def _load_config(self) -> AgentConfig:
        with heap.building_long_lived():  # ten thousand sources' configs: long-lived, and many objects
            return self._load()

    @property
    def bound_port(self) -> int | None:
        """The TCP port actually listened on (the first address's; useful with port 0)."""
        return self.server.bound_port if self.server else None

    async def start(self) -> None:
        """Serve HTTP and start the sources; raises StartError (after cleaning up) if they cannot be built."""
        self._context = SourceContext(self.store, self.shard, self.config)
        try:
            await self._apply(self.config)
        except StartError:
            await self._context.close()
            raise
        # the server never takes the descriptors probes in flight need
        limit = descriptor_budget(self._max_connections, self.config.global_.max_concurrent_probes)
        self.server = Server(agent_routes(self), self._own, self.web_config, limit, self._header_timeout)
        await self.server.start(self.listen)
        self._watchdog = asyncio.create_task(self._watch_loop(), name="watchdog")
        self._page_watch = asyncio.create_task(self._watch_page(), name="page size")
        await self._apply_push(self.config)
        self.ready = True

    async def reload(self) -> str | None:
        """Load and apply the config again; returns None on success or the error text."""
        async with self._reload_lock:
            try:
                config = await asyncio.get_running_loop().run_in_executor(None, self._load_config)
                await self._apply(config)
                await self._apply_push(config)
            except (ConfigError, StartError) as exc:
                self._reload_ok.set((), 0)
                self._reloads.inc(("failure",))
                self.last_reload_error = str(exc)
                log.error("reload failed, keeping the running config", extra={"error": str(exc)})
                return str(exc)
            self._reload_ok.set((), 1)
            self._reload_ts.set((), time.time())
            self._reloads.inc(("success",))
            self.last_reload_error = None
            log.info("config reloaded", extra={"sources": len(self.sources)})
            return None

    def push_labels(self, config: AgentConfig) -> dict[str, str]:
        """The labels every pushed series gets unless it has its own: what a scrape of this agent would add
        (job, and instance as host:port, which tells replicas apart), then the config's external_labels."""
        import socket

        return {"job": "kpi-agent", "instance": f"{socket.gethostname()}:{self.bound_port}",
                **config.external_labels}

    async def _apply_push(self, config: AgentConfig) -> None:
        if not config.remote_write and self.remote_write is None:
            return  # an agent that only waits to be scraped never loads agent.push
        from agent.push.endpoint import RemoteWrite

        if self.remote_write is None:
            self.remote_write = RemoteWrite(self.store)
        try:
            await self.remote_write.apply(config.remote_write, config.remote_write_buffer, self.push_labels(config))
        except (OSError, ValueError) as exc:  # e.g. a CA file broken since the check
            raise StartError(f"remote_write cannot start: {exc}") from None

    def _runs(self, kind: str, config: Any) -> bool:
        """Whether this replica runs the source (every source, unless the agent is sharded)."""
        key = KINDS[kind].shard_key(config)
        return key is None or self.shard.owns(key)

    async def _apply(self, config: AgentConfig) -> None:
        """Make exactly ``config``'s sources run, or raise StartError having changed nothing."""
        context = self._context
        assert context is not None, "start() makes the context before any source"
        wanted = {SourceKey(kind, c.name): c for kind, c in config.sources if self._runs(kind, c)}
        changed = {key: c for key, c in wanted.items() if key not in self.sources or self.sources[key].config != c}
        held = []  # what the new sources need loaded (CA bundles), loaded off the event loop
        loop = asyncio.get_running_loop()
        for kind_name in {key.kind for key in changed}:
            if type(KINDS[kind_name]).prepare is SourceKind.prepare:
                continue  # nothing blocking to prepare (logs): no worker thread started for it
            configs = [c for key, c in changed.items() if key.kind == kind_name]
            try:
                held += await loop.run_in_executor(None, KINDS[kind_name].prepare, configs, context)
            except Exception as exc:  # e.g. a CA file broken since the check; nothing has changed yet
                raise StartError(f"{kind_name} sources cannot start: {exc}") from None
        with heap.building_long_lived():
            self._swap_sources(wanted, changed, context)
        del held
        self.config = config
        self.store.const_labels = dict(config.global_.labels)
        context.reconfigure(config)
        self._source_count.replace({(kind_name,): sum(1.0 for key in wanted if key.kind == kind_name)
                                    for kind_name in KINDS})

    def _swap_sources(self, wanted: dict[SourceKey, Any], changed: dict[SourceKey, Any],
                      context: SourceContext) -> None:
        """Build the ``changed`` (new or changed) sources, swap their groups in and the stale ones (changed, or
        no longer ``wanted``) out, start and stop their tasks. Raises StartError having changed nothing."""
        stale = [key for key in self.sources if key not in wanted or key in changed]
        built: dict[SourceKey, _Running] = {}
        groups: list[Member] = []
        for key, source_config in changed.items():
            kind = KINDS[key.kind]
            data_owner, stats_owner = _owners(key)
            data, stats = kind.data_group(source_config, data_owner), kind.source_stats(source_config, stats_owner)
            try:
                source = kind.build(source_config, data, stats, context)
            except Exception as exc:  # e.g. a CA file broken since the check; nothing has changed yet
                raise StartError(f"{key.kind} source {key.name!r} cannot start: {exc}") from None
            built[key] = _Running(self, source_config, source)
            groups += [data, stats.member]
        detach = [owner for key in stale for owner in _owners(key)]
        try:
            self.store.swap(remove=detach, add=groups)
        except SchemaError as exc:  # config checks refuse every clash first: reaching this is a bug
            raise StartError(f"the new sources would break /metrics: {exc}") from None
        for key in stale:
            running = self.sources.pop(key)
            self._halt(running)
            self._crashes.remove((key.name, key.kind))  # the counter's labels: source, kind
        for key, running in built.items():
            running.started = running.source.start(running)
            if not running.started:
                running.task = asyncio.create_task(self._supervise(running.source), name=_owners(key)[0])
            self.sources[key] = running

    @staticmethod
    def _halt(running: _Running) -> None:
        """Stop a source: cancel its task, or stop what it started (and a pending restart)."""
        if running.task is not None:
            running.task.cancel()
            return
        if running.restart is not None:
            running.restart.cancel()
            running.restart = None
        running.started = False
        running.source.stop()

    def _crashed(self, running: _Running, exc: BaseException) -> None:
        """A task-less source raised (a bug): logged, counted, stopped, and started again after a backoff, as
        ``_supervise`` does for a source with a task."""
        source = running.source
        if not running.started or self.sources.get(SourceKey(source.kind, source.name)) is not running:
            return  # already waiting to restart, or stopped meanwhile
        running.started = False
        source.stop()
        log.error("source crashed; restarting", exc_info=exc, extra={"source": source.name, "kind": source.kind,
                                                                      "retry_in_seconds": running.delay})
        self._crashes.inc((source.name, source.kind))
        running.restart = asyncio.get_running_loop().call_later(running.delay, self._restart, running)
        running.delay = min(running.delay * 2, _RESTART_BACKOFF[1])

    def _restart(self, running: _Running) -> None:
        running.restart = None
        running.started = running.source.start(running)

    async def _supervise(self, source: Source[Any]) -> None:
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

    async def _watch_loop(self) -> None:
        """Measure how late a short timer fires (the event loop was busy that long) and refresh the gauges
        that are read, not counted: open connections, suppressed log records."""
        lag, lag_max = self._own.histogram(LOOP_LAG), self._own.gauge(LOOP_LAG_MAX)
        suppressed = self._own.counter(LOG_SUPPRESSED)
        loop = asyncio.get_running_loop()
        recent: list[tuple[float, float]] = []  # (when, lag) over the last window
        while True:
            before = loop.time()
            await asyncio.sleep(_LAG_TICK)
            now = loop.time()
            late = max(0.0, now - before - _LAG_TICK)
            lag.observe((), late)
            recent = [(when, seconds) for when, seconds in recent if now - when < _LAG_WINDOW]
            recent.append((now, late))
            lag_max.set((), max(seconds for _, seconds in recent))
            suppressed.set((), suppressed_records())
            if self.server is not None:
                self.server.update_gauges()

    async def _watch_page(self) -> None:
        """Warn (log, status page) while the /metrics page would take more than half the scrape timeout, from
        right after start and every reload on: ten thousand discovered targets must not pass unnoticed until
        Prometheus drops every scrape."""
        await asyncio.sleep(1.0)  # discovered targets attach in the first second
        while True:
            warning = self.page_cost.warning(samples(self.store), self.config.global_.scrape_timeout)
            if warning != self.page_warning:
                if warning is not None and self.page_warning is None:
                    log.warning("the /metrics page is too big for a scrape", extra={"reason": warning})
                elif warning is None:
                    log.info("the /metrics page fits a scrape again")
                self.page_warning = warning
            await asyncio.sleep(_PAGE_CHECK)

    def source_status(self) -> list[dict[str, Any]]:
        """What the status page shows of every running source, in config order."""
        rows = []
        for (kind, name), running in self.sources.items():
            source, stats = running.source, running.source.stats
            rows.append({
                "name": name, "kind": kind, "last_result": stats.last_result, "collections": stats.collections,
                "last_success": stats.last_success, "last_error": stats.last_error,
                "last_error_text": stats.last_error_text,
                "series": series_count(source.group),
                "crashes": self._crashes.values.get((name, kind), 0.0), **source.details(),
            })
        return rows

    def remote_write_status(self) -> list[dict[str, Any]]:
        """What the status page shows of every remote_write endpoint."""
        return self.remote_write.status() if self.remote_write is not None else []

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        self.ready = False
        tasks = [r.task for r in self.sources.values() if r.task is not None]
        for running in self.sources.values():
            self._halt(running)
        await asyncio.gather(*tasks, return_exceptions=True)
        self.sources.clear()
        for background in (self._watchdog, self._page_watch):
            if background is not None:
                background.cancel()
                await asyncio.gather(background, return_exceptions=True)
        if self.remote_write is not None:
            await self.remote_write.stop()
        if self.server:
            await self.server.stop()
        if self._context is not None:
            await self._context.close()
        log.info("agent stopped")


async def serve(agent: Agent) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads. A SIGHUP while the agent starts (here, or before, see
    agent.runtime.hangup) is one reload once it has started."""
    loop = asyncio.get_running_loop()
    reload_requested = False

    def hangup_received() -> None:
        nonlocal reload_requested
        if agent.ready:
            asyncio.ensure_future(agent.reload())
        else:
            reload_requested = True

    loop.add_signal_handler(signal.SIGHUP, hangup_received)  # first: no SIGHUP falls between the two handlers
    reload_requested = reload_requested or hangup.take()
    try:
        await agent.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.request_stop)
        # said once SIGTERM stops the agent cleanly: a supervisor that stops it on reading this line never kills it
        # before its positions are written; and once every source has taken its first step (a log source's first
        # look at its paths, with its "no file matches" warnings), which nothing in start() waited for
        await asyncio.sleep(0)
        log.info("agent started", extra={"listen": ",".join(map(str, agent.listen)), "sources": len(agent.sources),
                                          "config": agent.config.file})
        if reload_requested:
            log.info("reloading: SIGHUP arrived while the agent was starting")
            await agent.reload()
        systemd.notify("READY=1")
        await agent.wait_stopped()
    finally:
        systemd.notify("STOPPING=1")
        await agent.stop()
