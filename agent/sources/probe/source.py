"""Prober sources of every kind: one target, or the targets a source discovers.

``ProbeSource`` probes its one target; its series carry ``target="<source name>"``. ``DiscoveringProbeSource``
runs the source's discoverers (agent.discovery) and keeps one ``ProbeTarget`` per target, so targets appear
and disappear without a reload. After any change the targets are resolved again (relabelling, checks,
sharding: a pure function, run in a worker thread) and the difference applied: a target whose address and
labels did not change keeps its place in the schedule and its counters; a vanished one leaves the schedule
and its series leave /metrics with its row of the source's table; new ones are attached in batches, so ten
thousand new targets never block the event loop for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from agent.discovery.manager import SourceDiscovery
from agent.discovery.targets import Resolution, Target, resolve
from agent.runtime import heap
from agent.series.family import SchemaError
from agent.series.store import Member
from agent.series.table import Table, TableRow
from agent.sources.base import Source, SourceContext, SourceStats
from agent.sources.probe.model import TARGET_LABEL, ProbeConfig, ProberPlugin
from agent.sources.probe.target import ProbeTarget, SourceProbe

log = logging.getLogger("agent.sources.probe")

ATTACH_BATCH = 100  # targets attached to the store between two turns of the event loop (about 10 ms of work)
FAILING_SHOWN = 20  # the status page lists this many failing targets and refusals


class ProbeSource(Source[ProbeConfig[Any]]):
    """A source that probes its one target."""

    __slots__ = ("kind", "prober_kind", "prober")  # ten thousand one-URL sources: no __dict__ each

    def __init__(self, kind: ProberPlugin[Any, Any], config: ProbeConfig[Any], group: Member, stats: SourceStats,
                 context: SourceContext):
        super().__init__(config, group, stats, context)
        self.kind = kind.name
        self.prober_kind = kind
        assert config.target is not None, "a source without a target discovers its targets"
        assert isinstance(group, TableRow), "a one-target source's series are a row of the store's table"
        self.prober = ProbeTarget(SourceProbe(kind, config, stats, context), config.target, group, config.name)

    def details(self) -> dict[str, Any]:
        return {self.prober_kind.target_key: self.prober_kind.describe_target(self.prober.target),
                "interval_seconds": self.config.interval, "timeout_seconds": self.config.timeout}

    async def probe(self) -> str | None:
        return await self.prober.probe()

    def start(self, crashed: Callable[[BaseException], None]) -> bool:
        """On the agent's schedule, which starts each probe: between probes the source holds no task (ten
        thousand one-URL sources kept ten thousand tasks waiting, about 1 KiB each)."""
        self.prober.source.resources.schedule.add(self.prober, crashed)
        return True

    def stop(self) -> None:
        self.prober.source.resources.schedule.remove(self.prober)

    async def run(self) -> None:
        """The same, in a task (for a caller that runs sources so): until cancelled, or a probe raises (a bug)."""
        crashed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def crash(exc: BaseException) -> None:
            if not crashed.done():
                crashed.set_exception(exc)

        self.start(crash)
        try:
            await crashed
        finally:
            self.stop()


class DiscoveringProbeSource(Source[ProbeConfig[Any]]):
    def __init__(self, kind: ProberPlugin[Any, Any], config: ProbeConfig[Any], group: Member, stats: SourceStats,
                 context: SourceContext):
        super().__init__(config, group, stats, context)
        assert config.discovery is not None
        assert isinstance(group, Table), "a discovering source's targets are the rows of its table"
        self.kind = kind.name
        self.prober_kind = kind
        self.table = group
        self.probe_source = SourceProbe(kind, config, stats, context)
        self.rules = kind.target_rules(config)
        self._changed = asyncio.Event()
        # woken through the event, not a method of the source: a source in a reference cycle with its discovery
        # would outlive a reload (its objects are frozen: agent.runtime.heap)
        self.discovery = SourceDiscovery(config.name, config.discovery, stats.group, self._changed.set)
        self._targets: dict[str, tuple[Target, ProbeTarget]] = {}
        self._crash: BaseException | None = None
        self._refusals: list[str] = []
        self._counts: dict[str, int] = {}

    def details(self) -> dict[str, Any]:
        """The targets by state, the first failing ones with their error, and failing discovery: the
        per-target debug view."""
        probers = [prober for _, prober in self._targets.values()]
        failing = sorted((prober for prober in probers if prober.last_result not in (None, "success")),
                         key=lambda prober: prober.name)
        describe = self.prober_kind.describe_target
        key = self.prober_kind.address_key
        return {
            "targets": {state: int(self.discovery.states.values.get((state,), 0))
                        for state in ("probed", "other_shard", "dropped", "refused")},
            "failing_targets": [{"target": prober.name, key: describe(prober.target),
                                 "result": prober.last_result, "error": prober.last_error}
                                for prober in failing[:FAILING_SHOWN]],
            "failing_targets_total": len(failing),
            "refusals": self._refusals[:FAILING_SHOWN],
            "discovery_failures": self.discovery.failing(),
            "series": self.table.series_count(),
        }

    async def run(self) -> None:
        watchers = self.discovery.tasks()
        for watcher in watchers:
            watcher.add_done_callback(self._watcher_done)
        schedule = self.probe_source.resources.schedule
        for _, prober in self._targets.values():  # after a restart: the targets are still attached
            schedule.add(prober, self._crashed)
        self._changed.set()
        try:
            while True:
                await self._changed.wait()
                self._changed.clear()
                if self._crash is not None:
                    crash, self._crash = self._crash, None
                    raise crash
                await self._update()
        finally:
            for _, prober in self._targets.values():
                schedule.remove(prober)
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    def _watcher_done(self, task: asyncio.Task[None]) -> None:
        crash = None if task.cancelled() else task.exception()
        if crash is not None:
            self._crashed(crash)

    def _crashed(self, exc: BaseException) -> None:
        if self._crash is None:
            self._crash = exc  # a bug: the runtime logs it, counts it and restarts the source
            self._changed.set()

    async def _update(self) -> None:
        result = await asyncio.to_thread(resolve, self.rules, self.discovery.groups(), self.context.shard)
        wanted = result.targets
        schedule = self.probe_source.resources.schedule
        stale = [name for name, (target, _) in self._targets.items() if wanted.get(name) != target]
        for name in stale:
            prober = self._targets.pop(name)[1]
            schedule.remove(prober)
            self._detach(prober.row)
        new = [target for name, target in wanted.items() if name not in self._targets]
        with heap.building_long_lived():
            for start in range(0, len(new), ATTACH_BATCH):
                self._attach(new[start:start + ATTACH_BATCH], result)
                await asyncio.sleep(0)
        self.discovery.counted(result)
        if result.refusals != self._refusals:
            self._refusals = result.refusals
            if result.refusals:
                log.warning("discovered targets refused", extra={
                    "source": self.name, "refused": result.counts["refused"], "first": "; ".join(result.refusals[:3])})
        log.info("targets updated", extra={"source": self.name, "probed": len(self._targets), "added": len(new),
                                           "removed": len(stale)})

    def _attach(self, targets: list[Target], result: Resolution) -> None:
        schedule = self.probe_source.resources.schedule
        schema = self.probe_source.layout.schema
        for target in targets:
            row = TableRow(target.name, schema)
            try:
                row.slot = self.table.add({TARGET_LABEL: target.name, **dict(target.labels)})
            except SchemaError as exc:  # it clashes with another source's series: refuse it, keep the rest
                result.counts["probed"] -= 1
                result.refuse(f"{target.name!r}: {exc}")
                continue
            row.table = self.table
            prober = ProbeTarget(self.probe_source, target.address, row, target.name)
            self._targets[target.name] = (target, prober)
            schedule.add(prober, self._crashed)

    def _detach(self, row: TableRow) -> None:
        if row.table is not None:
            row.table.remove(row.slot)
            row.table = None
