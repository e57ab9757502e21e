"""The pure core of a log source: records in, aggregated metric updates out, no I/O.

Records become columns: one list per field that a metric reads (a label, a filter or a value), one entry per
parsed record; each metric's shape (``metrics``) then works on whole columns. Format regex over plain lines
matches a whole chunk with one ``findall()`` (``Regex.line_scanner``: the pattern's proven-linear Python form),
which returns the groups of every line in one C call; JSON lines are parsed as one JSON document per chunk when
that provably gives what parsing each line would (``fields.json_objects``). Either falls back to line by line
when it cannot prove it (a pattern without a proven Python form runs in RE2, line by line).

Each metric judges its own value field: a record missing it, or holding something that is not a usable number
(not a number, NaN or infinite, negative for a counter), is skipped by that metric alone and counted in
``kpi_agent_log_lines_skipped_total{metric,reason}``; it still counts in every other metric, so request
totals (KPI denominators) never undercount because an unrelated field was absent.
"""

from __future__ import annotations

import operator
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from typing import Any

from agent.config.regex import Regex
from agent.series.family import Family
from agent.series.store import Group
from agent.sources.logs.config import BYTES, LINES, MALFORMED, RECORDS, SKIP_REASONS, TOO_LONG, UNMATCHED, LogMetric
from agent.sources.logs.fields import (
    BatchResult,
    JsonColumns,
    field_getter,
    hashable,
    json_chunk,
    json_object,
    json_objects,
    label_text,
    logfmt_records,
    parse_logfmt,
)
from agent.sources.logs.metrics import CountMetric, LogMetricShape, Partitions, shape_of

EXPIRY_EVERY = 1.0  # seconds between sweeps for label sets past their expire_after


def _taken_groups(scanner: re.Pattern[str]) -> dict[int, int]:
    """The groups of a line scanner (``Regex.line_scanner``) that take part in every match of a line, with the
    fewest characters each captures: those outside any alternation, repetition or optional part of the
    pattern, which is the first alternative of the scanner's top-level alternation."""
    import re._constants as sre
    import re._parser as sre_parse

    items = sre_parse.parse(scanner.pattern, scanner.flags).data
    branches = [av for op, av in items if op is sre.BRANCH]
    if not branches:
        return {}
    taken: dict[int, int] = {}
    sequences = [branches[0][1][0]]
    while sequences:
        for op, av in sequences.pop():
            if op is sre.SUBPATTERN:  # (group, flags added, flags removed, pattern): taken whenever it is reached
                group, _, _, pattern = av
                if group is not None:
                    taken[group] = pattern.getwidth()[0]
                sequences.append(pattern.data)
    return taken


def drop_too_long(lines: list[str], limit: int) -> tuple[list[str], int]:
    """The lines of at most ``limit`` bytes in UTF-8, and how many were longer. A line of ``limit // 4``
    characters or fewer always fits (4 bytes a character at most), so only longer ones are encoded."""
    if max(map(len, lines), default=0) <= limit // 4:
        return lines, 0
    kept = [line for line in lines if len(line) <= limit // 4 or len(line.encode()) <= limit]
    return kept, len(lines) - len(kept)


class LineCounts:
    """The ``kpi_agent_log_*`` counters of a source that reads lines (log files, the journal), made at zero so
    a rate over them works from the first scrape."""

    def __init__(self, own: Group):
        self.lines, self.records, self.unmatched, self.malformed, self.too_long, self.bytes = (
            own.counter(spec) for spec in (LINES, RECORDS, UNMATCHED, MALFORMED, TOO_LONG, BYTES))
        for family in (self.lines, self.records, self.unmatched, self.malformed, self.too_long, self.bytes):
            family.ensure(())

    def read(self, lines: int, size: int) -> None:
        """``lines`` lines (every one, whatever becomes of it) in ``size`` bytes read."""
        self.lines.inc((), lines)
        self.bytes.inc((), size)

    def parsed(self, result: BatchResult, malformed: int = 0, too_long: int = 0) -> None:
        """Records through the pipeline (``result``), and lines skipped before it: undecodable or not a JSON
        object (``malformed``), over max_line_bytes (``too_long``)."""
        self.records.inc((), result.lines)
        self.unmatched.inc((), result.unmatched)
        self.malformed.inc((), result.malformed + malformed)
        self.too_long.inc((), too_long)

    def skipped_too_long(self, lines: int) -> None:
        """Lines over max_line_bytes dropped while still being read (their bytes were never kept)."""
        self.too_long.inc((), lines)
        self.lines.inc((), lines)


class Pipeline:
    """Turns batches of records into store updates for one source's metrics.

    ``fmt`` and ``pattern`` say how a record's text becomes fields (``process``, ``process_text``);
    ``process_entries`` takes records that already are fields (journal entries) and, when ``fmt`` is set,
    parses their MESSAGE too. ``file_labels`` are the names of the labels every series gets from the file
    it was read from; their values come with each batch.
    """

    def __init__(self, metrics: tuple[LogMetric, ...], group: Group, skipped: Family, expired: Family, *,
                 fmt: str | None, pattern: Regex | None, max_series: int, file_labels: tuple[str, ...] = ()):
        fields: list[str] = []
        for metric in metrics:
            for name in (*metric.fields, *metric.match, *([metric.value] if metric.value else [])):
                if name not in fields:
                    fields.append(name)
        self.fields = tuple(fields)
        columns = {name: index for index, name in enumerate(fields)}
        self._skipped, self._expired = skipped, expired
        self._metrics: list[LogMetricShape] = []
        self._counters_without_labels: list[Family] = []
        for metric in metrics:
            shape = shape_of(metric, group, file_labels, max_series, columns)
            self._metrics.append(shape)
            if isinstance(shape, CountMetric) and not metric.labels:
                self._counters_without_labels.append(shape.family)
            if metric.value:
                for reason in SKIP_REASONS[:3] + (("negative",) if metric.type == "counter" else ()):
                    skipped.ensure((metric.name, reason))
            if metric.expire_after:
                expired.ensure((metric.name,))
        self._expiring = [metric for metric in self._metrics if metric.touched is not None]
        self._next_expiry = 0.0
        if not file_labels:
            self.ensure(())
        self.format = fmt
        self._pattern = pattern
        groups = pattern.groupindex if pattern is not None else {}
        reads_groups_only = all(name in groups for name in fields)
        scanner = pattern.line_scanner(fields, marked=False) if pattern is not None and reads_groups_only else None
        self._scanner_columns = tuple(scanner.groupindex[name] - 1 for name in fields) if scanner else ()
        # findall() gives "" for a group that did not take part (match() gives None) and for every group of an
        # unmatched line. Only the columns of groups that may not take part are searched for "", and one column
        # whose group always captures something (the witness) tells the unmatched lines apart; without one, the
        # scanner marks each line (a last group, "\n" for a line that matched).
        taken = _taken_groups(scanner) if scanner else {}
        self._maybe_absent = tuple(i for i, group in enumerate(self._scanner_columns) if group + 1 not in taken)
        self._witness = next((i for i, group in enumerate(self._scanner_columns) if taken.get(group + 1)), None)
        if pattern is not None and scanner is not None and self._witness is None:
            scanner = pattern.line_scanner(fields, marked=True)
        self._scanner = scanner
        self._one_group = scanner is not None and scanner.groups == 1  # findall() gives strings, not tuples
        self._from_match: list[tuple[int, Callable[[Any], Any]]] = [
            (index, operator.methodcaller("group", name)) for index, name in enumerate(fields) if name in groups]
        self._from_record: list[tuple[int, Callable[[Any], Any]]] = [
            (index, field_getter(name)) for index, name in enumerate(fields) if name not in groups]
        self._getters = [field_getter(name) for name in fields]
        # top-level fields only (a dotted name may be a path into nested objects): read straight into columns
        self._json_columns = JsonColumns(self.fields) if fmt == "json" and not any("." in name for name in fields) \
            else None
        self._plain_names = [None if "." in name else name for name in fields]  # read with dict.get

    def ensure(self, file_labels: tuple[str, ...]) -> None:
        """Counters without labels of their own exist at 0 for each file from its start, so increase() sees
        its first record (loki #9921)."""
        now = time.monotonic()
        for family in self._counters_without_labels:
            family.ensure(file_labels)
        for metric in self._expiring:
            if metric.family in self._counters_without_labels:
                metric.touch([file_labels], now)

    @property
    def scans_chunks(self) -> bool:
        """Whether ``process_text`` matches a whole chunk at once (it then counts the chunk's lines)."""
        return self._scanner is not None

    def process_text(self, text: str, file_labels: tuple[str, ...] = (), *,
                     newlines: int | None = None) -> BatchResult:
        """Complete lines, each ending in a newline; ``newlines``: how many, when the caller has counted them."""
        if self._scanner is not None and "\r" not in text:
            found = self._scanner.findall(text)
            total = len(found)
            if total == (text.count("\n") if newlines is None else newlines) and total:  # no match ran past a newline
                columns = self._transposed(found)
                matched = total
                absent, witness = self._maybe_absent, self._witness
                if witness is None or not all(columns[witness]) or not all(map(all, map(columns.__getitem__, absent))):
                    # "" in the witness's column, or in the marker (the last group; findall() gives the marker
                    # itself when it is the only group), is an unmatched line
                    markers = columns[witness] if witness is not None else \
                        list(map(operator.itemgetter(-1), found)) if columns else found
                    matched -= markers.count("")
                    if matched < total:
                        found = list(compress(found, markers))
                        columns = self._transposed(found) if found else [() for _ in self._scanner_columns]
                if all(map(all, map(columns.__getitem__, absent))):  # else not proven: matched line by line
                    self._aggregate(columns, matched, file_labels)
                    return BatchResult(lines=total, unmatched=total - matched)
        lines = text.split("\n")
        lines.pop()
        if "\r" in text:
            lines = [line.rstrip("\r") for line in lines]
        return self.process(lines, file_labels)

    def _transposed(self, found: list) -> list[Sequence[str]]:
        """The field columns of findall()'s tuples, in one zip() call (or its strings, for a scanner of one
        group: the one field, or the marker alone)."""
        if self._one_group:
            return [found] if self._scanner_columns else []
        transposed = list(zip(*found, strict=False))  # findall gives tuples of one length: not checked again
        return [transposed[index] for index in self._scanner_columns]

    def process_json_chunk(self, data: bytes, file_labels: tuple[str, ...] = ()) -> BatchResult | None:
        """Complete JSON lines as read (bytes, each ending in a newline), parsed at once; None when they must
        be decoded and read line by line (``process_text``)."""
        if self._json_columns is not None:
            read = self._json_columns.read(data)
            if read is None:
                return None
            columns, count = read
            self._aggregate(self._hashable(columns), count, file_labels)
            return BatchResult(lines=count)
        objects = json_chunk(data)
        if objects is None:
            return None
        self._aggregate(self._columns(objects), len(objects), file_labels)
        return BatchResult(lines=len(objects))

    def process(self, records: list[str], file_labels: tuple[str, ...] = ()) -> BatchResult:
        result = BatchResult(lines=len(records))
        if self.format == "regex":
            assert self._pattern is not None
            matches = list(filter(None, map(self._pattern.match, records)))
            result.unmatched = len(records) - len(matches)
            columns: list[list] = [[] for _ in self.fields]
            for index, get in self._from_match:
                columns[index] = list(map(get, matches))
            self._aggregate(columns, len(matches), file_labels)
            return result
        parsed = json_objects(records, result) if self.format == "json" else logfmt_records(records, result)
        self._aggregate(self._columns(parsed), len(parsed), file_labels)
        return result

    def process_entries(self, entries: list[dict[str, Any]], file_labels: tuple[str, ...] = ()) -> BatchResult:
        """Records that are fields already (journal entries); with a format, their MESSAGE is parsed too and
        its fields come first. An entry whose MESSAGE the format rejects counts as unmatched (or malformed)."""
        result = BatchResult(lines=len(entries))
        if self.format is None:
            self._aggregate(self._columns(entries), len(entries), file_labels)
            return result
        messages = [label_text(entry.get("MESSAGE")) for entry in entries]
        if self.format == "regex":
            assert self._pattern is not None
            pairs = [(entry, found) for entry, found in zip(entries, map(self._pattern.match, messages), strict=True)
                     if found is not None]
            result.unmatched = len(entries) - len(pairs)
            columns: list[list] = [[] for _ in self.fields]
            for index, get in self._from_match:
                columns[index] = [get(found) for _, found in pairs]
            for index, get in self._from_record:
                columns[index] = [get(entry) for entry, _ in pairs]
            self._aggregate(self._hashable(columns), len(pairs), file_labels)
            return result
        kept: list[dict[str, Any]] = []
        for entry, message in zip(entries, messages, strict=True):
            fields = json_object(message) if self.format == "json" else parse_logfmt(message)
            if not fields:
                if self.format == "json" and fields is None:
                    result.malformed += 1
                else:
                    result.unmatched += 1
                continue
            kept.append({**entry, **fields})
        self._aggregate(self._columns(kept), len(kept), file_labels)
        return result

    def _columns(self, records: list[dict[str, Any]]) -> list[list]:
        return self._hashable([list(map(dict.get, records, repeat(name))) if name is not None else
                               list(map(get, records)) for name, get in zip(self._plain_names, self._getters,
                                                                            strict=True)])

    @staticmethod
    def _hashable(columns: list[list]) -> list[list]:
        """Columns whose values can be counted: a JSON object or list is counted by its text."""
        for index, column in enumerate(columns):
            try:
                hash(tuple(column))
            except TypeError:
                columns[index] = list(map(hashable, column))
        return columns

    def _aggregate(self, columns: Sequence[Sequence], count: int, file_labels: tuple[str, ...]) -> None:
        skipped: Counter[tuple[str, str]] = Counter()
        now = time.monotonic()
        partitions: Partitions = {}
        for metric in self._metrics:
            metric.update(columns, count, file_labels, skipped, now, partitions)
        for reason_labels, times in skipped.items():
            self._skipped.inc(reason_labels, times)

    def expire(self, now: float) -> None:
        """Remove label sets their metric's expire_after has passed for; a sweep at most every EXPIRY_EVERY
        seconds, however often it is called."""
        if now < self._next_expiry:
            return
        self._next_expiry = now + EXPIRY_EVERY
        for metric in self._expiring:
            removed = metric.expire(now)
            if removed:
                self._expired.inc((metric.name,), removed)


