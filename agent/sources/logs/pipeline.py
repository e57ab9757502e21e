"""The pure core of a log source: records in, aggregated metric updates out, no I/O.

Records become columns: one list per field that a metric reads (a label, a filter or a value), one entry per
parsed record. Each metric then works on whole columns with building blocks that run in C (``Counter``,
``map``, ``zip``, ``compress``, ``sort``), so Python code runs once per distinct value, not once per record:

- the filters of ``match`` are judged once per distinct tuple of their fields;
- label values become text and are rewritten (``rewrite``) once per distinct tuple, cached across batches;
- numbers come from ``float()`` mapped over the column; only a batch holding a value that is not a usable
  number takes the slower path that finds out, per distinct value, why (``kpi_agent_log_lines_skipped_total``);
- sums and histograms split their values by label set with ``compress()`` (a few label sets) or one dict pass
  (many), then sort each group once: a histogram's buckets cost one bisection per bound, not one per value;
- a gauge's last value per label set is ``dict(zip(labels, values))``.

Format regex over plain lines matches a whole chunk with one ``findall()`` (see ``buffer_pattern``), which
returns the groups of every line in one C call; JSON lines are parsed as one JSON document per chunk when that
provably gives what parsing each line would. Either falls back to line by line when it cannot prove it.

Each metric judges its own value field: a record missing it, or holding something that is not a usable number
(not a number, NaN or infinite, negative for a counter), is skipped by that metric alone and counted in
``kpi_agent_log_lines_skipped_total{metric,reason}``; it still counts in every other metric, so request
totals (KPI denominators) never undercount because an unrelated field was absent.
"""

from __future__ import annotations

import json
import math
import operator
import re
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Any

from agent.series.store import Family, Group, HistogramFamily
from agent.sources.logs.config import BYTES, LINES, MALFORMED, RECORDS, SKIP_REASONS, TOO_LONG, UNMATCHED, LogMetric

EXPIRY_EVERY = 1.0  # seconds between sweeps for label sets past their expire_after

# key=value, key="quoted \"value\"", or any other run of non-space (skipped). Possessive quantifiers: a token
# with no "=" is consumed once, never re-scanned from each of its positions, so a line parses in linear time.
_LOGFMT_RE = re.compile(r'([^\s="]++)=(?:"((?:[^"\\]++|\\.)*+)"|(\S*+))|\S++')
_ESCAPE_RE = re.compile(r"\\(.)")
_GLOBAL_FLAGS_RE = re.compile(r"\(\?[aiLmsux]+\)")
# Text whose meaning at the edge of a line differs inside a buffer of lines: \A and \Z see the buffer's edges,
# lookarounds see the neighbouring newline. A pattern holding any of them is matched line by line.
_BUFFER_UNSAFE = (r"\A", r"\Z", "(?=", "(?!", "(?<=", "(?<!")
# In a chunk of JSON objects joined as [line\n,line...], only a line holding "}" "," "{" (spaces aside) can hold
# two objects at the top level.
_TWO_OBJECTS = re.compile(r"\}[ \t\r]*,[ \t\r]*\{")
MANY_LABEL_SETS = 8  # above this many in a batch, values are grouped by one dict pass, not compress() per set
CACHE_LIMIT = 100_000  # cached label translations and filter verdicts per metric; cleared when reached

_COUNT, _SUM, _HISTOGRAM, _GAUGE = range(4)


@dataclass
class BatchResult:
    lines: int = 0
    unmatched: int = 0
    malformed: int = 0


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


def parse_logfmt(line: str) -> dict[str, str]:
    """logfmt fields; a later duplicate key wins. Linear in the line's length whatever it holds."""
    fields = {}
    for found in _LOGFMT_RE.finditer(line):
        key = found.group(1)
        if key is None:
            continue
        quoted = found.group(2)
        if quoted is None:
            fields[key] = found.group(3)
        else:
            fields[key] = _ESCAPE_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
    return fields


def parse_value(raw: object) -> float | str:
    """A field's number, or why it is not one (a reason of SKIP_REASONS; ``negative`` is the caller's)."""
    if raw is None:
        return "missing"
    try:
        value = float(raw)  # type: ignore[arg-type]  # str, int, float or bool; anything else is not a number
    except (TypeError, ValueError):
        return "not_a_number"
    except OverflowError:  # an integer beyond float's range
        return "not_finite"
    return value if math.isfinite(value) else "not_finite"


def label_text(value: object) -> str:
    """A field as a label value: JSON scalars as they read in the line, a missing field as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)[:1024]


def _hashable(value: object) -> object:
    return value if isinstance(value, (str, int, float, bool, type(None))) else label_text(value)


def field_getter(name: str) -> Callable[[dict], Any]:
    """Reads one field of a parsed record: the key ``name``, or for a dotted name that is no key, the nested
    objects along it (``http.status`` is ``{"http": {"status": ...}}``)."""
    if "." not in name:
        return operator.methodcaller("get", name)
    path = name.split(".")

    def nested(record: dict) -> Any:
        value = record.get(name)
        if value is not None:
            return value
        value = record
        for part in path:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return nested


def buffer_pattern(pattern: re.Pattern[str], needed: Iterable[str] = ()) -> re.Pattern[str] | None:
    """``pattern`` applied to every line of a text at once by ``findall()``: each line gives a tuple of the
    groups and then a marker, "\\n" if the line matched and "" if not. Named groups not in ``needed`` stop
    capturing where that provably changes nothing else (``_uncaptured``): findall() makes no string for them.
    None when the pattern's text holds something whose meaning differs in a buffer (``_BUFFER_UNSAFE``).

    The caller still checks each chunk: one tuple per line proves no match ran past a newline, and a "" in a
    field the metrics read may be a group that did not take part (``match.group()`` gives None for it), so
    either sends the chunk line by line.
    """
    text = pattern.pattern
    if any(token in text for token in _BUFFER_UNSAFE):
        return None
    body = _uncaptured(text, pattern, set(pattern.groupindex) - set(needed))
    while (flags := _GLOBAL_FLAGS_RE.match(body)) is not None:  # moved to the flags argument
        body = body[flags.end():]
    end_comment = "\n" if pattern.flags & re.VERBOSE else ""  # a trailing "# comment" must not eat our ")"
    try:
        wrapped = re.compile(f"^(?:(?:{body}{end_comment})[^\\n]*(\\n)|[^\\n]*\\n)", pattern.flags | re.MULTILINE)
    except re.error:
        return None
    kept = {name: index for name, index in pattern.groupindex.items() if name in wrapped.groupindex}
    return wrapped if set(kept) >= set(needed) and list(wrapped.groupindex) == list(kept) else None


_NUMBERED_REFERENCE_RE = re.compile(r"\\[1-9]|\(\?\(\d")  # \1 or (?(1)...): group numbers that must not shift


def _uncaptured(text: str, pattern: re.Pattern[str], unused: set[str]) -> str:
    """The text with the named groups in ``unused`` made non-capturing. Only where the text holds their
    ``(?P<name>`` exactly once (so it is the group, not a character class or a comment), nothing refers to
    groups by number, and the result compiles with one group fewer: a (?P=name) reference to it would not."""
    if _NUMBERED_REFERENCE_RE.search(text):
        return text
    for name in sorted(unused):
        definition = f"(?P<{name}>"
        if text.count(definition) != 1:
            continue
        candidate = text.replace(definition, "(?:")
        try:
            compiled = re.compile(candidate, pattern.flags)
        except re.error:
            continue
        if name not in compiled.groupindex and compiled.groups == re.compile(text, pattern.flags).groups - 1:
            text = candidate
    return text


class _Metric:
    """One metric, bound to its family and to the columns it reads."""

    def __init__(self, metric: LogMetric, family: Family | HistogramFamily, columns: dict[str, int]):
        self.metric = metric
        self.name = metric.name
        self.family = family
        self.label_columns = tuple(columns[name] for name in metric.fields)
        self.filter_columns = tuple(columns[name] for name in metric.match)
        self.filters = tuple(re.compile(pattern).fullmatch for pattern in metric.match.values())
        self.value_column = columns[metric.value] if metric.value else None
        self.words = metric.values
        self.rejects_negative = metric.type == "counter"
        self.bounds = metric.buckets
        # per label position with rewrite rules: the rules, and the rewritten text of each value seen
        self.rewrites: dict[int, list[tuple[re.Pattern[str], str]]] = {
            metric.labels.index(rule.label): [] for rule in metric.rewrite}
        for rule in metric.rewrite:
            self.rewrites[metric.labels.index(rule.label)].append((re.compile(rule.regex), rule.template))
        self.rewritten: dict[int, dict[Any, str]] = {index: {} for index in self.rewrites}
        self.shape = _GAUGE if metric.type == "gauge" else _HISTOGRAM if metric.type == "histogram" else \
            _SUM if metric.value else _COUNT
        self.label_cache: dict[Any, tuple[str, ...]] = {}
        self.verdicts: dict[Any, bool] = {}
        self.touched: dict[tuple[str, ...], float] | None = {} if metric.expire_after else None

    def labels_of(self, key: Any) -> tuple[str, ...]:
        """The metric's own label values for a key (a field's value, or a tuple of them)."""
        labels = self.label_cache.get(key)
        if labels is None:
            if len(self.label_cache) >= CACHE_LIMIT:
                self.label_cache.clear()
            raw = (key,) if len(self.label_columns) == 1 else key
            labels = self.label_cache[key] = tuple(map(label_text, raw))
        return labels

    def _rewrite(self, index: int, column: list) -> list[str]:
        """A label's column rewritten, each distinct value once: many raw values (paths with ids) become few,
        and the records are counted by the few."""
        done = self.rewritten[index]
        new = dict.fromkeys(column).keys() - done.keys()
        if len(done) + len(new) > CACHE_LIMIT:
            done.clear()
            new = set(column)
        for value in new:
            text = label_text(value)
            for regex, template in self.rewrites[index]:
                text = regex.sub(template, text)
            done[value] = text
        return list(map(done.__getitem__, column))

    def _kept(self, columns: list[list]) -> list[bool] | None:
        """Which records pass the filters; None when all do."""
        keys = columns[self.filter_columns[0]] if len(self.filter_columns) == 1 else \
            list(zip(*(columns[i] for i in self.filter_columns), strict=True))
        verdicts = self.verdicts
        for key in dict.fromkeys(keys):
            if key not in verdicts:
                values = (key,) if len(self.filter_columns) == 1 else key
                if len(verdicts) >= CACHE_LIMIT:
                    verdicts.clear()
                verdicts[key] = all(value is not None and fullmatch(label_text(value)) is not None
                                    for value, fullmatch in zip(values, self.filters, strict=True))
        kept = list(map(verdicts.__getitem__, keys))
        return None if all(kept) else kept

    def _numbers(self, raw: list, keys: list | None, skipped: Counter[tuple[str, str]]) -> tuple[list, list | None]:
        """The usable numbers of the value column and the keys of their records; the others are counted in
        ``skipped`` by reason."""
        words = self.words
        try:
            numbers = list(map(float, map(words.get, raw, raw) if words else raw))
            total = sum(numbers)
        except (TypeError, ValueError, OverflowError):
            pass
        else:
            if math.isfinite(total) and not (self.rejects_negative and numbers and min(numbers) < 0):
                return numbers, keys
        judged = {value: self._judge(value) for value in dict.fromkeys(raw)}
        results = list(map(judged.__getitem__, raw))
        usable = [result.__class__ is float for result in results]
        for reason, count in Counter(result for result in results if result.__class__ is str).items():
            skipped[(self.name, reason)] += count
        return list(compress(results, usable)), list(compress(keys, usable)) if keys is not None else None

    def _judge(self, raw: object) -> float | str:
        word = self.words.get(raw) if self.words and raw.__class__ is str else None
        value = parse_value(word if word is not None else raw)
        if isinstance(value, float) and self.rejects_negative and value < 0:
            return "negative"
        return value

    def update(self, columns: list[list], count: int, file_labels: tuple[str, ...],
               skipped: Counter[tuple[str, str]], now: float, partitions: dict[tuple[int, ...], dict]) -> None:
        """Add one batch; ``partitions`` is shared by the metrics of the batch: record positions by label set,
        for metrics whose labels read the same columns of every record."""
        texts = [self._rewrite(index, columns[i]) if index in self.rewrites else columns[i]
                 for index, i in enumerate(self.label_columns)]
        if self.shape == _COUNT and not self.filters:  # the common case, with no list of keys built
            if count:
                self._add(Counter(texts[0] if len(texts) == 1 else zip(*texts, strict=True)) if texts
                          else {(): count}, file_labels, now)
            return
        keys: list | None = None  # None: one label set, the metric has no labels of its own
        if texts:
            keys = texts[0] if len(texts) == 1 else list(zip(*texts, strict=True))
        raw = columns[self.value_column] if self.value_column is not None else None
        every_record = not self.rewrites  # keys from the columns as they are, for every record
        if self.filters and count:
            kept = self._kept(columns)
            if kept is not None:
                every_record = False
                count = kept.count(True)
                keys = list(compress(keys, kept)) if keys is not None else None
                raw = list(compress(raw, kept)) if raw is not None else None
        if not count:
            return
        if self.shape == _COUNT:
            self._add(Counter(keys) if keys is not None else {(): count}, file_labels, now)
            return
        numbers, usable_keys = self._numbers(raw, keys, skipped)  # type: ignore[arg-type]
        if not numbers:
            return
        every_record = every_record and usable_keys is keys
        keys = usable_keys
        if self.shape == _GAUGE:
            if keys is None:
                last = {file_labels: numbers[-1]}
            else:
                translated = {key: self.labels_of(key) + file_labels for key in dict.fromkeys(keys)}
                last = dict(zip(map(translated.__getitem__, keys), numbers, strict=True))  # the last one wins
            for labels, value in last.items():
                self.family.set(labels, value)  # type: ignore[union-attr]
            self._touch(last, now)
            return
        sums: dict[tuple[str, ...], list[float]] = {}
        for key, values in _groups(keys, numbers, partitions.setdefault(self.label_columns, {}) if every_record
                                   else None).items():
            labels = self.labels_of(key) + file_labels
            slot = sums.get(labels)
            if slot is None:
                slot = sums[labels] = [0.0] * (len(self.bounds) + 2 if self.shape == _HISTOGRAM else 1)
            slot[-1] += sum(values)
            if self.shape == _HISTOGRAM:
                values.sort()
                below = 0
                for index, bound in enumerate(self.bounds):
                    upto = bisect_right(values, bound)
                    slot[index] += upto - below
                    below = upto
                slot[-2] += len(values) - below
        for labels, slot in sums.items():
            if self.shape == _SUM:
                self.family.inc(labels, slot[0])  # type: ignore[union-attr]
            else:
                self.family.merge(labels, slot[:-1], slot[-1])  # type: ignore[union-attr]
        self._touch(sums, now)

    def _add(self, counts: dict[Any, int], file_labels: tuple[str, ...], now: float) -> None:
        totals: dict[tuple[str, ...], float] = {}
        for key, times in counts.items():
            labels = self.labels_of(key) + file_labels
            totals[labels] = totals.get(labels, 0) + times
        for labels, total in totals.items():
            self.family.inc(labels, total)  # type: ignore[union-attr]
        self._touch(totals, now)

    def _touch(self, updated: Iterable[tuple[str, ...]], now: float) -> None:
        if self.touched is not None:
            for labels in updated:
                self.touched[labels] = now

    def expire(self, now: float) -> int:
        """Remove the label sets not updated for expire_after; returns how many."""
        if self.touched is None or self.metric.expire_after is None:
            return 0
        oldest = now - self.metric.expire_after
        stale = [labels for labels, last in self.touched.items() if last <= oldest]
        for labels in stale:
            self.family.remove(labels)
            del self.touched[labels]
        return len(stale)


def _groups(keys: list | None, numbers: list[float], partition: dict[Any, list[bool]] | None) -> dict[Any, list[float]]:
    """The numbers of each key, in record order. ``partition``, when given, holds (or receives) which records
    have each key, for other metrics of the batch with the same keys."""
    if keys is None:
        return {(): numbers}
    if partition:
        return {key: list(compress(numbers, records)) for key, records in partition.items()}
    distinct = dict.fromkeys(keys)
    if len(distinct) == 1:
        return {keys[0]: numbers}
    if len(distinct) <= MANY_LABEL_SETS:
        found = {key: list(map(operator.eq, keys, repeat(key))) for key in distinct}
        groups = {key: list(compress(numbers, records)) for key, records in found.items()}
        if sum(map(len, groups.values())) == len(numbers):  # a NaN key equals nothing, itself included
            if partition is not None:
                partition.update(found)
            return groups
    by_key: defaultdict[Any, list[float]] = defaultdict(list)
    for key, number in zip(keys, numbers, strict=True):
        by_key[key].append(number)
    return by_key


class Pipeline:
    """Turns batches of records into store updates for one source's metrics.

    ``fmt`` and ``pattern`` say how a record's text becomes fields (``process``, ``process_text``);
    ``process_entries`` takes records that already are fields (journal entries) and, when ``fmt`` is set,
    parses their MESSAGE too. ``file_labels`` are the names of the labels every series gets from the file
    it was read from; their values come with each batch.
    """

    def __init__(self, metrics: tuple[LogMetric, ...], group: Group, skipped: Family, expired: Family, *,
                 fmt: str | None, pattern: str | None, max_series: int, file_labels: tuple[str, ...] = ()):
        fields: list[str] = []
        for metric in metrics:
            for name in (*metric.fields, *metric.match, *([metric.value] if metric.value else [])):
                if name not in fields:
                    fields.append(name)
        self.fields = tuple(fields)
        columns = {name: index for index, name in enumerate(fields)}
        self._skipped, self._expired = skipped, expired
        self._metrics: list[_Metric] = []
        self._counters_without_labels: list[Family] = []
        for metric in metrics:
            family = group.register(metric.spec(file_labels), max_series)
            compiled = _Metric(metric, family, columns)
            self._metrics.append(compiled)
            if not metric.labels and metric.type == "counter":
                self._counters_without_labels.append(family)  # type: ignore[arg-type]
            if metric.value:
                for reason in SKIP_REASONS[:3] + (("negative",) if compiled.rejects_negative else ()):
                    skipped.ensure((metric.name, reason))
            if metric.expire_after:
                expired.ensure((metric.name,))
        self._expiring = [metric for metric in self._metrics if metric.touched is not None]
        self._next_expiry = 0.0
        if not file_labels:
            self.ensure(())
        self.format = fmt
        self._pattern = re.compile(pattern) if pattern else None
        groups = self._pattern.groupindex if self._pattern is not None else {}
        reads_groups_only = all(name in groups for name in fields)
        self._buffer = buffer_pattern(self._pattern, fields) if self._pattern is not None and reads_groups_only \
            else None
        self._buffer_columns = tuple(self._buffer.groupindex[name] - 1 for name in fields) if self._buffer else ()
        self._from_match: list[tuple[int, Callable[[Any], Any]]] = [
            (index, operator.methodcaller("group", name)) for index, name in enumerate(fields) if name in groups]
        self._from_record: list[tuple[int, Callable[[Any], Any]]] = [
            (index, field_getter(name)) for index, name in enumerate(fields) if name not in groups]
        self._getters = [field_getter(name) for name in fields]
        self._plain_names = [None if "." in name else name for name in fields]  # read with dict.get

    def ensure(self, file_labels: tuple[str, ...]) -> None:
        """Counters without labels of their own exist at 0 for each file from its start, so increase() sees
        its first record (loki #9921)."""
        now = time.monotonic()
        for family in self._counters_without_labels:
            family.ensure(file_labels)
        for metric in self._expiring:
            if metric.family in self._counters_without_labels:
                metric._touch([file_labels], now)

    def process_text(self, text: str, file_labels: tuple[str, ...] = ()) -> BatchResult:
        """Complete lines, each ending in a newline."""
        if self._buffer is not None and "\r" not in text:
            found = self._buffer.findall(text)
            if len(found) == text.count("\n"):  # one tuple per line: no match ran past a newline
                markers = list(map(operator.itemgetter(-1), found))
                matched = len(found) - markers.count("")
                if matched < len(found):
                    found = list(compress(found, markers))
                columns = [list(map(operator.itemgetter(index), found)) for index in self._buffer_columns]
                if not any("" in column for column in columns):
                    self._aggregate(columns, matched, file_labels)
                    return BatchResult(lines=len(markers), unmatched=len(markers) - matched)
        lines = text.split("\n")
        lines.pop()
        if "\r" in text:
            lines = [line.rstrip("\r") for line in lines]
        return self.process(lines, file_labels)

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
        parsed = json_objects(records, result) if self.format == "json" else _logfmt_records(records, result)
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
            fields = _json_object(message) if self.format == "json" else parse_logfmt(message)
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
                columns[index] = list(map(_hashable, column))
        return columns

    def _aggregate(self, columns: list[list], count: int, file_labels: tuple[str, ...]) -> None:
        skipped: Counter[tuple[str, str]] = Counter()
        now = time.monotonic()
        partitions: dict[tuple[int, ...], dict] = {}
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


def _json_object(line: str) -> dict | None:
    try:
        fields = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return fields if isinstance(fields, dict) else None


def json_objects(lines: list[str], result: BatchResult) -> list[dict]:
    """The JSON object of each line; the others are counted as malformed.

    The chunk is parsed as one document, [line\\n,line...], when that is sure to give each line's own object:
    no string can run across a newline (JSON forbids raw control characters in strings), and a line can only
    hold two top-level objects with "}", "," and "{" in a row, which the chunk is searched for first. Then
    as many objects as lines means every separating comma is at the top level, so each object is exactly one
    line's text."""
    if lines:
        text = "[" + "\n,".join(lines) + "]"
        if _TWO_OBJECTS.search(text) is None:
            try:
                document = json.loads(text)
            except (ValueError, RecursionError):
                document = None
            if document is not None and len(document) == len(lines) and set(map(type, document)) == {dict}:
                return document
    objects = []
    for line in lines:
        fields = _json_object(line)
        if fields is None:
            result.malformed += 1
        else:
            objects.append(fields)
    return objects


def _logfmt_records(lines: list[str], result: BatchResult) -> list[dict]:
    records = []
    for line in lines:
        fields = parse_logfmt(line)
        if fields:
            records.append(fields)
        else:
            result.unmatched += 1
    return records
