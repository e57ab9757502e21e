"""One metric family: what it is (``FamilySpec``: name, kind, label names, buckets, declared before any sample)
and its series (``Family``, ``HistogramFamily``: a dict keyed by label values, so an update is one dict
operation). A new label set is checked as it enters, the one place it is: one value per label name (a mismatch
is a bug: it raises), label values the exposition cannot encode repaired, and none beyond the family's series
limit (counted, never stored). How the families of every source live together is ``agent.series.store``'s.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from agent.text import encodable

Kind = Literal["counter", "gauge", "histogram"]
LabelValues = tuple[str, ...]

DEFAULT_MAX_SERIES = 10_000
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class SchemaError(ValueError):
    """A family or group that would break the exposition (a duplicate, a clash): a bug where it is raised,
    since configuration checks refuse every such case first."""


@dataclass(frozen=True)
class FamilySpec:
    """What a family is, known before any source exists: config checks, ``rules check`` and the store all
    read it. ``name`` is the family name of the exposition (counters without ``_total``)."""

    name: str
    kind: Kind
    documentation: str
    labelnames: tuple[str, ...] = ()
    bounds: tuple[float, ...] = ()  # histograms: upper bounds, sorted, without +Inf

    # cached: a config of ten thousand sources asks each of its few specs these questions ten thousand times
    @functools.cached_property
    def sample_names(self) -> tuple[str, ...]:
        if self.kind == "counter":
            return (f"{self.name}_total",)
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_count", f"{self.name}_sum")
        return (self.name,)

    @functools.cached_property
    def exposed(self) -> tuple[str, ...]:
        """The family name and its sample names: no other family may expose one of them."""
        return (self.name, *self.sample_names)

    @functools.cached_property
    def _schema(self) -> tuple[str, tuple[str, ...], tuple[float, ...]]:
        return self.kind, self.labelnames, self.bounds

    def schema(self) -> tuple[str, tuple[str, ...], tuple[float, ...]]:
        return self._schema

    def __hash__(self) -> int:
        return self._hash

    @functools.cached_property
    def _hash(self) -> int:
        return hash((self.name, self.kind, self.documentation, self.labelnames, self.bounds))


def counter(name: str, documentation: str, labelnames: Iterable[str] = ()) -> FamilySpec:
    """A counter spec from its exposed name (``requests_total``) or its family name (``requests``)."""
    return FamilySpec(name.removesuffix("_total"), "counter", documentation, tuple(labelnames))


def gauge(name: str, documentation: str, labelnames: Iterable[str] = ()) -> FamilySpec:
    return FamilySpec(name, "gauge", documentation, tuple(labelnames))


def histogram(name: str, documentation: str, labelnames: Iterable[str] = (),
              bounds: Iterable[float] = DEFAULT_BUCKETS) -> FamilySpec:
    return FamilySpec(name, "histogram", documentation, tuple(labelnames), tuple(sorted(bounds)))


def shown(spec: FamilySpec) -> str:
    """The name a user writes for the family: counters with their _total."""
    return spec.sample_names[0] if spec.kind == "counter" else spec.name


def describe(spec: FamilySpec) -> str:
    labels = f" with labels ({', '.join(spec.labelnames)})" if spec.labelnames else " without labels"
    buckets = f" and buckets {list(spec.bounds)}" if spec.kind == "histogram" else ""
    return f"{shown(spec)} is a {spec.kind}{labels}{buckets}"


V = TypeVar("V")


class _Family(Generic[V]):
    """Shared by both family shapes: admission of new label sets, the one place they are checked."""

    __slots__ = ("spec", "max_series", "values", "dropped")

    def __init__(self, spec: FamilySpec, max_series: int = DEFAULT_MAX_SERIES):
        self.spec = spec
        self.max_series = max_series
        self.values: dict[LabelValues, V] = {}
        self.dropped = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    def _key(self, labels: LabelValues) -> LabelValues:
        """The key a label set is stored under (checked and repaired)."""
        if len(labels) != len(self.spec.labelnames):
            raise SchemaError(f"{self.spec.name}: {len(labels)} label values for label names "
                              f"{self.spec.labelnames}")
        key = tuple(labels)
        for value in key:
            if not value.isascii():  # only non-ASCII text can hold a lone surrogate
                return tuple(encodable(value) for value in labels)
        return key

    def _admit(self, labels: LabelValues, amount: float) -> LabelValues | None:
        """The key a new label set is stored under, or None (counted) when the family is full."""
        key = self._key(labels)
        if key not in self.values and len(self.values) >= self.max_series:
            self.dropped += amount
            return None
        return key

    def remove(self, labels: LabelValues) -> None:
        self.values.pop(labels, None)

    def clear(self) -> None:
        self.values.clear()


class Family(_Family[float]):
    """A counter or gauge: ``values[label_values] = float``."""

    __slots__ = ()  # ten thousand targets hold twenty families each: no __dict__ per family

    def inc(self, labels: LabelValues = (), amount: float = 1.0) -> None:
        """Add to a counter (or gauge). Callers never pass negative amounts to counters."""
        values = self.values
        if labels in values:
            values[labels] += amount
        elif (key := self._admit(labels, amount)) is not None:
            values[key] = values.get(key, 0.0) + amount

    def set(self, labels: LabelValues = (), value: float = 0.0) -> None:
        if labels in self.values:
            self.values[labels] = value
        elif (key := self._admit(labels, 1.0)) is not None:
            self.values[key] = value

    def ensure(self, labels: LabelValues = ()) -> None:
        """Make a series exist at zero, so ``increase()`` sees its first event (counters born at 0)."""
        if labels not in self.values and (key := self._admit(labels, 0.0)) is not None:
            self.values.setdefault(key, 0.0)

    def replace(self, series: dict[LabelValues, float]) -> None:
        """Make exactly these series exist, in one step: a scrape sees the series before or after, never a
        family half cleared (use this, not clear() then set(), for a set of series that changes)."""
        fresh: dict[LabelValues, float] = {}
        for labels, value in series.items():
            key = self._key(labels)
            if key not in fresh and len(fresh) >= self.max_series:
                self.dropped += 1.0
                continue
            fresh[key] = value
        self.values = fresh

    def snapshot(self) -> dict[LabelValues, float]:
        """A copy of the series; one C-level copy, so another thread cannot see it half written."""
        return self.values.copy()


class HistogramFamily(_Family[list[float]]):
    """Per label set, per-bucket (non-cumulative) counts, one more than there are bounds (the last is +Inf),
    then the sum of the observations."""

    __slots__ = ()

    def _state(self, labels: LabelValues, amount: float) -> list[float] | None:
        state = self.values.get(labels)
        if state is None:
            key = self._admit(labels, amount)
            if key is None:
                return None
            state = self.values.setdefault(key, [0.0] * (len(self.spec.bounds) + 2))
        return state

    def observe(self, labels: LabelValues, value: float) -> None:
        state = self._state(labels, 1.0)
        if state is not None:
            state[bisect.bisect_left(self.spec.bounds, value)] += 1
            state[-1] += value

    def merge(self, labels: LabelValues, bucket_counts: Iterable[float], total: float) -> None:
        """Add pre-aggregated observations: per-bucket counts (len(bounds)+1, non-cumulative) and their sum."""
        counts = list(bucket_counts)
        state = self._state(labels, sum(counts))
        if state is not None:
            for index, count in enumerate(counts):
                state[index] += count
            state[-1] += total

    def ensure(self, labels: LabelValues = ()) -> None:
        self._state(labels, 0.0)

    def snapshot(self) -> dict[LabelValues, list[float]]:
        """A copy of the series (the list of label sets, then each state, each in one C-level copy)."""
        return {labels: state[:] for labels, state in list(self.values.items())}


AnyFamily = Family | HistogramFamily
