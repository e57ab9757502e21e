"""One probed target, and what every target of a source shares: the probe, written once for every kind.

A probe waits for a probe slot (at most its timeout), then makes up to ``retries + 1`` attempts, each under its
own deadline, each given to the kind's prober with a fresh ``ProbeResult``. The target's series become what the
last attempt recorded, and the framework writes the families every probe has: ``probe_success``,
``probe_duration_seconds``, ``probes_total{result}``, ``probe_last_result{result}``, the
``probe_latency_seconds`` histogram, and with retries ``probe_retries`` and ``probe_attempts_total{result}``
(every attempt's own result: a failure a retry papered over is still counted). Result changes are logged, not
every failure.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.series.family import FamilySpec
from agent.series.table import AnyTableFamily, Declared, RowSchema, TableFamily, TableHistogram, TableRow
from agent.sources.probe.failures import TARGET_FAULTS, explain
from agent.sources.probe.families import (
    ATTEMPTS_TOTAL,
    DURATION,
    LAST_RESULT,
    LATENCY,
    PROBES,
    PROBES_SKIPPED,
    RETRIES,
    SUCCESS,
    TLS_VERSION,
    TLS_VERSIONS,
)
from agent.sources.probe.model import ProbeConfig, Prober, ProberPlugin
from agent.sources.probe.resources import probe_resources
from agent.sources.probe.result import ProbeFailed, ProbeResult

if TYPE_CHECKING:
    from agent.sources.base import SourceContext, SourceStats

log = logging.getLogger("agent.sources.probe")

REASON_LIMIT = 300
_COMMON_ORDER = (SUCCESS, PROBES, DURATION, LAST_RESULT, LATENCY, RETRIES, ATTEMPTS_TOTAL)
_COMMON = frozenset(spec.name for spec in _COMMON_ORDER)


class Layout:
    """How a target's series are laid out, decided once per kind and set of exported families and shared by
    every target of every source with that layout (ten thousand one-URL sources share one): which families the
    kind writes and with which default, which grow across probes, the label tuples of each result, and the
    table schema (``RowSchema``): a target is one row of its source's table (or, for a one-target source, of
    the store's table for the schema), the families' label sets known in advance its columns."""

    __slots__ = ("wanted", "kind_specs", "entries", "index", "result_keys", "last_result_series", "schema",
                 "positions", "success", "probes", "duration", "last", "latency", "retries", "attempts")

    def __init__(self, kind: ProberPlugin[Any, Any], specs: tuple[FamilySpec, ...]):
        self.wanted = frozenset(spec.name for spec in specs)
        self.kind_specs = tuple(spec for spec in specs if spec.name not in _COMMON)
        counted = frozenset(spec.name for spec in kind.probe_families if spec.kind == "counter")
        defaults = {spec.name: value for spec, value in kind.always.items()}
        # per kind family: (name, default value or None, kept across probes)
        self.entries = tuple((spec.name, defaults.get(spec.name), spec.name in counted) for spec in self.kind_specs)
        self.index = {spec.name: position for position, spec in enumerate(self.kind_specs)}
        self.result_keys: dict[str, tuple[str, ...]] = {result: (result,) for result in kind.result_labels}
        self.last_result_series = {result: {key: 1.0} for result, key in self.result_keys.items()}
        results = tuple(self.result_keys.values())
        known = {TLS_VERSION.name: tuple((version,) for version in TLS_VERSIONS),
                 **{spec.name: labels for spec, labels in kind.known_labels.items()}}
        # the kind's families first, then the common ones in the order a target's group registered them before
        # tables: /metrics lists families in the order it first meets them, and keeps that order
        by_name = {spec.name: spec for spec in specs}
        ordered = (*self.kind_specs, *(by_name[spec.name] for spec in _COMMON_ORDER if spec.name in by_name))
        declared = []
        for spec in ordered:
            if spec.name in (PROBES.name, ATTEMPTS_TOTAL.name):  # every result at 0 from the start
                declared.append(Declared(spec, results, results))
            elif spec.name == LAST_RESULT.name:
                declared.append(Declared(spec, results))
            elif not spec.labelnames:  # a kind's counters are born at 0, so increase() sees the first packets
                born = ((),) if spec.name in counted or spec.name == LATENCY.name else ()
                declared.append(Declared(spec, ((),), born))
            else:
                declared.append(Declared(spec, known.get(spec.name, ())))
        self.schema = RowSchema(f"{kind.name} targets", tuple(declared))
        position = {spec.name: index for index, spec in enumerate(ordered)}
        self.positions = tuple(position[spec.name] for spec in self.kind_specs)  # of the kind's, in the table
        self.success, self.probes = position[SUCCESS.name], position[PROBES.name]
        self.duration, self.last, self.latency, self.retries, self.attempts = (
            position.get(spec.name) for spec in (DURATION, LAST_RESULT, LATENCY, RETRIES, ATTEMPTS_TOTAL))


@functools.lru_cache(maxsize=64)
def layout(kind: ProberPlugin[Any, Any], specs: tuple[FamilySpec, ...]) -> Layout:
    return Layout(kind, specs)


class SourceProbe:
    """What every target of one source shares: its kind and config, its compiled prober, the agent's probe
    resources, and the layout of a target's families."""

    __slots__ = ("kind", "config", "name", "stats", "resources", "prober", "faults", "layout", "__weakref__")

    def __init__(self, kind: ProberPlugin[Any, Any], config: ProbeConfig[Any], stats: SourceStats,
                 context: SourceContext):
        self.kind = kind
        self.config = config
        self.name = config.name
        self.stats = stats
        self.resources = probe_resources(context)
        if kind.module_self_families(config.module):  # it writes this source's own series: a prober of its own
            self.prober: Prober = kind.prober(config.module, kind.shared(context), stats.group)
        else:  # one per module: sources configured alike share their module (probe.config), so their prober
            self.prober = self.resources.prober(kind, config.module, context)
        self.faults: tuple[type[BaseException], ...] = getattr(self.prober, "faults", TARGET_FAULTS)
        self.layout = layout(kind, tuple(declared.spec for declared in kind.families(config)))
        stats.ensure(PROBES_SKIPPED)

    def reason(self, exc: BaseException, target: str) -> tuple[str, str]:
        words: Callable[[BaseException, str, float], tuple[str, str] | None] | None = \
            getattr(self.prober, "explain", None)  # looked up on failures only: no bound method kept per source
        worded = words(exc, target, self.config.timeout) if words is not None else None
        return worded or explain(exc, self.config.timeout)


class ProbeTarget:
    """One target of a source: probes it and keeps its series in its row of a table."""

    __slots__ = ("source", "target", "row", "name", "interval", "last_result", "last_error")

    def __init__(self, source: SourceProbe, target: str, row: TableRow, name: str):
        self.source = source
        self.target = target  # what the prober is given
        self.row = row  # its place in a table, once attached (row.table is None before and after)
        self.name = name  # the target label
        self.interval = source.config.interval
        self.last_result: str | None = None  # for the status page, and to log result changes
        self.last_error: str | None = None

    @property
    def key(self) -> str:
        """Its hash places the target in the interval: the source's name, and the target's for a discovered
        one (not kept: ten thousand strings)."""
        return self.name if self.source.config.discovery is None else f"{self.source.name}/{self.name}"

    def skipped(self, ticks: int) -> None:
        """Ticks the schedule could not start: the agent's problem, counted apart from the target's results."""
        self.source.stats.count(PROBES_SKIPPED, ticks)

    async def probe(self, due: float | None = None) -> str | None:
        """One probe, due at ``due`` (loop time; None: now). Records every series and returns the result label,
        or None when it was skipped because no probe slot freed up within the timeout."""
        source = self.source
        resources = source.resources
        timeout = source.config.timeout
        if not await resources.slots.acquire(timeout):
            source.stats.count(PROBES_SKIPPED)
            log.debug("probe skipped: every probe slot is busy", extra={"source": source.name, "target": self.name})
            return None
        loop = asyncio.get_running_loop()
        try:
            if due is not None:
                resources.delay.observe((), max(0.0, loop.time() - due))
            started = time.perf_counter()
            attempts = 0
            while True:
                attempts += 1
                result = ProbeResult(loop.time() + timeout, timeout, source.layout.wanted)
                outcome, error = await self._attempt(result)
                if result.counts:
                    self._count(result.counts)
                layout = source.layout
                if layout.attempts is not None and (table := self.row.table) is not None:
                    _scalar(table.ordered[layout.attempts]).inc(self.row.slot, layout.result_keys[outcome])
                if outcome == "success" or attempts > source.config.retries:
                    break
        finally:
            resources.slots.release()
        duration = time.perf_counter() - started
        self._record(result, outcome, duration, attempts)
        previous = self.last_result
        self.last_result, self.last_error = outcome, error[:REASON_LIMIT] if error else None
        source.stats.record(started, outcome == "success", outcome, self.last_error)
        if outcome != previous and not (previous is None and outcome == "success"):
            level = logging.INFO if outcome == "success" else logging.WARNING
            changed = {"from": previous} if previous is not None else {}  # a first probe changes from nothing
            log.log(level, "probe result changed" if previous is not None else "first probe failed",
                    extra={"source": source.name, "target": self.name, **changed, "to": outcome,
                           **({"error": self.last_error} if self.last_error else {})})
        return outcome

    async def _attempt(self, result: ProbeResult) -> tuple[str, str | None]:
        source = self.source
        try:
            async with asyncio.timeout_at(result.deadline):
                await source.prober.probe(self.target, result)
        except ProbeFailed as exc:
            _forget_frames(exc)
            return exc.result, exc.reason
        except source.faults as exc:
            _forget_frames(exc)
            return source.reason(exc, self.target)
        return "success", None

    def _count(self, counts: dict[str, dict[tuple[str, ...], float]]) -> None:
        table = self.row.table
        if table is None:  # the target left while its probe ran
            return
        layout, slot = self.source.layout, self.row.slot
        for name, series in counts.items():
            family = table.ordered[layout.positions[layout.index[name]]]
            assert isinstance(family, TableFamily)
            for labels, amount in series.items():
                family.inc(slot, labels, amount)

    def _record(self, result: ProbeResult, outcome: str, duration: float, attempts: int) -> None:
        table = self.row.table
        if table is None:  # the target left while its probe ran
            return
        layout, slot, families = self.source.layout, self.row.slot, table.ordered
        values = result.values
        for (name, default, counted), position in zip(layout.entries, layout.positions, strict=True):
            if counted:
                continue
            family = families[position]
            assert isinstance(family, TableFamily)
            series = values.get(name)
            if series is None:
                if default is not None:
                    family.set(slot, (), default)
                else:
                    family.clear(slot)
            elif len(series) == 1 and () in series:
                family.set(slot, (), series[()])
            else:
                family.replace(slot, series)
        key = layout.result_keys[outcome]
        _scalar(families[layout.success]).set(slot, (), 1.0 if outcome == "success" else 0.0)
        _scalar(families[layout.probes]).inc(slot, key)
        if layout.duration is not None:
            _scalar(families[layout.duration]).set(slot, (), duration)
        if layout.last is not None:
            _scalar(families[layout.last]).replace(slot, layout.last_result_series[outcome])
        if layout.latency is not None:
            latency = families[layout.latency]
            assert isinstance(latency, TableHistogram)
            latency.observe(slot, (), duration)
        if layout.retries is not None:
            _scalar(families[layout.retries]).set(slot, (), attempts - 1)


def _forget_frames(exc: BaseException) -> None:
    """Drop the tracebacks of a failed attempt's exception and of those it was raised from. Their frames hold the
    probe's connection, and what holds the exception (the asyncio future it went through, a StreamReader) closes a
    reference cycle over them: the collector would free it, but not once the agent froze it in flight
    (agent.runtime.heap). Nothing reads them: a failure is its result and reason."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        found = pending.pop()
        if found is None or id(found) in seen:
            continue
        seen.add(id(found))
        found.__traceback__ = None
        pending += (found.__context__, found.__cause__)


def _scalar(family: AnyTableFamily) -> TableFamily:
    assert isinstance(family, TableFamily)
    return family
