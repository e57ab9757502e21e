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


# Whole numbers from -1 to 255 are looked up rather than formatted: most samples of a page are flags, small
# counts, -1 for "none" and empty buckets, and a lookup costs a fifth of repr(). About 25 KB.
_WHOLE_TEXTS = {float(n): f"{n}.0" for n in range(-1, 256)}
_copysign = math.copysign


def go_float(value: float) -> str:
    """A sample value or bucket bound the way Go (and the Prometheus client libraries) write it."""
    text = _WHOLE_TEXTS.get(value)
    if text is not None:
        # 0.0 and -0.0 are one key: the sign tells them apart
        return text if value or _copysign(1.0, value) > 0 else "-0.0"
    text = repr(value) if type(value) is float else repr(float(value))
    if "." in text[:7]:  # the usual case: a point within the first 7 characters, no exponent Go would add
        return text
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python: 1e+06, not 1000000.0
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def escape_label_value(value: str) -> str:
    """A label value as the text formats (and PromQL's double-quoted strings) write it."""
    if "\\" in value or '"' in value or "\n" in value:  # rare: three scans cost less than three replaces
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


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
    of global labels a family's own label names override (usually none). The rows of a table share their label
    names, so the sorting is done once per set of names: a row's text is a template filled with its values."""

    def __init__(self, global_labels: dict[str, str]):
        self.global_labels = global_labels
        self.cache: dict[tuple[int, frozenset[str]],
                         tuple[dict[str, str], dict[tuple[str, ...], str], list[tuple[Row, str] | None]]] = {}

    def of(self, table: Table, labelnames: tuple[str, ...], rows: list[Row | None], start: int, stop: int
           ) -> list[str | None]:
        """The texts of ``rows[start:stop]`` (None for a free slot)."""
        overridden = frozenset(self.global_labels.keys() & set(labelnames))
        key = (id(table), overridden)  # the snapshot keeps the table alive
        found = self.cache.get(key)
        if found is None:
            base = {k: v for k, v in self.global_labels.items() if k not in overridden}
            base.update(table.const_labels)
            found = self.cache[key] = (base, {}, [])
        base, templates, cache = found
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
                names, values = row
                template = templates.get(names)
                if template is None:
                    template = templates[names] = _row_template(base, names)
                cached = cache[slot] = (row, template.format(*[escape_label_value(value) for value in values]))
            texts.append(cached[1])
        return texts


def _row_template(base: dict[str, str], names: tuple[str, ...]) -> str:
    """The label pairs of a row with these label names, sorted, as a ``str.format`` template: ``{i}`` for the
    row's i-th value (which wins over a constant label of its name), constant labels written in."""
    position = {name: index for index, name in enumerate(names)}
    pairs = []
    for name in sorted({*base, *names}):
        if name in position:
            pairs.append(f'{name}="{{{position[name]}}}"')
        else:
            text = escape_label_value(base[name]).replace("{", "{{").replace("}", "}}")
            pairs.append(f'{name}="{text}"')
    return ",".join(pairs)


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
        # a family most rows leave empty (TLS facts of plain HTTP targets) costs a search, not a visit per row
        dense = present.find(1, start * width, stop * width) >= 0
        spread = sparse is not None and any(sparse[start:stop])
        texts = row_texts.of(table, names, rows, start, stop) if dense or spread else []
        if dense and histogram:
            stride = family.stride
            for slot, text in enumerate(texts, start):
                if text is not None:
                    cell = slot * width
                    _series(write, spec, [(labels, values[(cell + column) * stride:(cell + column + 1) * stride])
                                          for column, labels in enumerate(columns) if present[cell + column]], text)
        elif dense and width == 1:
            head = heads[0]
            for text, here, value in zip(texts, present[start:stop], values[start:stop], strict=True):
                if here and text is not None:
                    write(f"{head}{text}}} {go_float(value)}\n")
        elif dense and present.count(1, start * width, stop * width) * 4 >= (stop - start) * width:
            for slot, text in enumerate(texts, start):
                if text is not None:
                    cell = slot * width
                    for head, here, value in zip(heads, present[cell:cell + width], values[cell:cell + width],
                                                 strict=True):
                        if here:
                            write(f"{head}{text}}} {go_float(value)}\n")
        elif dense:  # few cells present (probe_last_result: 1 of 16 a row): found, not visited one by one
            for slot, text in enumerate(texts, start):
                if text is None:
                    continue
                cell = slot * width
                end = cell + width
                index = present.find(1, cell, end)
                while index >= 0:
                    write(f"{heads[index - cell]}{text}}} {go_float(values[index])}\n")
                    index = present.find(1, index + 1, end)
        if spread:
            assert sparse is not None
            for slot, text in enumerate(texts, start):
                series = sparse[slot]
                if series and text is not None:
                    _series(write, spec, series.items(), text)
        yield


def _header(write: Write, spec: FamilySpec, openmetrics: bool) -> None:
    write(_header_text(spec, openmetrics))


@functools.lru_cache(maxsize=4096)
def _header_text(spec: FamilySpec, openmetrics: bool) -> str:
    """A family's HELP and TYPE lines: the same on every scrape (the specs of a config are few, and shared)."""
    name = spec.name if openmetrics or spec.kind != "counter" else f"{spec.name}_total"
    return f"# HELP {name} {_help(spec.documentation, openmetrics)}\n# TYPE {name} {spec.kind}\n"


@functools.lru_cache(maxsize=256)
def _bucket_tails(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """What ends each bucket's line before its count, ``le="0.5"} ``, +Inf included (the same few bucket sets on
    every scrape)."""
    return tuple(f'le="{go_float(bound)}"}} ' for bound in (*bounds, math.inf))


def _label_pairs(names: tuple[str, ...], labels: tuple[str, ...]) -> str:
    return ",".join([f'{name}="{escape_label_value(value)}"' for name, value in zip(names, labels, strict=True)])


def _series(write: Write, spec: FamilySpec, items: Iterable[tuple[tuple[str, ...], Any]], constant: str) -> None:
    """The lines of a family's series; ``constant``: the text of the labels every one of them has besides its own.
    The common shapes (no label, one, two) are written each with one f-string, the cheapest way to build a line."""
    names = spec.labelnames
    if spec.kind == "histogram":
        _histogram_series(write, spec, items, constant)
        return
    name = spec.sample_names[0]
    if not names:
        head = f"{name}{{{constant}}} " if constant else f"{name} "
        for _, value in items:
            write(f"{head}{go_float(value)}\n")
        return
    escape = escape_label_value
    first = f'{name}{{{names[0]}="'
    tail = f'",{constant}}} ' if constant else '"} '
    if len(names) == 1:
        for (label,), value in items:
            write(f"{first}{escape(label)}{tail}{go_float(value)}\n")
    elif len(names) == 2:
        second = f'",{names[1]}="'
        for (label, other), value in items:
            write(f"{first}{escape(label)}{second}{escape(other)}{tail}{go_float(value)}\n")
    else:
        for labels, value in items:
            write(f"{name}{{{_label_pairs(names, labels)}{tail[1:]}{go_float(value)}\n")


def _histogram_series(write: Write, spec: FamilySpec, items: Iterable[tuple[tuple[str, ...], Any]],
                      constant: str) -> None:
    """Each series' cumulative buckets, count and sum. A bucket that adds nothing repeats the text of the one
    before (no formatting): most buckets of most pages."""
    names = spec.labelnames
    tails = _bucket_tails(spec.bounds)
    bucket, count_name, sum_name = spec.sample_names
    for labels, state in items:
        base = _label_pairs(names, labels) if names else ""
        if constant:
            base = f"{base},{constant}" if base else constant
        head = f"{bucket}{{{base}," if base else f"{bucket}{{"
        cumulative = 0.0
        text = "0.0"
        for tail, count in zip(tails, state, strict=False):  # the state ends with the sum, after the buckets
            if count:  # adding 0 (or -0.0) leaves the cumulative count, never -0.0 itself, as it was
                cumulative += count
                text = go_float(cumulative)
            write(f"{head}{tail}{text}\n")
        braces = f"{{{base}}}" if base else ""
        write(f"{count_name}{braces} {text}\n{sum_name}{braces} {go_float(state[-1])}\n")


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = resource.getpagesize()


def _boot_time() -> float:
    with open("/proc/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


_BOOT = _boot_time()


def _read_proc(path: str) -> bytes:
    """A small /proc file in one read, without a buffered file object (two thirds of the cost of reading it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def process_samples() -> Iterator[tuple[FamilySpec, float]]:
    """The process_* families, from /proc/self (Linux)."""
    try:
        fields = _read_proc("/proc/self/stat").rpartition(b")")[2].split()
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
