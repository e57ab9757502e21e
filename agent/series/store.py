"""The agent's own series store.

Sources write plain numbers into families (a dict per family, keyed by label values) instead of client-library
metric objects: an update is one dict operation, with no lock and no per-call object, so hot paths (a batch of
log lines, a probe) stay cheap. A scrape lists the attached groups on the event loop (``Store.snapshot``) and
``agent.series.exposition`` writes the page in slices, copying each family whole as it goes (see ``Snapshot``).

Probed targets keep their series in tables instead (``agent.series.table``: one row per target, a family's
series in columns), under the same guarantees. Every check sits where a series, a family or a row enters, never
on the update path:

- a family is declared by a ``FamilySpec`` (name, kind, label names, buckets) before any sample;
- a new label set must have one value per label name (a mismatch is a bug: it raises), label values that
  cannot be encoded (lone surrogates from a hostile log line) are repaired, and a family refuses label sets
  beyond its series limit (counted, never stored): ``agent.series.family``;
- a group (one source's series, or the agent's own) has constant labels, among them identity labels whose
  values no other holder of the same family shares (``source="nginx"``); a table's row has the table's and
  its own (``source="fleet", target="web-1"``), and no other holder has a series it could have; families of
  one name in several holders agree on kind, label names and buckets, and no two families expose a sample
  name twice (``agent.series.index``).

Together these make a duplicate series impossible: within a family, label sets are dict keys or columns; across
holders, every series carries its owner's identity labels. ``Store.swap`` checks a set of new groups, tables
and rows against what stays before anything changes, so a reload can refuse a bad set and keep the running
one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from agent.series.family import AnyFamily, FamilySpec, SchemaError, counter
from agent.series.group import Group
from agent.series.index import Index
from agent.series.table import RowSchema, Table, TableRow
from agent.text import encodable

Member = Group | Table | TableRow  # what Store.swap attaches: a group, a table, or a row of a shared table

__all__ = ["SERIES_DROPPED", "Group", "Member", "Snapshot", "Store", "series_count"]


@dataclass
class Snapshot:
    """The groups and tables attached at one moment and the global labels: list copies, no series copied.

    The series themselves are copied as they are written, one family at a time, between which other tasks run:
    copying the 150,000 families of ten thousand targets in one go blocked the event loop for up to 0.8 s per
    scrape, and every probe due meanwhile started late. A group's family is copied with one C-level operation
    (so even from another thread it is never seen half written: the GIL), a table's family in one synchronous
    step on the event loop, where its writers run; sets of series that change are replaced in one step
    (``Family.replace``, ``TableFamily.replace``), so a family is never written half updated. Families are not
    read at one instant with each other, as in every Prometheus client library.
    """

    holders: list[Group | Table] = field(default_factory=list)  # in the order they were attached
    const_labels: dict[str, str] = field(default_factory=dict)

    @property
    def groups(self) -> list[Group]:
        return [holder for holder in self.holders if isinstance(holder, Group)]

    @property
    def tables(self) -> list[Table]:
        return [holder for holder in self.holders if isinstance(holder, Table)]

    def families(self) -> Iterator[tuple[dict[str, str], AnyFamily]]:
        """Each family of each group, with its group's constant labels; the caller copies a family's series
        (``snapshot()``) when it writes them."""
        for group in self.groups:
            for family in list(group.families.values()):
                yield group.const_labels, family


class Store:
    """All attached groups and tables, plus the labels added to every exported series (the global labels).

    ``reserved`` are families exposed by other means (the process collector, ``kpi_agent_series_dropped``):
    no group may take their names. The rows of one-target sources (``TableRow``) live in one table per schema,
    which the store makes when the first row comes and lets go with the last.
    """

    def __init__(self, const_labels: dict[str, str] | None = None, reserved: Iterable[FamilySpec] = ()):
        self.groups: dict[str, Group] = {}
        self.tables: dict[str, Table] = {}
        self.rows: dict[str, TableRow] = {}
        self.holders: dict[str, Group | Table] = {}  # the groups and tables, in the order they were attached
        self.const_labels: dict[str, str] = {k: encodable(v) for k, v in (const_labels or {}).items()}
        self._index = Index()
        self._shared: dict[RowSchema, Table] = {}
        self._numbers = itertools.count(1)
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

    def attached(self, owner: str) -> bool:
        return owner in self.groups or owner in self.tables or owner in self.rows

    def swap(self, remove: Iterable[str] = (), add: Iterable[Member] = ()) -> None:
        """Detach the members named in ``remove`` and attach those of ``add`` at once, or raise SchemaError
        and change nothing."""
        owners = [owner for owner in dict.fromkeys(remove) if self.attached(owner)]
        holders: list[Group | Table] = [self.groups[owner] if owner in self.groups else self.tables[owner]
                                        for owner in owners if owner not in self.rows]
        rows = [self.rows[owner] for owner in owners if owner in self.rows]
        for holder in holders:
            self._index.remove(holder)
        for row in rows:
            assert row.table is not None
            row.table.forget(row.slot)
        added: list[Group | Table] = []
        placed: list[tuple[TableRow, Table, int]] = []
        shared: list[Table] = []
        # the groups and tables this swap attaches, in the order of ``add`` (and whether it made the table already)
        sequence: list[tuple[Group | Table, bool]] = []
        try:
            for member in add:
                if self.attached(member.owner) and member.owner not in owners:
                    raise SchemaError(f"group {member.owner} is already attached")
                if isinstance(member, TableRow):
                    made = member.schema not in self._shared
                    table = self._shared_table(member.schema)
                    shared.append(table)
                    if made:
                        sequence.append((table, True))
                    assert member.labels is not None, "a row the store places has its labels"
                    placed.append((member, table, table.add(member.labels)))
                else:
                    self._index.add(member)
                    added.append(member)
                    sequence.append((member, False))
        except SchemaError:
            for _, table, slot in placed:
                table.remove(slot)
            for table in shared:
                self._let_go(table)
            for holder in added:
                self._index.remove(holder)
            for row in rows:
                assert row.table is not None
                row.table.restore(row.slot)
            for holder in holders:
                self._index.add(holder)
            raise
        for holder in holders:
            self._detached(holder)
        for row in rows:
            assert row.table is not None
            table, row.table = row.table, None
            table.free(row.slot)
            del self.rows[row.owner]
            self._let_go(table)
        for holder, made in sequence:
            if made:  # a shared table for new rows, attached at once for their checks: moved to its place
                self.holders[holder.owner] = self.holders.pop(holder.owner)
            else:
                self._attached(holder)
        for row, table, slot in placed:
            row.table, row.slot = table, slot
            row.labels = None  # its table holds them now (ten thousand dicts otherwise)
            self.rows[row.owner] = row

    def _attached(self, holder: Group | Table) -> None:
        self.holders[holder.owner] = holder
        if isinstance(holder, Table):
            self.tables[holder.owner] = holder
            holder.checker = self._index.check_row
        else:
            self.groups[holder.owner] = holder
            holder.checker = self._add_family

    def _detached(self, holder: Group | Table) -> None:
        del self.holders[holder.owner]
        if isinstance(holder, Table):
            del self.tables[holder.owner]
        else:
            del self.groups[holder.owner]
        holder.checker = None

    def _add_family(self, group: Group, spec: FamilySpec) -> None:
        self._index.check(group, spec)
        self._index.insert(group, spec)

    def _shared_table(self, schema: RowSchema) -> Table:
        """The table holding the rows of ``schema``, made and attached if new (raises SchemaError when its
        families cannot be held beside the attached ones)."""
        table = self._shared.get(schema)
        if table is None:
            table = Table(f"{schema.name} #{next(self._numbers)}", schema)
            self._index.add(table)
            self._attached(table)
            self._shared[schema] = table
        return table

    def _let_go(self, table: Table) -> None:
        """Detach a shared table once its last row has gone."""
        if not len(table) and self._shared.get(table.schema) is table and not any(table.rows):
            del self._shared[table.schema]
            self._index.remove(table)
            self._detached(table)

    def snapshot(self) -> Snapshot:
        return Snapshot(list(self.holders.values()), dict(self.const_labels))


SERIES_DROPPED = counter("kpi_agent_series_dropped_total",
                         "New label sets refused because a metric reached its series limit", ["metric"])


def series_count(member: Member) -> int:
    """The series a group, a table or a row holds now (a histogram series counts once)."""
    if isinstance(member, TableRow):
        return member.table.row_series(member.slot) if member.table is not None else 0
    if isinstance(member, Table):
        return member.series_count()
    return sum(len(family.values) for family in member.families.values())
