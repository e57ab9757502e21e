"""A group: the families one owner writes (a log source's data, a source's self-metrics, the agent's own), and
the constant labels on every one of its series. How groups live together is ``agent.series.store``'s; the
series of many probed targets live in tables instead (``agent.series.table``).
"""

from __future__ import annotations

from collections.abc import Callable

from agent.series.family import (
    DEFAULT_MAX_SERIES,
    AnyFamily,
    Family,
    FamilySpec,
    HistogramFamily,
    Kind,
    SchemaError,
    describe,
    shown,
)
from agent.text import encodable

Identity = tuple[tuple[str, str], ...]  # (label name, value) pairs, sorted by name


def both_expose(spec: FamilySpec, name: str, other: FamilySpec) -> str:
    return f"{shown(spec)} would expose {name}, which the {other.kind} {shown(other)} exposes too"


def disagree(spec: FamilySpec, other: FamilySpec, where: str) -> str:
    return (f"{describe(spec)} here, but {describe(other)} in {where}: one name has one type, one label set and "
            "one set of buckets")


class Identified:
    """An owner of series and the constant labels on each of them, among which the identity labels: the ones
    whose values tell its series from every other owner's holding the same family (``target="shop"``,
    ``source="nginx"``). What the store's checks read of a group, and of each row of a table."""

    __slots__ = ("owner", "const_labels", "identity_names", "identity_values", "identity", "_keys")

    def __init__(self, owner: str, const_labels: dict[str, str] | None = None,
                 identity: str | tuple[str, ...] | None = None):
        self.owner = owner
        self.const_labels = {name: encodable(value) for name, value in (const_labels or {}).items()}
        names = (identity,) if isinstance(identity, str) else tuple(sorted(identity or ()))
        for name in names:
            if name not in self.const_labels:
                raise SchemaError(f"group {owner}: identity label {name!r} is not one of its constant labels")
        self.identity_names = names
        self.identity_values = tuple(self.const_labels[name] for name in names)
        self.identity: Identity | None = tuple(zip(names, self.identity_values, strict=True)) or None
        self._keys: dict[tuple[str, ...], tuple[str | None, ...]] | None = None

    def key(self, names: tuple[str, ...]) -> tuple[str | None, ...]:
        """This owner's values of ``names`` (None where it has no such constant label)."""
        if self._keys is None:
            self._keys = {}
        key = self._keys.get(names)
        if key is None:
            key = self._keys[names] = tuple(self.const_labels.get(name) for name in names)
        return key


class Group(Identified):
    """The families one owner writes, and the constant labels on every one of its series.

    ``identity`` names the labels of ``const_labels`` that tell this group's series from every other group's
    (``source`` for a log source's data and every source's self-metrics). A group is usually built detached,
    then attached by ``Store.swap``, which checks it against the attached ones.
    """

    __slots__ = ("families", "_exposed", "checker")

    def __init__(self, owner: str, const_labels: dict[str, str] | None = None,
                 identity: str | tuple[str, ...] | None = None):
        super().__init__(owner, const_labels, identity)
        self.families: dict[str, AnyFamily] = {}
        self._exposed: dict[str, str] = {}  # family and sample names of this group's families -> family name
        # while attached: the store's check and record of a family added to the group (raises SchemaError)
        self.checker: Callable[[Group, FamilySpec], None] | None = None

    def register(self, spec: FamilySpec, max_series: int = DEFAULT_MAX_SERIES) -> AnyFamily:
        """The family of ``spec`` (the existing one if registered before with the same schema)."""
        existing = self.families.get(spec.name)
        if existing is not None:
            if existing.spec.schema() != spec.schema():
                raise SchemaError(disagree(spec, existing.spec, self.owner))
            return existing
        if spec.labelnames and not self.const_labels.keys().isdisjoint(spec.labelnames):
            clash = sorted(set(spec.labelnames) & set(self.const_labels))
            raise SchemaError(f"{shown(spec)}: labels {clash} are also set on every series of {self.owner}")
        # two families of one group never expose one name (a histogram ``h`` beside a gauge ``h_count``)
        if not self._exposed.keys().isdisjoint(spec.exposed):
            shared = sorted(name for name in spec.exposed if name in self._exposed)
            raise SchemaError(both_expose(spec, shared[0], self.families[self._exposed[shared[0]]].spec))
        if self.checker is not None:
            self.checker(self, spec)
        family: AnyFamily = HistogramFamily(spec, max_series) if spec.kind == "histogram" else \
            Family(spec, max_series)
        self.families[spec.name] = family
        for name in spec.exposed:
            self._exposed[name] = spec.name
        return family

    def counter(self, spec: FamilySpec, max_series: int = DEFAULT_MAX_SERIES) -> Family:
        return self._scalar(spec, "counter", max_series)

    def gauge(self, spec: FamilySpec, max_series: int = DEFAULT_MAX_SERIES) -> Family:
        return self._scalar(spec, "gauge", max_series)

    def histogram(self, spec: FamilySpec, max_series: int = DEFAULT_MAX_SERIES) -> HistogramFamily:
        if spec.kind != "histogram":
            raise SchemaError(f"{spec.name} is a {spec.kind}, not a histogram")
        family = self.register(spec, max_series)
        assert isinstance(family, HistogramFamily)
        return family

    def _scalar(self, spec: FamilySpec, kind: Kind, max_series: int) -> Family:
        if spec.kind != kind:
            raise SchemaError(f"{spec.name} is a {spec.kind}, not a {kind}")
        family = self.register(spec, max_series)
        assert isinstance(family, Family)
        return family
