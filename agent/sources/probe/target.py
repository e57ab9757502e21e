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

from agent.series.family import FamilySpec, HistogramFamily
from agent.series.store import Group
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
)
from agent.sources.probe.resources import probe_resources
from agent.sources.probe.result import ProbeFailed, ProbeResult

if TYPE_CHECKING:
    from agent.sources.base import SourceContext, SourceStats
    from agent.sources.probe.config import ProbeConfig
    from agent.sources.probe.kind import Prober, ProberKind

log = logging.getLogger("agent.sources.probe")

REASON_LIMIT = 300
_COMMON = frozenset({SUCCESS.name, DURATION.name, PROBES.name, LAST_RESULT.name, LATENCY.name, RETRIES.name,
                     ATTEMPTS_TOTAL.name})


class Layout:
    """How a target's series are laid out, decided once per kind and set of exported families and shared by
    every target of every source with that layout (ten thousand one-URL sources share one): which families the
    kind writes and with which default, which grow across probes, and the label tuples of each result."""

    __slots__ = ("wanted", "kind_specs", "entries", "index", "result_keys", "last_result_series")

    def __init__(self, kind: ProberKind[Any, Any], specs: tuple[FamilySpec, ...]):
        self.wanted = frozenset(spec.name for spec in specs)
        self.kind_specs = tuple(spec for spec in specs if spec.name not in _COMMON)
        counted = frozenset(spec.name for spec in kind.probe_families if spec.kind == "counter")
        defaults = {spec.name: value for spec, value in kind.always.items()}
        # per kind family: (name, default value or None, kept across probes)
        self.entries = tuple((spec.name, defaults.get(spec.name), spec.name in counted) for spec in self.kind_specs)
        self.index = {spec.name: position for position, spec in enumerate(self.kind_specs)}
        self.result_keys: dict[str, tuple[str, ...]] = {result: (result,) for result in kind.result_labels}
        self.last_result_series = {result: {key: 1.0} for result, key in self.result_keys.items()}


@functools.lru_cache(maxsize=64)
def layout(kind: ProberKind[Any, Any], specs: tuple[FamilySpec, ...]) -> Layout:
    return Layout(kind, specs)


class SourceProbe:
    """What every target of one source shares: its kind and config, its compiled prober, the agent's probe
    resources, and the layout of a target's families."""

    def __init__(self, kind: ProberKind[Any, Any], config: ProbeConfig[Any], stats: SourceStats,
                 context: SourceContext):
        self.kind = kind
        self.config = config
        self.name = config.name
        self.stats = stats
        self.resources = probe_resources(context)
        self.prober: Prober = kind.prober(config.module, kind.shared(context), stats.group)
        self.faults: tuple[type[BaseException], ...] = getattr(self.prober, "faults", TARGET_FAULTS)
        self.explain: Callable[[BaseException, str, float], tuple[str, str] | None] | None = \
            getattr(self.prober, "explain", None)
        self.layout = layout(kind, tuple(declared.spec for declared in kind.families(config)))
        self.skipped = stats.group.counter(PROBES_SKIPPED)
        self.skipped.ensure(())

    def reason(self, exc: BaseException, target: str) -> tuple[str, str]:
        worded = self.explain(exc, target, self.config.timeout) if self.explain is not None else None
        return worded or explain(exc, self.config.timeout)


class ProbeTarget:
    """One target of a source: probes it and keeps its series in its own data group."""

    __slots__ = ("source", "target", "group", "name", "key", "interval", "_families", "_success", "_duration",
                 "_probes", "_last", "_latency", "_retries", "_attempts_total", "last_result", "last_error")

    def __init__(self, source: SourceProbe, target: str, group: Group, name: str, key: str):
        self.source = source
        self.target = target  # what the prober is given
        self.group = group
        self.name = name  # the target label
        self.key = key  # its hash places the target in the interval
        self.interval = source.config.interval
        layout = source.layout
        wanted = layout.wanted
        # the kind's families, in the order of layout.entries
        self._families = tuple(group.gauge(spec) if spec.kind == "gauge" else group.counter(spec)
                               for spec in layout.kind_specs)
        for (_, _, counted), family in zip(layout.entries, self._families, strict=True):
            if counted and not family.spec.labelnames:
                family.ensure(())  # born at 0, so increase() sees the first packets
        self._success = group.gauge(SUCCESS)
        self._probes = group.counter(PROBES)
        for labels in layout.result_keys.values():
            self._probes.ensure(labels)
        self._duration = group.gauge(DURATION) if DURATION.name in wanted else None
        self._last = group.gauge(LAST_RESULT) if LAST_RESULT.name in wanted else None
        self._latency: HistogramFamily | None = group.histogram(LATENCY) if LATENCY.name in wanted else None
        if self._latency is not None:
            self._latency.ensure(())
        self._retries = group.gauge(RETRIES) if RETRIES.name in wanted else None
        self._attempts_total = group.counter(ATTEMPTS_TOTAL) if ATTEMPTS_TOTAL.name in wanted else None
        if self._attempts_total is not None:
            for labels in layout.result_keys.values():
                self._attempts_total.ensure(labels)
        self.last_result: str | None = None  # for the status page, and to log result changes
        self.last_error: str | None = None

    def skipped(self, ticks: int) -> None:
        """Ticks the schedule could not start: the agent's problem, counted apart from the target's results."""
        self.source.skipped.inc((), ticks)

    async def probe(self, due: float | None = None) -> str | None:
        """One probe, due at ``due`` (loop time; None: now). Records every series and returns the result label,
        or None when it was skipped because no probe slot freed up within the timeout."""
        source = self.source
        resources = source.resources
        timeout = source.config.timeout
        if not await resources.slots.acquire(timeout):
            source.skipped.inc(())
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
                if self._attempts_total is not None:
                    self._attempts_total.inc(source.layout.result_keys[outcome])
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
            return exc.result, exc.reason
        except source.faults as exc:
            return source.reason(exc, self.target)
        return "success", None

    def _count(self, counts: dict[str, dict[tuple[str, ...], float]]) -> None:
        index = self.source.layout.index
        for name, series in counts.items():
            family = self._families[index[name]]
            for labels, amount in series.items():
                family.inc(labels, amount)

    def _record(self, result: ProbeResult, outcome: str, duration: float, attempts: int) -> None:
        layout = self.source.layout
        values = result.values
        for (name, default, counted), family in zip(layout.entries, self._families, strict=True):
            if counted:
                continue
            series = values.get(name)
            if series is None:
                if default is not None:
                    family.set((), default)
                elif family.values:
                    family.replace({})
            elif len(series) == 1 and () in series:
                family.set((), series[()])
            else:
                family.replace(series)
        key = layout.result_keys[outcome]
        self._success.set((), 1.0 if outcome == "success" else 0.0)
        self._probes.inc(key)
        if self._duration is not None:
            self._duration.set((), duration)
        if self._last is not None:
            self._last.replace(layout.last_result_series[outcome])
        if self._latency is not None:
            self._latency.observe((), duration)
        if self._retries is not None:
            self._retries.set((), attempts - 1)
