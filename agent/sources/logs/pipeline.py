"""The pure core of a log source: complete lines in, aggregated metric updates out, no I/O.

A line becomes a row: the fields any metric uses as a label or filter (the key), then the raw text of every
value field. Rows are counted first (for regex, in C: ``Counter`` over ``match.group(...)`` tuples), so every
later step runs once per distinct row, not per line: value parsing, match filters, label projection and the
store updates. Access logs have few distinct rows per batch (method, status, a rounded response time), so
most lines cost one regex match and one hash.

Each metric judges its own value field: a line missing it, or holding something that is not a usable number
(not a number, NaN or infinite, negative for a counter), is skipped by that metric alone and counted in
``kpi_agent_log_lines_skipped_total{metric,reason}``; it still counts in every other metric, so request
totals (KPI denominators) never undercount because an unrelated field was absent.
"""

from __future__ import annotations

import bisect
import json
import math
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.sources.logs.config import SKIP_REASONS, LogMetric, LogSourceConfig
from agent.store import Family, Group, HistogramFamily

# key=value, key="quoted \"value\"", or any other run of non-space (skipped). Possessive quantifiers: a token
# with no "=" is consumed once, never re-scanned from each of its positions, so a line parses in linear time.
_LOGFMT_RE = re.compile(r'([^\s="]++)=(?:"((?:[^"\\]++|\\.)*+)"|(\S*+))|\S++')
_ESCAPE_RE = re.compile(r"\\(.)")


@dataclass
class BatchResult:
    lines: int = 0
    unmatched: int = 0
    malformed: int = 0


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


_COUNT, _SUM, _HISTOGRAM, _GAUGE = range(4)


class _Compiled:
    """One metric, bound to its family and to its positions in a row."""

    def __init__(self, metric: LogMetric, family: Family | HistogramFamily, key_index: dict[str, int],
                 value_index: dict[str, int]):
        self.metric = metric
        self.family = family
        self.labels = tuple(key_index[name] for name in metric.labels)
        self.filters = [(key_index[name], re.compile(pattern).fullmatch) for name, pattern in metric.match.items()]
        self.value = value_index[metric.value] if metric.value else None
        self.rejects_negative = metric.type == "counter"
        # what a label set accumulates per batch: lines; or sum and usable lines; or bucket counts and sum
        self.shape = _GAUGE if metric.type == "gauge" else _HISTOGRAM if metric.type == "histogram" else \
            _SUM if metric.value else _COUNT

    def new_slot(self) -> list[float]:
        return [0.0] * (len(self.metric.buckets) + 2 if self.shape == _HISTOGRAM else 2)

    def usable(self, value: float | str) -> bool:
        return value.__class__ is not str and not (self.rejects_negative and value < 0)  # type: ignore[operator]

    def accepts(self, key: tuple) -> bool:
        return all(key[i] is not None and fullmatch(label_text(key[i])) is not None for i, fullmatch in self.filters)


class Pipeline:
    """Turns batches of lines into store updates for one log source's metrics."""

    def __init__(self, config: LogSourceConfig, group: Group, skipped: Family):
        self.config = config
        key_fields: list[str] = []
        value_fields: list[str] = []
        for metric in config.metrics:
            for name in (*metric.labels, *metric.match):
                if name not in key_fields:
                    key_fields.append(name)
            if metric.value and metric.value not in value_fields:
                value_fields.append(metric.value)
        self.key_fields, self.value_fields = tuple(key_fields), tuple(value_fields)
        self.width = len(key_fields)
        key_index = {name: i for i, name in enumerate(key_fields)}
        value_index = {name: i for i, name in enumerate(value_fields)}
        self._skipped = skipped
        self._metrics: list[_Compiled] = []
        for metric in config.metrics:
            family = group.register(metric.spec, config.max_series_per_metric)
            compiled = _Compiled(metric, family, key_index, value_index)
            self._metrics.append(compiled)
            if not metric.labels and metric.type == "counter":
                family.ensure(())  # born at 0, so increase() sees the first event (loki #9921)
            if metric.value:
                for reason in SKIP_REASONS[:3] + (("negative",) if compiled.rejects_negative else ()):
                    skipped.ensure((metric.name, reason))
        self._gauges = [m for m in self._metrics if m.shape == _GAUGE]
        fields = self.key_fields + self.value_fields
        self._pattern = re.compile(config.pattern) if config.pattern else None
        # match.group() returns a tuple for two or more names, a bare value for one
        self._row_of_match: Callable[[re.Match], tuple] = (
            operator.methodcaller("group", *fields) if len(fields) > 1
            else (lambda found: (found.group(fields[0]),)) if fields else (lambda found: ()))

    def process(self, lines: list[str]) -> BatchResult:
        result = BatchResult(lines=len(lines))
        if self._pattern is not None:
            matches = filter(None, map(self._pattern.match, lines))
            rows: Iterable[tuple] = list(map(self._row_of_match, matches)) if self._gauges else \
                map(self._row_of_match, matches)
        else:
            rows = self._rows_fields(lines, result)
        counted = _count(rows)
        if self._pattern is not None:
            result.unmatched = len(lines) - sum(counted.values())
        self._apply(counted)
        if self._gauges:
            self._apply_gauges(rows, counted)  # type: ignore[arg-type]
        return result

    def _rows_fields(self, lines: list[str], result: BatchResult) -> list[tuple]:
        names = self.key_fields + self.value_fields
        rows = []
        if self.config.format == "json":
            for line in lines:
                fields = _json_object(line)
                if fields is None:
                    result.malformed += 1
                else:
                    rows.append(tuple(map(fields.get, names)))
        else:
            for line in lines:
                fields = parse_logfmt(line)
                if not fields:
                    result.unmatched += 1
                else:
                    rows.append(tuple(map(fields.get, names)))
        return rows

    def _apply(self, counted: dict[tuple, int]) -> None:
        """Per distinct row, each metric's share, summed per label set; then one store update per label set."""
        width = self.width
        totals: list[dict[tuple, list[float]]] = [{} for _ in self._metrics]
        skipped: Counter[tuple[str, str]] = Counter()
        targets: dict[tuple, list[tuple[_Compiled, list[float]]]] = {}
        parsed: list[dict[object, float | str]] = [{} for _ in self.value_fields]  # raw text -> value, per field
        for row, count in counted.items():
            key = row[:width]
            per_key = targets.get(key)
            if per_key is None:  # once per distinct key: filters and label values of every metric
                per_key = targets[key] = []
                for index, metric in enumerate(self._metrics):
                    if metric.shape != _GAUGE and metric.accepts(key):
                        labels = tuple(label_text(key[i]) for i in metric.labels)
                        slot = totals[index].get(labels)
                        if slot is None:
                            slot = totals[index][labels] = metric.new_slot()
                        per_key.append((metric, slot))
            values: list[float | str] = []
            for position, raw in enumerate(row[width:]):
                cache = parsed[position]
                value = cache.get(raw)
                if value is None:
                    value = cache[raw] = parse_value(raw)
                values.append(value)
            for metric, slot in per_key:
                if metric.shape == _COUNT:
                    slot[0] += count
                    continue
                value = values[metric.value]  # type: ignore[index]
                if not metric.usable(value):
                    reason = value if value.__class__ is str else "negative"
                    skipped[(metric.metric.name, reason)] += count
                elif metric.shape == _SUM:
                    slot[0] += value * count  # type: ignore[operator]
                    slot[1] += count
                else:
                    slot[bisect.bisect_left(metric.metric.buckets, value)] += count
                    slot[-1] += value * count  # type: ignore[operator]
        for metric, per_labels in zip(self._metrics, totals, strict=True):
            family = metric.family
            for labels, slot in per_labels.items():
                if metric.shape == _COUNT:
                    family.inc(labels, slot[0])  # type: ignore[union-attr]
                elif metric.shape == _SUM:
                    if slot[1]:  # at least one usable value: a label set seen only with bad values is not born
                        family.inc(labels, slot[0])  # type: ignore[union-attr]
                elif any(slot[:-1]):
                    family.merge(labels, slot[:-1], slot[-1])  # type: ignore[union-attr]
        for reason_labels, count in skipped.items():
            self._skipped.inc(reason_labels, count)
        for metric in self._gauges:  # a gauge skips lines like the others; its value is found by _apply_gauges
            for row, count in counted.items():
                value = parse_value(row[width + metric.value])  # type: ignore[operator]
                if not metric.usable(value) and metric.accepts(row[:width]):
                    self._skipped.inc((metric.metric.name, value), count)  # type: ignore[arg-type]

    def _apply_gauges(self, rows: list[tuple], counted: dict[tuple, int]) -> None:
        """A gauge shows the last usable value its label set saw, in line order: scan back from the newest line
        until every label set with a usable value in this batch has been found (usually a few lines)."""
        width = self.width
        for metric in self._gauges:
            position = width + metric.value  # type: ignore[operator]
            wanted = {tuple(label_text(row[i]) for i in metric.labels) for row in counted
                      if metric.usable(parse_value(row[position])) and metric.accepts(row[:width])}
            for row in reversed(rows):
                if not wanted:
                    break
                labels = tuple(label_text(row[i]) for i in metric.labels)
                value = parse_value(row[position])
                if labels in wanted and metric.usable(value) and metric.accepts(row[:width]):
                    metric.family.set(labels, value)  # type: ignore[union-attr, arg-type]
                    wanted.discard(labels)


def _json_object(line: str) -> dict | None:
    try:
        fields = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return fields if isinstance(fields, dict) else None


def _count(rows: Iterable[tuple]) -> Counter[tuple]:
    try:
        return Counter(rows)
    except TypeError:  # a JSON field holding an object or a list: count it by its text
        return Counter(tuple(map(_hashable, row)) for row in rows)
