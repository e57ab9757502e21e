"""The agent's own series store.

Sources write plain numbers into families (a dict per family, keyed by label values) instead of client-library
metric objects: an update is one dict operation, with no lock and no per-call object, so hot paths (a batch of
log lines, a probe) stay cheap. A scrape lists the attached groups on the event loop (``Store.snapshot``) and
``agent.series.exposition`` writes the page in slices, copying each family whole as it goes (see ``Snapshot``).

Every check sits where a series or a family enters, never on the update path:

- a family is declared by a ``FamilySpec`` (name, kind, label names, buckets) before any sample;
- a new label set must have one value per label name (a mismatch is a bug: it raises), label values that
  cannot be encoded (lone surrogates from a hostile log line) are repaired, and a family refuses label sets
  beyond its series limit (counted, never stored): ``agent.series.family``;
- a group (one source's series, or the agent's own) has constant labels, among them identity labels whose
  values no other group holding the same family shares (``target="shop"``, ``source="nginx"``); families of
  one name in several groups agree on kind, label names and buckets, and no two families expose a sample name
  twice.

Together these make a duplicate series impossible: within a family, label sets are dict keys; across groups,
every series carries its group's identity labels. ``Store.swap`` checks a set of new groups against what stays
before anything changes, so a reload can refuse a bad set and keep the running one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from agent.series.family import (
    DEFAULT_MAX_SERIES,
    AnyFamily,
    Family,
    FamilySpec,
    HistogramFamily,
    Kind,
    SchemaError,
    counter,
    describe,
    shown,
)
from agent.text import encodable

Identity = tuple[tuple[str, str], ...]  # (label name, value) pairs, sorted by name


def _both_expose(spec: FamilySpec, name: str, other: FamilySpec) -> str:
    return f"{shown(spec)} would expose {name}, which the {other.kind} {shown(other)} exposes too"


def _disagree(spec: FamilySpec, other: FamilySpec, where: str) -> str:
    return (f"{describe(spec)} here, but {describe(other)} in {where}: one name has one type, one label set and "
            "one set of buckets")


class Group:
    """The families one owner writes, and the constant labels on every one of its series.

    ``identity`` names the labels of ``const_labels`` that tell this group's series from every other group's
    (``target`` for an HTTP source's probes, ``source`` and ``target`` for a target an HTTP source discovered,
    ``source`` for a log source's data and every source's self-metrics). A group is usually built detached, then
    attached by ``Store.swap``, which checks it against the attached ones.
    """

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
        self._keys: dict[tuple[str, ...], tuple[str | None, ...]] = {}
        self.families: dict[str, AnyFamily] = {}
        self._exposed: dict[str, str] = {}  # family and sample names of this group's families -> family name
        self.store: Store | None = None

    def register(self, spec: FamilySpec, max_series: int = DEFAULT_MAX_SERIES) -> AnyFamily:
        """The family of ``spec`` (the existing one if registered before with the same schema)."""
        existing = self.families.get(spec.name)
        if existing is not None:
            if existing.spec.schema() != spec.schema():
                raise SchemaError(_disagree(spec, existing.spec, self.owner))
            return existing
        if spec.labelnames and not self.const_labels.keys().isdisjoint(spec.labelnames):
            clash = sorted(set(spec.labelnames) & set(self.const_labels))
            raise SchemaError(f"{shown(spec)}: labels {clash} are also set on every series of {self.owner}")
        # two families of one group never expose one name (a histogram ``h`` beside a gauge ``h_count``)
        if not self._exposed.keys().isdisjoint(spec.exposed):
            shared = sorted(name for name in spec.exposed if name in self._exposed)
            raise SchemaError(_both_expose(spec, shared[0], self.families[self._exposed[shared[0]]].spec))
        if self.store is not None:
            self.store._index.check(self, spec)
            self.store._index.insert(self, spec)
        family: AnyFamily = HistogramFamily(spec, max_series) if spec.kind == "histogram" else \
            Family(spec, max_series)
        self.families[spec.name] = family
        for name in spec.exposed:
            self._exposed[name] = spec.name
        return family

    def key(self, names: tuple[str, ...]) -> tuple[str | None, ...]:
        """This group's values of ``names`` (None where it has no such constant label)."""
        key = self._keys.get(names)
        if key is None:
            key = self._keys[names] = tuple(self.const_labels.get(name) for name in names)
        return key

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


def _some(owners: Iterable[str], limit: int = 3) -> str:
    """A few owners for a message (there can be ten thousand)."""
    listed = sorted(owners)
    more = f" and {len(listed) - limit} more" if len(listed) > limit else ""
    return ", ".join(listed[:limit]) + more


_RESERVED = "<reserved>"


class _Holders:
    """The groups that hold one family name, indexed so that checking a new one costs the same with ten
    thousand holders as with one.

    Two groups can only expose the same series if they agree on the value of every identity label either of
    them has (identity labels are never family labels nor global labels). Groups with the same identity label
    names never share their values, so per set of names one lookup finds the only candidate.
    """

    __slots__ = ("groups", "anonymous", "by_identity")

    def __init__(self) -> None:
        self.groups: dict[str, Group | None] = {}  # owner -> group (None: a family the agent exposes itself)
        self.anonymous: set[str] = set()  # owners whose group has no identity
        self.by_identity: dict[tuple[str, ...], dict[tuple[str | None, ...], Group]] = {}  # names -> values -> group

    def clash(self, group: Group) -> str | None:
        """The owner of a holder whose series could be ``group``'s, if any."""
        if group.identity is None or self.anonymous:
            others = self.groups if group.identity is None else self.anonymous
            return next((owner for owner in others if owner != group.owner), None)
        for names, holders in self.by_identity.items():
            other = holders.get(group.identity_values if names == group.identity_names else group.key(names))
            if other is not None and other.owner != group.owner and \
                    all(other.const_labels.get(name) == value for name, value in group.identity):
                return other.owner
        return None

    def insert(self, owner: str, group: Group | None) -> None:
        self.groups[owner] = group
        if group is None or group.identity is None:
            self.anonymous.add(owner)
        else:
            holders = self.by_identity.get(group.identity_names)
            if holders is None:
                holders = self.by_identity[group.identity_names] = {}
            holders[group.identity_values] = group

    def remove(self, group: Group) -> None:
        self.groups.pop(group.owner, None)
        self.anonymous.discard(group.owner)
        if group.identity is not None:
            holders = self.by_identity.get(group.identity_names, {})
            if holders.get(group.identity_values) is group:
                del holders[group.identity_values]
                if not holders:
                    del self.by_identity[group.identity_names]


class _Index:
    """Which groups hold which family names, for the checks that span groups. Updated per group, so a reload
    that swaps one source costs that source's families, not every family of the agent."""

    def __init__(self) -> None:
        self.specs: dict[str, FamilySpec] = {}  # family name -> the spec its holders agree on
        self.holders: dict[str, _Holders] = {}  # family name -> the groups holding it
        self.names: dict[str, str] = {}  # family and sample names -> the family exposing them

    def check(self, group: Group, spec: FamilySpec) -> None:
        known = self.specs.get(spec.name)
        holders = self.holders.get(spec.name)
        if holders is not None:
            if _RESERVED in holders.groups:
                raise SchemaError(f"{shown(spec)} is a name the agent exposes itself")
            if known is not None and known is not spec and known.schema() != spec.schema():
                raise SchemaError(_disagree(spec, known, _some(o for o in holders.groups if o != group.owner)))
            other = holders.clash(group)
            if other is not None:
                raise SchemaError(f"{shown(spec)}: {group.owner} and {other} would expose the same series")
        if known is spec:
            return  # its names were checked when it was first indexed, and are still its own
        for name in spec.exposed:
            family = self.names.get(name)
            if family is not None and family != spec.name:
                raise SchemaError(_both_expose(spec, name, self.specs[family]))

    def insert(self, group: Group | None, spec: FamilySpec) -> None:
        holders = self.holders.get(spec.name)
        if holders is None:
            holders = self.holders[spec.name] = _Holders()
            self.specs[spec.name] = spec
            for name in spec.exposed:
                self.names[name] = spec.name
        holders.insert(group.owner if group else _RESERVED, group)

    def add(self, group: Group) -> None:
        """Index every family of ``group``, or raise SchemaError having indexed none."""
        for family in group.families.values():
            self.check(group, family.spec)
        for family in group.families.values():
            self.insert(group, family.spec)

    def remove(self, group: Group) -> None:
        for name, family in group.families.items():
            holders = self.holders.get(name)
            if holders is None or holders.groups.get(group.owner) is not group:
                continue
            holders.remove(group)
            if not holders.groups:
                del self.holders[name]
                self.specs.pop(name, None)
                for exposed in family.spec.exposed:
                    if self.names.get(exposed) == name:
                        del self.names[exposed]


@dataclass
class Snapshot:
    """The groups attached at one moment and the global labels: one list copy, no series copied.

    The series themselves are copied as they are written, one family at a time, between which other tasks run:
    copying the 150,000 families of ten thousand targets in one go blocked the event loop for up to 0.8 s per
    scrape, and every probe due meanwhile started late. Each family is copied with one C-level operation (so
    even from another thread it is never seen half written: the GIL), and sets of series that change are
    replaced in one step (``Family.replace``), so a family is never written half updated. Families are not
    read at one instant with each other, as in every Prometheus client library.
    """

    groups: list[Group] = field(default_factory=list)
    const_labels: dict[str, str] = field(default_factory=dict)

    def families(self) -> Iterator[tuple[dict[str, str], AnyFamily]]:
        """Each family of each group, with its group's constant labels; the caller copies a family's series
        (``snapshot()``) when it writes them."""
        for group in self.groups:
            for family in list(group.families.values()):
                yield group.const_labels, family


class Store:
    """All attached groups, plus the labels added to every exported series (the global labels).

    ``reserved`` are families exposed by other means (the process collector, ``kpi_agent_series_dropped``):
    no group may take their names.
    """

    def __init__(self, const_labels: dict[str, str] | None = None, reserved: Iterable[FamilySpec] = ()):
        self.groups: dict[str, Group] = {}
        self.const_labels: dict[str, str] = {k: encodable(v) for k, v in (const_labels or {}).items()}
        self._index = _Index()
        for spec in (*reserved, SERIES_DROPPED):
            self._index.insert(None, spec)

    def group(self, owner: str, const_labels: dict[str, str] | None = None,
              identity: str | tuple[str, ...] | None = None) -> Group:
        """The attached group of ``owner``, created and attached if new."""
        group = self.groups.get(owner)
        if group is None:
            group = Group(owner, const_labels, identity)
            self.swap(add=[group])
        return group

    def swap(self, remove: Iterable[str] = (), add: Iterable[Group] = ()) -> None:
        """Detach the groups named in ``remove`` and attach the groups of ``add`` at once, or raise SchemaError
        and change nothing."""
        removed = [self.groups[owner] for owner in dict.fromkeys(remove) if owner in self.groups]
        removed_owners = {group.owner for group in removed}
        for group in removed:
            self._index.remove(group)
        added: list[Group] = []
        try:
            for group in add:
                if group.owner in self.groups and group.owner not in removed_owners:
                    raise SchemaError(f"group {group.owner} is already attached")
                self._index.add(group)
                added.append(group)
        except SchemaError:
            for group in added:
                self._index.remove(group)
            for group in removed:
                self._index.add(group)
            raise
        for group in removed:
            del self.groups[group.owner]
            group.store = None
        for group in added:
            self.groups[group.owner] = group
            group.store = self

    def snapshot(self) -> Snapshot:
        return Snapshot(list(self.groups.values()), dict(self.const_labels))


SERIES_DROPPED = counter("kpi_agent_series_dropped_total",
                         "New label sets refused because a metric reached its series limit", ["metric"])
