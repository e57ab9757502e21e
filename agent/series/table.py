"""Tables: the series of many probed targets that write the same families, one row per target.

Ten thousand targets kept as ten thousand groups of twenty dict-backed families cost about 8 KiB each (a family
object, a dict, a tuple key and a float object per series, and the store's index entries per group). In a
table, the targets of one source (or the one-target sources of one layout) share each family, and a target is
a row: the label sets a family takes in every row (a probe's results, its phases, none for most families) are
columns, so a series is one 8-byte cell of an ``array('d')`` plus a presence byte. Label sets a family does not
declare (TLS versions, a JSON body's labels) go to a small dict of that row only, created when first needed.

The store's guarantees hold as for groups (``agent.series.store``):

- a table's families are declared (``RowSchema``) before any row, and registered in the store's index like a
  group's, so families of one name agree on kind, labels and buckets;
- every row carries the table's constant labels and its own labels, among them the row label (``target``)
  whose value no other row of the table has; a row entering an attached table is checked against every other
  holder of its families (``Store`` sets ``checker``), so no series is ever exposed twice;
- a row's labels never take a family's label names; new label sets are checked and repaired where they enter
  (one value per label name, encodable text, at most ``max_series`` undeclared label sets per row and family);
- writers and readers both run on the event loop: a family is copied whole (``copy``) in one synchronous
  step before it is written out, and a row's set of series is replaced in one synchronous step (``replace``),
  so a scrape never sees a family half written.
"""

from __future__ import annotations

import array
import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from agent.series.family import DEFAULT_MAX_SERIES, FamilySpec, LabelValues, SchemaError, shown
from agent.series.group import Identified, both_expose
from agent.text import encodable

Row = tuple[tuple[str, ...], tuple[str, ...]]  # a row's own label names (shared by rows alike) and values


@dataclass(frozen=True)
class Declared:
    """One family of a table: the label sets kept as columns (the family's in every row: ``((),)`` for a
    family without labels), and those every new row has, at zero (counters born at 0)."""

    spec: FamilySpec
    columns: tuple[LabelValues, ...] = ()
    born: tuple[LabelValues, ...] = ()

    def __post_init__(self) -> None:
        for labels in (*self.columns, *self.born):
            if len(labels) != len(self.spec.labelnames):
                raise SchemaError(f"{self.spec.name}: column {labels} for label names {self.spec.labelnames}")
        if not set(self.born) <= set(self.columns):
            raise SchemaError(f"{self.spec.name}: label sets born at zero must be columns")
        if self.spec.kind == "histogram" and not self.columns:
            raise SchemaError(f"{self.spec.name}: a histogram of a table keeps its label sets as columns")


@dataclass(frozen=True, eq=False)
class RowSchema:
    """What every row of a table holds; one object per layout (the store shares one table among the one-target
    sources of a schema, keyed by the object)."""

    name: str  # what the store calls a shared table of this schema ("http targets")
    families: tuple[Declared, ...]
    row_label: str = "target"  # the row's own label that tells it from the table's other rows

    def __post_init__(self) -> None:
        if len({declared.spec.name for declared in self.families}) != len(self.families):
            raise SchemaError(f"{self.name}: a family declared twice")


class _Cells:
    """What both family shapes share: the columns of each row (``width`` per row, ``stride`` floats each) and
    their presence, and the born state a new row starts from."""

    __slots__ = ("spec", "max_series", "columns", "width", "stride", "slots", "values", "present", "born_values",
                 "born_present", "dropped")

    def __init__(self, declared: Declared, stride: int, max_series: int):
        self.spec = declared.spec
        self.max_series = max_series
        self.columns = {labels: index for index, labels in enumerate(declared.columns)}
        self.width = len(declared.columns)
        self.stride = stride
        self.slots = 0  # rows, including free ones
        self.values = array.array("d")
        self.present = bytearray()
        self.born_values = array.array("d", bytes(8 * self.width * stride))
        self.born_present = bytearray(self.width)
        for labels in declared.born:
            self.born_present[self.columns[labels]] = 1
        self.dropped = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    def _added(self, slot: int) -> None:
        """Row ``slot`` starts (from the born state)."""
        if slot == self.slots:
            self.slots += 1
            self.values.extend(self.born_values)
            self.present.extend(self.born_present)
        else:
            start = slot * self.width
            self.values[start * self.stride:(start + self.width) * self.stride] = self.born_values
            self.present[start:start + self.width] = self.born_present

    def _removed(self, slot: int) -> None:
        start = slot * self.width
        self.present[start:start + self.width] = bytes(self.width)

    def _column(self, labels: LabelValues) -> int:
        column = self.columns.get(labels)
        if column is None:
            if len(labels) != len(self.spec.labelnames):
                raise SchemaError(f"{self.spec.name}: {len(labels)} label values for label names "
                                  f"{self.spec.labelnames}")
            raise SchemaError(f"{shown(self.spec)}: {labels} is not a column of the table")
        return column


class TableFamily(_Cells):
    """A counter or gauge of a table: ``values[slot * width + column]``, plus per row a dict of the label sets
    that are not columns (``sparse``, made when a row first needs one)."""

    __slots__ = ("sparse",)

    def __init__(self, declared: Declared, max_series: int = DEFAULT_MAX_SERIES):
        super().__init__(declared, 1, max_series)
        self.sparse: list[dict[LabelValues, float] | None] | None = None

    def _added(self, slot: int) -> None:
        super()._added(slot)
        if self.sparse is not None:
            if slot == len(self.sparse):
                self.sparse.append(None)
            else:
                self.sparse[slot] = None

    def _removed(self, slot: int) -> None:
        super()._removed(slot)
        if self.sparse is not None:
            self.sparse[slot] = None

    def set(self, slot: int, labels: LabelValues, value: float) -> None:
        column = self.columns.get(labels)
        if column is not None:
            index = slot * self.width + column
            self.values[index] = value
            self.present[index] = 1
        else:
            series = self._row(slot)
            if labels in series:
                series[labels] = value
            elif (key := self._admit(series, labels, 1.0)) is not None:
                series[key] = value

    def inc(self, slot: int, labels: LabelValues, amount: float = 1.0) -> None:
        """Add to a counter (or gauge); a series that was absent starts at 0."""
        column = self.columns.get(labels)
        if column is not None:
            index = slot * self.width + column
            if self.present[index]:
                self.values[index] += amount
            else:
                self.values[index] = amount
                self.present[index] = 1
        else:
            series = self._row(slot)
            if labels in series:
                series[labels] += amount
            elif (key := self._admit(series, labels, amount)) is not None:
                series[key] = series.get(key, 0.0) + amount

    def replace(self, slot: int, series: dict[LabelValues, float]) -> None:
        """Make exactly these series the row's (in one synchronous step)."""
        start = slot * self.width
        self.present[start:start + self.width] = bytes(self.width)
        fresh: dict[LabelValues, float] | None = None
        for labels, value in series.items():
            column = self.columns.get(labels)
            if column is not None:
                self.values[start + column] = value
                self.present[start + column] = 1
            else:
                if fresh is None:
                    fresh = {}
                if (key := self._admit(fresh, labels, 1.0)) is not None:
                    fresh[key] = value
        if fresh is not None or (self.sparse is not None and self.sparse[slot] is not None):
            self._sparse()[slot] = fresh

    def clear(self, slot: int) -> None:
        """No series in this row."""
        self.replace(slot, {})

    def value(self, slot: int, labels: LabelValues = ()) -> float | None:
        column = self.columns.get(labels)
        if column is not None:
            index = slot * self.width + column
            return self.values[index] if self.present[index] else None
        found = self.sparse[slot] if self.sparse is not None else None
        return found.get(labels) if found else None

    def series(self, slot: int) -> dict[LabelValues, float]:
        """The row's series."""
        start = slot * self.width
        found = {labels: self.values[start + column] for labels, column in self.columns.items()
                 if self.present[start + column]}
        if self.sparse is not None and self.sparse[slot]:
            found.update(self.sparse[slot])  # type: ignore[arg-type]  # checked just above
        return found

    def count(self) -> int:
        """Series in every row."""
        return self.present.count(1) + sum(len(row) for row in self.sparse or () if row)

    def copy(self) -> TableFamilyCopy:
        """The family's cells as they are now (for one scrape)."""
        sparse = [row.copy() if row else None for row in self.sparse] if self.sparse is not None else None
        return TableFamilyCopy(self.values[:], bytes(self.present), sparse)

    def _sparse(self) -> list[dict[LabelValues, float] | None]:
        if self.sparse is None:
            self.sparse = [None] * self.slots
        return self.sparse

    def _row(self, slot: int) -> dict[LabelValues, float]:
        sparse = self._sparse()
        series = sparse[slot]
        if series is None:
            series = sparse[slot] = {}
        return series

    def _admit(self, series: dict[LabelValues, float], labels: LabelValues, amount: float) -> LabelValues | None:
        """The key a new label set is stored under, or None (counted) when the row is full."""
        if len(labels) != len(self.spec.labelnames):
            raise SchemaError(f"{self.spec.name}: {len(labels)} label values for label names "
                              f"{self.spec.labelnames}")
        key = tuple(labels)
        if not all(value.isascii() for value in key):  # only non-ASCII text can hold a lone surrogate
            key = tuple(encodable(value) for value in key)
        if key not in series and len(series) >= self.max_series:
            self.dropped += amount
            return None
        return key


@dataclass
class TableFamilyCopy:
    values: array.array[float]
    present: bytes
    sparse: list[dict[LabelValues, float] | None] | None


class TableHistogram(_Cells):
    """A histogram of a table: per row and column, per-bucket (non-cumulative) counts, one more than there are
    bounds (the last is +Inf), then the sum; its label sets are all columns."""

    __slots__ = ()

    def __init__(self, declared: Declared, max_series: int = DEFAULT_MAX_SERIES):
        super().__init__(declared, len(declared.spec.bounds) + 2, max_series)

    def observe(self, slot: int, labels: LabelValues, value: float) -> None:
        cell = slot * self.width + self._column(labels)
        start = cell * self.stride
        self.values[start + bisect.bisect_left(self.spec.bounds, value)] += 1
        self.values[start + self.stride - 1] += value
        self.present[cell] = 1

    def state(self, slot: int, labels: LabelValues = ()) -> list[float] | None:
        cell = slot * self.width + self._column(labels)
        return list(self.values[cell * self.stride:(cell + 1) * self.stride]) if self.present[cell] else None

    def count(self) -> int:
        return self.present.count(1)

    def copy(self) -> TableFamilyCopy:
        return TableFamilyCopy(self.values[:], bytes(self.present), None)


AnyTableFamily = TableFamily | TableHistogram


class Table(Identified):
    """Rows of series that share their families: the targets of one discovering source (constant labels
    ``source="fleet"``, identity ``source``; a row per target, told apart by ``target``), or the one-target
    sources of one schema (no constant labels; a row per source, ``target="<source name>"``)."""

    __slots__ = ("schema", "row_label", "families", "ordered", "rows", "_slots", "_free", "_names", "_taken",
                 "checker", "__weakref__")

    def __init__(self, owner: str, schema: RowSchema, const_labels: dict[str, str] | None = None,
                 identity: str | tuple[str, ...] | None = None, max_series: int = DEFAULT_MAX_SERIES):
        super().__init__(owner, const_labels, identity)
        self.schema = schema
        self.row_label = schema.row_label
        self.families: dict[str, AnyTableFamily] = {}
        exposed: dict[str, FamilySpec] = {}
        for declared in schema.families:
            spec = declared.spec
            for name in spec.exposed:  # two families of one table never expose one name
                if exposed.setdefault(name, spec) is not spec:
                    raise SchemaError(both_expose(spec, name, exposed[name]))
            if not self.const_labels.keys().isdisjoint(spec.labelnames):
                clash = sorted(set(spec.labelnames) & set(self.const_labels))
                raise SchemaError(f"{shown(spec)}: labels {clash} are also set on every series of {owner}")
            self.families[spec.name] = TableHistogram(declared, max_series) if spec.kind == "histogram" else \
                TableFamily(declared, max_series)
        self.ordered = tuple(self.families.values())  # in the schema's order
        self.rows: list[Row | None] = []
        self._slots: dict[str, int] = {}  # row label value -> slot
        self._free: list[int] = []
        self._names: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per set of row label names
        self._taken = frozenset({*self.const_labels, "le", *(name for declared in schema.families
                                                            for name in declared.spec.labelnames)})
        # while attached: the store's check of a row against the other holders of the families (raises)
        self.checker: Callable[[Table, Identified], None] | None = None

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, labels: dict[str, str]) -> int:
        """A new row with these labels of its own (the row label among them); its slot. Raises SchemaError,
        having added nothing, when another row or holder would expose the same series."""
        key = labels.get(self.row_label)
        if key is None:
            raise SchemaError(f"{self.owner}: a row without its {self.row_label} label")
        key = encodable(key)
        if key in self._slots:
            raise SchemaError(f"{self.owner}: two rows with {self.row_label}={key!r}")
        taken = self._taken.intersection(labels)
        if taken:
            raise SchemaError(f"{self.owner}: row {key!r} sets labels {sorted(taken)} its series already have")
        ordered = sorted(labels.items())
        names = tuple(name for name, _ in ordered)
        names = self._names.setdefault(names, names)
        row: Row = (names, tuple(encodable(value) for _, value in ordered))
        if self.checker is not None:
            self.checker(self, self.bearer(row))
        slot = self._free.pop() if self._free else len(self.rows)
        if slot == len(self.rows):
            self.rows.append(row)
        else:
            self.rows[slot] = row
        self._slots[key] = slot
        for family in self.families.values():
            family._added(slot)
        return slot

    def remove(self, slot: int) -> None:
        """The row leaves, with its series; its slot is reused."""
        self.forget(slot)
        self.free(slot)

    def forget(self, slot: int) -> None:
        """The row's label value is free again; its cells stay until ``free`` (a swap that may be undone)."""
        row = self.rows[slot]
        assert row is not None
        del self._slots[self.key_of(row)]

    def restore(self, slot: int) -> None:
        """Undo ``forget``."""
        row = self.rows[slot]
        assert row is not None
        self._slots[self.key_of(row)] = slot

    def free(self, slot: int) -> None:
        self.rows[slot] = None
        for family in self.families.values():
            family._removed(slot)
        self._free.append(slot)

    def key_of(self, row: Row) -> str:
        names, values = row
        return values[names.index(self.row_label)]

    def slot(self, key: str) -> int | None:
        return self._slots.get(key)

    def labels(self, slot: int) -> dict[str, str]:
        """Every constant label of the row's series: the table's and the row's own."""
        row = self.rows[slot]
        assert row is not None
        return {**self.const_labels, **dict(zip(*row, strict=True))}

    def bearer(self, row: Row) -> Identified:
        """The row as the store's checks see an owner of series."""
        labels = {**self.const_labels, **dict(zip(*row, strict=True))}
        return Identified(f"{self.owner} ({self.row_label}={self.key_of(row)!r})", labels,
                          (*self.identity_names, self.row_label))

    def bearers(self) -> Iterator[Identified]:
        for row in self.rows:
            if row is not None:
                yield self.bearer(row)

    def find(self, other: Identified) -> str | None:
        """The row label value of a row whose series could be ``other``'s (they agree on every identity label
        either has), if any."""
        key = other.const_labels.get(self.row_label)
        slot = self._slots.get(key) if key is not None else None
        if slot is None:
            return None
        if any(other.const_labels.get(name) != value for name, value in self.identity or ()):
            return None
        labels = self.labels(slot)
        if any(labels.get(name) != value for name, value in other.identity or ()):
            return None
        return key

    def series_count(self) -> int:
        return sum(family.count() for family in self.families.values())

    def row_series(self, slot: int) -> int:
        """The series of one row."""
        total = 0
        for family in self.ordered:
            start = slot * family.width
            total += family.present[start:start + family.width].count(1)
            if isinstance(family, TableFamily) and family.sparse is not None:
                total += len(family.sparse[slot] or ())
        return total


class TableRow:
    """A one-target source's row, built detached: ``Store.swap`` puts it in the store's table of its schema
    (and takes it out), so a reload swaps it with the source's other groups in one step."""

    __slots__ = ("owner", "schema", "labels", "table", "slot")

    def __init__(self, owner: str, schema: RowSchema, labels: dict[str, str] | None = None):
        self.owner = owner
        self.schema = schema
        # what Store.swap makes the row of, dropped once placed (None: the table's owner adds it itself)
        self.labels = labels
        self.table: Table | None = None  # set while attached
        self.slot = -1
