"""The exposition formats, written from a store snapshot: Prometheus text 0.0.4 and OpenMetrics 1.0.0.

The running agent does not import prometheus_client (about 5 MiB of memory on every node for what is a few
string rules); the formats are the ones its encoders write, and the tests hold this output to them: every
page is parsed by prometheus_client's parsers and checked by ``promtool check metrics``. Families of one
name from several groups are written as one family; a series' labels are its family's (in declared order),
then the global labels it does not already have, overridden by its group's constant labels.

Also here: the ``process_*`` families (CPU, memory, descriptors, start time) read from /proc, the same
names and meaning as client libraries export.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from agent.series.family import AnyFamily, Family, FamilySpec, HistogramFamily
from agent.series.selfmetrics import PROCESS_FAMILIES
from agent.series.store import SERIES_DROPPED, Snapshot
from agent.series.table import AnyTableFamily, Row, Table, TableHistogram

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

Write = Callable[[str], None]


def wants_openmetrics(accept: str) -> bool:
    """Content negotiation as Prometheus does it: OpenMetrics when the Accept header lists it."""
    return any(part.split(";", 1)[0].strip() == "application/openmetrics-text" for part in accept.split(","))


def go_float(value: float) -> str:
    """A sample value or bucket bound the way Go (and the Prometheus client libraries) write it."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python: 1e+06, not 1000000.0
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def escape_label_value(value: str) -> str:
    """A label value as the text formats (and PromQL's double-quoted strings) write it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str, openmetrics: bool) -> str:
    escaped = text.replace("\\", "\\\\").replace("\n", "\\n")
    return escaped.replace('"', '\\"') if openmetrics else escaped


def render(snap: Snapshot, openmetrics: bool = False, process: bool = True) -> bytes:
    """One scrape's page, written in one go."""
    out: list[str] = []
    for _ in _write(snap, openmetrics, process, out.append):
        pass
    return "".join(out).encode("utf-8")


SLICE_SECONDS = 0.005
_SERIES_PER_STEP = 1000  # a big family is written in steps of this many series (about 2 ms each)


async def render_cooperatively(snap: Snapshot, openmetrics: bool = False, process: bool = True) -> bytes:
    """The same page, written on the event loop in slices of about 5 ms, with a turn for every other task
    between two slices.

    Not in a worker thread: a render there holds the GIL for all of its CPU time, and the event loop's thread,
    which gives the GIL up at every system call, waits up to the switch interval (5 ms) to get it back each
    time: while a 400,000-series page was written (0.9 s of CPU) probes due started up to a second late. In
    slices, a probe waits at most one slice. Families are copied whole, one at a time, as in ``render``.
    """
    chunks: list[bytes] = []
    out: list[str] = []
    deadline = time.perf_counter() + SLICE_SECONDS
    for _ in _write(snap, openmetrics, process, out.append):
        if time.perf_counter() >= deadline:
            chunks.append("".join(out).encode("utf-8"))
            out.clear()
            await asyncio.sleep(0)
            deadline = time.perf_counter() + SLICE_SECONDS
    chunks.append("".join(out).encode("utf-8"))
    return b"".join(chunks)


def _write(snap: Snapshot, openmetrics: bool, process: bool, write: Write) -> Iterator[None]:
    """Writes the page through ``write``, yielding after each family it lists or writes (where a cooperative
    caller may pause). Families are listed first (to merge those of one name), and each is copied only as it is
    written, so one copy of the series at most is alive beside the store."""
    merged: dict[str, tuple[FamilySpec, list[tuple[dict[str, str] | Table, AnyFamily | AnyTableFamily]]]] = {}
    dropped: dict[str, float] = {}
    for holder in snap.holders:  # in the order they were attached: families are listed as first met
        owner = holder if isinstance(holder, Table) else holder.const_labels
        for family in list(holder.families.values()):
            spec = family.spec
            merged.setdefault(spec.name, (spec, []))[1].append((owner, family))
            if family.dropped:
                dropped[spec.name] = dropped.get(spec.name, 0.0) + family.dropped
            yield
    # a group's constant labels as text, per set of label names they yield to: worked out once per group, not
    # once per family of it; a table's, once per row
    texts: dict[tuple[int, tuple[str, ...]], str] = {}
    rows = _RowTexts(snap.const_labels)
    for spec, parts in merged.values():
        _header(write, spec, openmetrics)
        for owner, member in parts:
            if isinstance(owner, Table):
                assert not isinstance(member, (Family, HistogramFamily))
                yield from _table_family(write, spec, owner, member, rows)
                continue
            assert isinstance(member, (Family, HistogramFamily))
            values = member.snapshot()  # copied whole just before it is written: one copy alive at a time
            key = (id(owner), spec.labelnames)  # the snapshot's groups keep each dict alive
            labels = texts.get(key)
            if labels is None:
                constant = {k: v for k, v in snap.const_labels.items() if k not in spec.labelnames}
                constant.update(owner)
                labels = texts[key] = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(constant.items()))
            if len(values) <= _SERIES_PER_STEP:
                _series(write, spec, values.items(), labels)
                yield
                continue
            items = list(values.items())
            for start in range(0, len(items), _SERIES_PER_STEP):
                _series(write, spec, items[start:start + _SERIES_PER_STEP], labels)
                yield
    if dropped:
        _header(write, SERIES_DROPPED, openmetrics)
        global_labels = "".join(f',{k}="{escape_label_value(v)}"' for k, v in sorted(snap.const_labels.items())
                                if k != "metric")
        for name, count in sorted(dropped.items()):
            labels = f'metric="{escape_label_value(name)}"{global_labels}'
            write(f"kpi_agent_series_dropped_total{{{labels}}} {go_float(count)}\n")
    if process:
        for spec, value in process_samples():
            _header(write, spec, openmetrics)
            write(f"{spec.sample_names[0]} {go_float(value)}\n")
    if openmetrics:
        write("# EOF\n")


_ROWS_PER_STEP = 400  # a table's family is written in steps of this many rows (about 2 ms each)


class _RowTexts:
    """The constant labels of each row of a table as text (the global labels it does not override, the
    table's and the row's own, sorted), worked out once per scrape for the families of every row; per set
    of global labels a family's own label names override (usually none)."""

    def __init__(self, global_labels: dict[str, str]):
        self.global_labels = global_labels
        self.cache: dict[tuple[int, frozenset[str]], tuple[dict[str, str], list[tuple[Row, str] | None]]] = {}

    def of(self, table: Table, labelnames: tuple[str, ...], rows: list[Row | None], start: int, stop: int
           ) -> list[str | None]:
        """The texts of ``rows[start:stop]`` (None for a free slot)."""
        overridden = frozenset(self.global_labels.keys() & set(labelnames))
        key = (id(table), overridden)  # the snapshot keeps the table alive
        found = self.cache.get(key)
        if found is None:
            base = {k: v for k, v in self.global_labels.items() if k not in overridden}
            base.update(table.const_labels)
            found = self.cache[key] = (base, [])
        base, cache = found
        if len(cache) < stop:
            cache.extend([None] * (stop - len(cache)))
        texts: list[str | None] = []
        for slot in range(start, stop):
            row = rows[slot]
            if row is None:
                texts.append(None)
                continue
            cached = cache[slot]
            if cached is None or cached[0] is not row:  # a slot reused by another row since
                labels = dict(base)
                labels.update(zip(*row, strict=True))
                cached = cache[slot] = (row, ",".join(f'{k}="{escape_label_value(v)}"'
                                                      for k, v in sorted(labels.items())))
            texts.append(cached[1])
        return texts


def _table_family(write: Write, spec: FamilySpec, table: Table, family: AnyTableFamily,
                  row_texts: _RowTexts) -> Iterator[None]:
    """A family of a table, copied whole with the table's rows, then written in steps of rows."""
    rows = table.rows[:]
    cells = family.copy()
    names = spec.labelnames
    columns = sorted(family.columns, key=family.columns.__getitem__)
    width = family.width
    values, present = cells.values, cells.present
    histogram = isinstance(family, TableHistogram)
    name = spec.sample_names[0]
    heads = [f"{name}{{" + "".join(f'{n}="{escape_label_value(v)}",' for n, v in zip(names, labels, strict=True))
             for labels in columns]
    sparse = cells.sparse
    for start in range(0, len(rows), _ROWS_PER_STEP):
        stop = min(start + _ROWS_PER_STEP, len(rows))
        texts = row_texts.of(table, names, rows, start, stop)
        if histogram:
            stride = family.stride
            for slot, text in enumerate(texts, start):
                if text is not None:
                    cell = slot * width
                    _series(write, spec, [(labels, values[(cell + column) * stride:(cell + column + 1) * stride])
                                          for column, labels in enumerate(columns) if present[cell + column]], text)
        elif width == 1:
            head = heads[0]
            for text, here, value in zip(texts, present[start:stop], values[start:stop], strict=True):
                if here and text is not None:
                    write(f"{head}{text}}} {go_float(value)}\n")
        else:
            for slot, text in enumerate(texts, start):
                if text is not None:
                    cell = slot * width
                    for column in range(width):
                        if present[cell + column]:
                            write(f"{heads[column]}{text}}} {go_float(values[cell + column])}\n")
        if sparse is not None:
            for slot, text in enumerate(texts, start):
                series = sparse[slot]
                if series and text is not None:
                    _series(write, spec, series.items(), text)
        yield


def _header(write: Write, spec: FamilySpec, openmetrics: bool) -> None:
    name = spec.name if openmetrics or spec.kind != "counter" else f"{spec.name}_total"
    write(f"# HELP {name} {_help(spec.documentation, openmetrics)}\n# TYPE {name} {spec.kind}\n")


@functools.lru_cache(maxsize=256)
def _bound_texts(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` values of a histogram's buckets, +Inf included (the same few bucket sets on every scrape)."""
    return tuple(go_float(b) for b in (*bounds, math.inf))


def _series(write: Write, spec: FamilySpec, items: Iterable[tuple[tuple[str, ...], Any]], constant: str) -> None:
    names = spec.labelnames
    if spec.kind == "histogram":
        bounds = _bound_texts(spec.bounds)
        for labels, state in items:
            base = ",".join([*(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, labels, strict=True)),
                             *([constant] if constant else [])])
            prefix = f"{base}," if base else ""
            cumulative = 0.0
            for bound, count in zip(bounds, state[:-1], strict=True):
                cumulative += count
                write(f'{spec.name}_bucket{{{prefix}le="{bound}"}} {go_float(cumulative)}\n')
            braces = f"{{{base}}}" if base else ""
            write(f"{spec.name}_count{braces} {go_float(cumulative)}\n{spec.name}_sum{braces} {go_float(state[-1])}\n")
        return
    name = spec.sample_names[0]
    if not names:
        braces = f"{{{constant}}}" if constant else ""
        for _, value in items:
            write(f"{name}{braces} {go_float(value)}\n")
        return
    tail = f",{constant}}} " if constant else "} "
    for labels, value in items:
        pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, labels, strict=True))
        write(f"{name}{{{pairs}{tail}{go_float(value)}\n")


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = resource.getpagesize()


def _boot_time() -> float:
    with open("/proc/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


_BOOT = _boot_time()


def process_samples() -> Iterator[tuple[FamilySpec, float]]:
    """The process_* families, from /proc/self (Linux)."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        descriptors = len(os.listdir("/proc/self/fd"))
    except OSError:
        return
    times = os.times()
    values = {
        "process_cpu_seconds": times.user + times.system,
        "process_virtual_memory_bytes": float(fields[20]),
        "process_resident_memory_bytes": float(fields[21]) * _PAGE,
        "process_start_time_seconds": _BOOT + float(fields[19]) / _TICKS,
        "process_open_fds": float(descriptors),
        "process_max_fds": float(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
    }
    for spec in PROCESS_FAMILIES:
        yield spec, values[spec.name]

