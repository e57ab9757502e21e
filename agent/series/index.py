"""The store's index: which groups and tables hold which family names, for the checks that span them (families
of one name agree; no two holders could expose the same series; no two families expose one sample name).
Updated per holder, so a reload that swaps one source costs that source's families, not every family of the
agent; a row entering a table is checked against the other holders of the table's families.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.series.family import FamilySpec, SchemaError, shown
from agent.series.group import Group, Identified, both_expose, disagree
from agent.series.table import Table

Holder = Group | Table


def _some(owners: Iterable[str], limit: int = 3) -> str:
    """A few owners for a message (there can be ten thousand)."""
    listed = sorted(owners)
    more = f" and {len(listed) - limit} more" if len(listed) > limit else ""
    return ", ".join(listed[:limit]) + more


RESERVED = "<reserved>"


class Holders:
    """The groups and tables that hold one family name, indexed so that checking a new one costs the same with
    ten thousand holders as with one.

    Two owners can only expose the same series if they agree on the value of every identity label either of
    them has (identity labels are never family labels nor global labels). Groups with the same identity label
    names never share their values, so per set of names one lookup finds the only candidate; a table is asked
    for the one row that could match (rows of one table differ by their row label).
    """

    __slots__ = ("holders", "anonymous", "by_identity", "tables")

    def __init__(self) -> None:
        self.holders: dict[str, Holder | None] = {}  # owner -> holder (None: a family the agent exposes itself)
        self.anonymous: set[str] = set()  # owners of groups without identity
        self.by_identity: dict[tuple[str, ...], dict[tuple[str | None, ...], Group]] = {}  # names -> values -> group
        self.tables: list[Table] = []

    def clash(self, bearer: Identified, within: Table | None = None) -> str | None:
        """The owner of a holder whose series could be ``bearer``'s (a group, or a row of ``within``), if any."""
        if bearer.identity is None or self.anonymous:
            others = self.holders if bearer.identity is None else self.anonymous
            return next((owner for owner in others if owner != bearer.owner), None)
        for names, holders in self.by_identity.items():
            other = holders.get(bearer.identity_values if names == bearer.identity_names else bearer.key(names))
            if other is not None and other.owner != bearer.owner and \
                    all(other.const_labels.get(name) == value for name, value in bearer.identity):
                return other.owner
        for table in self.tables:
            if table is not within and table.owner != bearer.owner:
                key = table.find(bearer)
                if key is not None:
                    return f"{table.owner} ({table.row_label}={key!r})"
        return None

    def insert(self, owner: str, holder: Holder | None) -> None:
        self.holders[owner] = holder
        if isinstance(holder, Table):
            self.tables.append(holder)
        elif holder is None or holder.identity is None:
            self.anonymous.add(owner)
        else:
            holders = self.by_identity.get(holder.identity_names)
            if holders is None:
                holders = self.by_identity[holder.identity_names] = {}
            holders[holder.identity_values] = holder

    def remove(self, holder: Holder) -> None:
        self.holders.pop(holder.owner, None)
        self.anonymous.discard(holder.owner)
        if isinstance(holder, Table):
            self.tables.remove(holder)
        elif holder.identity is not None:
            holders = self.by_identity.get(holder.identity_names, {})
            if holders.get(holder.identity_values) is holder:
                del holders[holder.identity_values]
                if not holders:
                    del self.by_identity[holder.identity_names]


class Index:
    """Which holders hold which family names."""

    def __init__(self) -> None:
        self.specs: dict[str, FamilySpec] = {}  # family name -> the spec its holders agree on
        self.holders: dict[str, Holders] = {}  # family name -> the groups and tables holding it
        self.names: dict[str, str] = {}  # family and sample names -> the family exposing them

    def check(self, holder: Holder, spec: FamilySpec) -> None:
        """Raise SchemaError if ``holder`` may not hold ``spec`` beside the others."""
        known = self.specs.get(spec.name)
        holders = self.holders.get(spec.name)
        if holders is not None:
            if RESERVED in holders.holders:
                raise SchemaError(f"{shown(spec)} is a name the agent exposes itself")
            if known is not None and known is not spec and known.schema() != spec.schema():
                raise SchemaError(disagree(spec, known, _some(o for o in holders.holders if o != holder.owner)))
            bearers = holder.bearers() if isinstance(holder, Table) else (holder,)
            within = holder if isinstance(holder, Table) else None
            for bearer in bearers:
                other = holders.clash(bearer, within)
                if other is not None:
                    raise SchemaError(f"{shown(spec)}: {bearer.owner} and {other} would expose the same series")
        if known is spec:
            return  # its names were checked when it was first indexed, and are still its own
        for name in spec.exposed:
            family = self.names.get(name)
            if family is not None and family != spec.name:
                raise SchemaError(both_expose(spec, name, self.specs[family]))

    def check_row(self, table: Table, row: Identified) -> None:
        """Raise SchemaError if a new row of ``table`` could expose a series another holder exposes."""
        for name in table.families:
            other = self.holders[name].clash(row, table)
            if other is not None:
                raise SchemaError(f"{name}: {row.owner} and {other} would expose the same series")

    def insert(self, holder: Holder | None, spec: FamilySpec) -> None:
        holders = self.holders.get(spec.name)
        if holders is None:
            holders = self.holders[spec.name] = Holders()
            self.specs[spec.name] = spec
            for name in spec.exposed:
                self.names[name] = spec.name
        holders.insert(holder.owner if holder is not None else RESERVED, holder)

    def add(self, holder: Holder) -> None:
        """Index every family of ``holder``, or raise SchemaError having indexed none."""
        for family in holder.families.values():
            self.check(holder, family.spec)
        for family in holder.families.values():
            self.insert(holder, family.spec)

    def remove(self, holder: Holder) -> None:
        for name, family in holder.families.items():
            holders = self.holders.get(name)
            if holders is None or holders.holders.get(holder.owner) is not holder:
                continue
            holders.remove(holder)
            if not holders.holders:
                del self.holders[name]
                self.specs.pop(name, None)
                for exposed in family.spec.exposed:
                    if self.names.get(exposed) == name:
                        del self.names[exposed]
