"""A round's samples of the store's tables (``agent.series.table``: one row per probed target), for the sampler.

A row's series carry the labels /metrics shows (its family's, the global labels none of them override, the
table's and the row's own), then the external labels wherever the series has no label of that name. The
labels around a row's series are encoded by a template per set of row label names (rows of one source share
one or a few); the row's own values are the template's varying part (each pair encoded once: ``wire.label``
caches them). What a family sent last round is kept as the table keeps it (the rows, which cells were present,
the label sets of the rest), so series that go (a target removed, a TLS series no longer probed) get one stale
marker each without a set of every series sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from agent.push.template import Encode, Template, le_values
from agent.series.family import FamilySpec, LabelValues
from agent.series.table import AnyTableFamily, Row, Table, TableFamilyCopy, TableHistogram

Emit = Callable[[bytes, float | None], None]  # an encoded label set and its value (None: a stale marker)


class _TableSeen:
    """One family of one table as the previous round sent it."""

    __slots__ = ("table", "spec", "global_key", "templates", "columns", "column_of", "rows", "present", "sparse",
                 "round")

    def __init__(self, table: Table, family: AnyTableFamily, global_key: tuple):
        self.table = table
        self.spec = family.spec
        self.global_key = global_key
        self.templates: dict[tuple[str, ...], tuple[Template, ...]] = {}  # per set of row label names
        self.columns = sorted(family.columns, key=family.columns.__getitem__)
        self.column_of = family.columns
        self.rows: list[Row | None] = []
        self.present = b""
        self.sparse: list[frozenset[LabelValues] | None] = []
        self.round = 0

    def holds(self, slot: int, labels: LabelValues) -> bool:
        """Whether the round sent the series of row ``slot`` with these label values of the family's own."""
        column = self.column_of.get(labels)
        if column is not None:
            return bool(self.present[slot * len(self.columns) + column])
        sparse = self.sparse[slot] if slot < len(self.sparse) else None
        return sparse is not None and labels in sparse


# a series that was sent last round and is not at its place now: the entry that sent it, its row, its labels of
# the family's own
Gone = tuple[_TableSeen, Row, LabelValues]


class TableSamples:
    """The tables' part of every round of one endpoint."""

    def __init__(self, extra_labels: dict[str, str]):
        self.extra_labels = extra_labels
        self.seen: dict[AnyTableFamily, _TableSeen] = {}

    def write(self, tables: list[Table], global_labels: dict[str, str], global_key: tuple, this_round: int,
              encode: Encode, emit: Emit) -> Iterator[None]:
        """Emit every series of ``tables`` (and a stale marker for each one gone since the last round), yielding
        between families."""
        replaced: list[_TableSeen] = []
        gone: list[Gone] = []
        for table in tables:
            for family in table.ordered:
                entry = self.seen.get(family)
                if entry is None or entry.global_key is not global_key:
                    if entry is not None:
                        replaced.append(entry)
                    entry = self.seen[family] = _TableSeen(table, family, global_key)
                entry.round = this_round
                rows, cells = table.rows[:], family.copy()
                self._series(entry, family, rows, cells, global_labels, encode, emit)
                self._gone(entry, rows, cells, gone)
                entry.rows, entry.present = rows, cells.present
                entry.sparse = [frozenset(row) if row else None for row in cells.sparse or ()]
                yield
        left = [family for family, entry in self.seen.items() if entry.round != this_round]
        for entry in [*replaced, *(self.seen.pop(family) for family in left)]:  # removed tables, reloads
            self._each(entry, gone)
        if gone:
            yield from self._end(gone, this_round, global_labels, encode, emit)

    def _templates(self, entry: _TableSeen, names: tuple[str, ...], global_labels: dict[str, str]
                   ) -> tuple[Template, ...]:
        templates = entry.templates.get(names)
        if templates is None:
            spec = entry.spec
            own = (*names, *spec.labelnames)
            const = {name: value for name, value in global_labels.items() if name not in own}
            const.update(entry.table.const_labels)
            for name, value in self.extra_labels.items():
                if name not in const and name not in own:
                    const[name] = value
            templates = entry.templates[names] = tuple(
                Template((*own, "le") if spec.kind == "histogram" and sample.endswith("_bucket") else own,
                              const, sample) for sample in spec.sample_names)
        return templates

    def _series(self, entry: _TableSeen, family: AnyTableFamily, rows: list[Row | None], cells: TableFamilyCopy,
                global_labels: dict[str, str], encode: Encode, emit: Emit) -> None:
        """Every series of the family now."""
        columns, width, values, present = entry.columns, family.width, cells.values, cells.present
        histogram = isinstance(family, TableHistogram)
        for slot, row in enumerate(rows):
            if row is None:
                continue
            names, own = row
            templates = self._templates(entry, names, global_labels)
            start = slot * width
            for column in range(width):
                if not present[start + column]:
                    continue
                labels = own + columns[column]
                if histogram:
                    stride = family.stride
                    state = values[(start + column) * stride:(start + column + 1) * stride]
                    _histogram(entry.spec, templates, labels, state, encode, emit)
                else:
                    encoded = encode(templates[0], labels)
                    if encoded is not None:
                        emit(encoded, values[start + column])
            sparse = cells.sparse[slot] if cells.sparse is not None else None
            for labels, value in (sparse or {}).items():
                encoded = encode(templates[0], own + labels)
                if encoded is not None:
                    emit(encoded, value)

    @staticmethod
    def _gone(entry: _TableSeen, rows: list[Row | None], cells: TableFamilyCopy, gone: list[Gone]) -> None:
        """Each series of the last round that is not at its place now."""
        columns, width, present = entry.columns, len(entry.columns), cells.present
        for slot, row in enumerate(entry.rows):
            if row is None:
                continue
            same = slot < len(rows) and rows[slot] is row
            start = slot * width
            for column in range(width):
                if entry.present[start + column] and not (same and present[start + column]):
                    gone.append((entry, row, columns[column]))
            before = entry.sparse[slot] if slot < len(entry.sparse) else None
            if before:
                now = cells.sparse[slot] if same and cells.sparse is not None else None
                gone.extend((entry, row, labels) for labels in before if not now or labels not in now)

    @staticmethod
    def _each(entry: _TableSeen, gone: list[Gone]) -> None:
        """Each series the entry sent in its last round, as gone."""
        width, present, sparse = len(entry.columns), entry.present, entry.sparse
        for slot, row in enumerate(entry.rows):
            if row is None:
                continue
            gone.extend((entry, row, entry.columns[column]) for column in range(width)
                        if present[slot * width + column])
            gone.extend((entry, row, labels) for labels in (sparse[slot] if slot < len(sparse) else None) or ())

    def _end(self, gone: list[Gone], this_round: int, global_labels: dict[str, str], encode: Encode,
             emit: Emit) -> Iterator[None]:
        """A stale marker for each series gone from its place, unless this round sent it from another (a target
        that came back at another slot, a one-target source reloaded into the same or another table, a table
        replaced by a reload): a series never gets a value and a stale marker in one round."""
        sent: dict[str, list[_TableSeen]] = {}
        for entry in self.seen.values():
            if entry.round == this_round:
                sent.setdefault(entry.spec.name, []).append(entry)
        slots: dict[_TableSeen, dict[str, int]] = {}
        for done, (entry, row, labels) in enumerate(gone, 1):
            names, own = row
            templates = self._templates(entry, names, global_labels)
            index = 1 if entry.spec.kind == "histogram" else 0  # a histogram's _count stands for its samples
            encoded = encode(templates[index], own + labels)
            if encoded is None:  # dropped by write_relabel_configs: never sent
                continue
            if any(self._sent_as(other, row, labels, index, slots, global_labels, encode) == encoded
                   for other in sent.get(entry.spec.name, ())):
                continue
            if entry.spec.kind == "histogram":
                _histogram(entry.spec, templates, own + labels, None, encode, emit)
            else:
                emit(encoded, None)
            if done % 1000 == 0:
                yield
        yield

    def _sent_as(self, entry: _TableSeen, row: Row, labels: LabelValues, index: int,
                 slots: dict[_TableSeen, dict[str, int]], global_labels: dict[str, str], encode: Encode
                 ) -> bytes | None:
        """How this round sent the series of ``entry`` whose row has ``row``'s row label value and whose own
        label values are ``labels`` (None: it sent none)."""
        names, own = row
        if entry.table.row_label not in names:
            return None
        found = slots.get(entry)
        if found is None:
            table = entry.table
            found = slots[entry] = {table.key_of(other): slot for slot, other in enumerate(entry.rows)
                                    if other is not None}
        slot = found.get(own[names.index(entry.table.row_label)])
        if slot is None or not entry.holds(slot, labels):
            return None
        now = entry.rows[slot]
        assert now is not None
        return encode(self._templates(entry, now[0], global_labels)[index], now[1] + labels)


def _histogram(spec: FamilySpec, templates: tuple[Template, ...], labels: LabelValues, state: object,
               encode: Encode, emit: Emit) -> None:
    """A histogram series' samples from its cells (None: as stale markers)."""
    bucket, count, total = templates
    cumulative = 0.0
    counts = list(state) if state is not None else None  # type: ignore[call-overload]  # an array slice
    for index, le in enumerate(le_values(spec.bounds)):
        if counts is not None:
            cumulative += counts[index]
        _emit(encode(bucket, (*labels, le)), cumulative if counts is not None else None, emit)
    _emit(encode(count, labels), cumulative if counts is not None else None, emit)
    _emit(encode(total, labels), counts[-1] if counts is not None else None, emit)


def _emit(encoded: bytes | None, value: float | None, emit: Emit) -> None:
    if encoded is not None:
        emit(encoded, value)
