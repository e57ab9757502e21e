"""The agent's own series store and the prometheus_client Collector that exposes it.

Sources write plain numbers into ``Family`` objects (a dict per family, keyed by label values) instead of
prometheus_client metric objects: an update is one dict operation, with no lock and no per-call object, so
hot paths (a batch of log lines, a probe) stay cheap. prometheus_client is used only to render the exposition
formats, from a snapshot taken on the event loop.

Families are owned by groups (one per source, one for the agent itself). Removing a source drops its group;
a source that survives a reload keeps its group and so its counters. Families with the same name in several
groups (``probe_success`` of every HTTP source) are merged at exposition.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

Kind = Literal["counter", "gauge", "histogram"]
LabelValues = tuple[str, ...]

DEFAULT_MAX_SERIES = 10_000


class Family:
    """One metric family owned by one group.

    Counters and gauges keep ``values[label_values] = float``. Histograms keep, per label set, a list of
    per-bucket (non-cumulative) counts, one more than there are bounds (the last is +Inf), and the sum at the
    end. New label sets beyond ``max_series`` are refused and counted in ``dropped``, never stored.
    """

    __slots__ = ("name", "documentation", "kind", "labelnames", "bounds", "max_series", "values", "dropped")

    def __init__(
        self,
        name: str,
        documentation: str,
        kind: Kind,
        labelnames: Iterable[str] = (),
        bounds: Iterable[float] = (),
        max_series: int = DEFAULT_MAX_SERIES,
    ):
        self.name = name
        self.documentation = documentation
        self.kind = kind
        self.labelnames: tuple[str, ...] = tuple(labelnames)
        self.bounds: tuple[float, ...] = tuple(bounds)
        self.max_series = max_series
        self.values: dict[LabelValues, float | list[float]] = {}
        self.dropped = 0.0

    def _admit(self, labels: LabelValues, amount: float = 1.0) -> bool:
        if labels in self.values:
            return True
        if len(self.values) >= self.max_series:
            self.dropped += amount
            return False
        return True

    def inc(self, labels: LabelValues = (), amount: float = 1.0) -> None:
        """Add to a counter (or gauge). Negative amounts on counters are the caller's bug."""
        values = self.values
        if labels in values:
            values[labels] += amount  # type: ignore[operator]
        elif self._admit(labels):
            values[labels] = amount

    def set(self, labels: LabelValues = (), value: float = 0.0) -> None:
        if labels in self.values or self._admit(labels):
            self.values[labels] = value

    def ensure(self, labels: LabelValues = ()) -> None:
        """Make a series exist at zero, so ``increase()`` sees its first event (counters born at 0)."""
        if labels not in self.values and self._admit(labels):
            self.values[labels] = self._zero()

    def observe(self, labels: LabelValues, value: float) -> None:
        state = self._histogram(labels)
        if state is not None:
            state[bisect.bisect_left(self.bounds, value)] += 1
            state[-1] += value

    def merge_histogram(self, labels: LabelValues, bucket_counts: list[float], total: float) -> None:
        """Add pre-aggregated observations: per-bucket counts (len(bounds)+1, non-cumulative) and their sum."""
        state = self._histogram(labels, sum(bucket_counts))
        if state is not None:
            for index, count in enumerate(bucket_counts):
                state[index] += count
            state[-1] += total

    def remove(self, labels: LabelValues) -> None:
        self.values.pop(labels, None)

    def clear(self) -> None:
        self.values.clear()

    def _zero(self) -> float | list[float]:
        return [0.0] * (len(self.bounds) + 2) if self.kind == "histogram" else 0.0

    def _histogram(self, labels: LabelValues, amount: float = 1.0) -> list[float] | None:
        state = self.values.get(labels)
        if state is None:
            if not self._admit(labels, amount):
                return None
            state = self.values[labels] = self._zero()
        return state  # type: ignore[return-value]

    def snapshot(self) -> dict[LabelValues, float | list[float]]:
        if self.kind == "histogram":
            return {labels: list(state) for labels, state in self.values.items()}  # type: ignore[arg-type]
        return self.values.copy()


class Group:
    """The families one owner (a source, or the agent itself) writes."""

    def __init__(self, owner: str):
        self.owner = owner
        self.families: dict[str, Family] = {}

    def _family(self, name: str, documentation: str, kind: Kind, labelnames: Iterable[str],
                bounds: Iterable[float] = (), max_series: int = DEFAULT_MAX_SERIES) -> Family:
        existing = self.families.get(name)
        if existing is not None:
            if existing.kind != kind or existing.labelnames != tuple(labelnames):
                raise ValueError(f"metric {name} already registered by {self.owner} with another type or labels")
            return existing
        family = self.families[name] = Family(name, documentation, kind, labelnames, bounds, max_series)
        return family

    def counter(self, name: str, documentation: str, labelnames: Iterable[str] = (),
                max_series: int = DEFAULT_MAX_SERIES) -> Family:
        """A counter; ``name`` is given without the ``_total`` suffix the exposition adds."""
        return self._family(name, documentation, "counter", labelnames, max_series=max_series)

    def gauge(self, name: str, documentation: str, labelnames: Iterable[str] = (),
              max_series: int = DEFAULT_MAX_SERIES) -> Family:
        return self._family(name, documentation, "gauge", labelnames, max_series=max_series)

    def histogram(self, name: str, documentation: str, labelnames: Iterable[str], bounds: Iterable[float],
                  max_series: int = DEFAULT_MAX_SERIES) -> Family:
        return self._family(name, documentation, "histogram", labelnames, sorted(bounds), max_series)


@dataclass
class Snapshot:
    """A copy of every family's values, taken on the event loop and rendered anywhere."""

    families: list[tuple[Family, dict[LabelValues, float | list[float]]]] = field(default_factory=list)
    const_labels: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, float] = field(default_factory=dict)


class Store:
    """All groups, plus the labels added to every exported series."""

    def __init__(self, const_labels: dict[str, str] | None = None):
        self.groups: dict[str, Group] = {}
        self.const_labels: dict[str, str] = dict(const_labels or {})

    def group(self, owner: str) -> Group:
        group = self.groups.get(owner)
        if group is None:
            group = self.groups[owner] = Group(owner)
        return group

    def drop_group(self, owner: str) -> None:
        self.groups.pop(owner, None)

    def snapshot(self) -> Snapshot:
        snap = Snapshot(const_labels=dict(self.const_labels))
        for group in list(self.groups.values()):
            for family in list(group.families.values()):
                snap.families.append((family, family.snapshot()))
                if family.dropped:
                    snap.dropped[family.name] = snap.dropped.get(family.name, 0.0) + family.dropped
        return snap


def render_families(snap: Snapshot) -> Iterator[Metric]:
    """prometheus_client metric families for a snapshot; same-named families of several groups are merged.

    Samples carry their own label dicts, so groups whose families have different label names (two HTTP
    sources, one with `labels: {team: x}`) merge correctly. A series' own labels win over the constant
    (global) labels of the same name.
    """
    merged: dict[str, Metric] = {}
    for family, values in snap.families:
        constant = {k: v for k, v in snap.const_labels.items() if k not in family.labelnames}
        metric = merged.get(family.name)
        if metric is None:
            metric = merged[family.name] = Metric(family.name, family.documentation, family.kind)
        metric.samples.extend(_samples(family, values, constant))
    if snap.dropped:
        dropped = Metric("kpi_agent_series_dropped", "New label sets refused because a metric reached its series limit",
                         "counter")
        constant = {k: v for k, v in snap.const_labels.items() if k != "metric"}
        dropped.samples.extend(Sample("kpi_agent_series_dropped_total", {"metric": name, **constant}, count)
                               for name, count in sorted(snap.dropped.items()))
        merged[dropped.name] = dropped
    yield from merged.values()


def _samples(family: Family, values: dict[LabelValues, float | list[float]],
             constant: dict[str, str]) -> Iterator[Sample]:
    names = family.labelnames
    if family.kind == "histogram":
        bounds = [floatToGoString(b) for b in (*family.bounds, math.inf)]
        for labels, state in values.items():
            base = {**dict(zip(names, labels, strict=False)), **constant}
            cumulative = 0.0
            # state ends with the sum, one more item than there are bounds
            for bound, count in zip(bounds, state, strict=False):  # type: ignore[arg-type]
                cumulative += count
                yield Sample(f"{family.name}_bucket", {**base, "le": bound}, cumulative)
            yield Sample(f"{family.name}_count", base, cumulative)
            yield Sample(f"{family.name}_sum", base, state[-1])  # type: ignore[index]
        return
    name = f"{family.name}_total" if family.kind == "counter" else family.name
    for labels, value in values.items():
        yield Sample(name, {**dict(zip(names, labels, strict=False)), **constant}, value)  # type: ignore[arg-type]


class SnapshotCollector(Collector):
    """Yields the families of one snapshot; safe to render from a worker thread."""

    def __init__(self, snap: Snapshot):
        self._snap = snap

    def collect(self) -> Iterator[Metric]:
        return render_families(self._snap)
