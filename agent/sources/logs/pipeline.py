"""The pure core of a log source: complete lines in, aggregated metric updates out, no I/O.

Per line the work is one regex match (or one JSON/logfmt parse), one tuple of the fields any metric uses as
a label or filter, one dict increment, and a float conversion per value field. Match filters, label
projection and the store are applied once per distinct field tuple per batch, not per line, so a batch of
thousands of lines touches the store a handful of times.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.sources.logs.config import LogMetric, LogSourceConfig
from agent.store import Family, Group

_LOGFMT_RE = re.compile(r'([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))')


@dataclass
class BatchResult:
    lines: int = 0
    unmatched: int = 0
    malformed: int = 0


@dataclass
class _Aggregate:
    """Per batch: for each tuple of key fields, the line count, per value field the sum, per histogram the
    bucket counts, per gauge the last value."""

    counts: dict[tuple, int] = field(default_factory=dict)
    sums: dict[tuple, list[float]] = field(default_factory=dict)
    buckets: dict[tuple, list[list[int]]] = field(default_factory=dict)
    last: dict[tuple, list[float | None]] = field(default_factory=dict)


def parse_logfmt(line: str) -> dict[str, str]:
    return {m.group(1): (m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3))
            for m in _LOGFMT_RE.finditer(line)}


class Pipeline:
    """Turns batches of lines into store updates for one log source's metrics."""

    def __init__(self, config: LogSourceConfig, group: Group):
        self.config = config
        metrics = config.metrics
        key_fields: list[str] = []
        for metric in metrics:
            for name in (*metric.labels, *metric.match):
                if name not in key_fields:
                    key_fields.append(name)
        self.key_fields = tuple(key_fields)
        value_fields: list[str] = []
        for metric in metrics:
            if metric.value and metric.value not in value_fields:
                value_fields.append(metric.value)
        self.value_fields = tuple(value_fields)
        self._value_index = {name: i for i, name in enumerate(value_fields)}
        self._histograms = [m for m in metrics if m.type == "histogram"]
        self._gauges = [m for m in metrics if m.type == "gauge"]
        self._families: list[tuple[LogMetric, Family, Callable[[tuple], bool], tuple[int, ...]]] = []
        position = {name: i for i, name in enumerate(self.key_fields)}
        for metric in metrics:
            family = _family(group, metric, config.max_series_per_metric)
            self._families.append((metric, family, _filter(metric, position),
                                   tuple(position[label] for label in metric.labels)))
            if not metric.labels and metric.type == "counter":
                family.ensure(())  # born at 0, so increase() sees the first event (loki #9921)
        self._pattern = re.compile(config.pattern) if config.pattern else None

    def process(self, lines: list[str]) -> BatchResult:
        aggregate = _Aggregate()
        result = BatchResult(lines=len(lines))
        if self._pattern is not None:
            self._aggregate_regex(lines, aggregate, result)
        else:
            self._aggregate_fields(lines, aggregate, result)
        self._merge(aggregate)
        return result

    def _aggregate_regex(self, lines: list[str], aggregate: _Aggregate, result: BatchResult) -> None:
        """The hot loop: kept flat (no call per line beyond the regex) because it runs for every line."""
        match = self._pattern.match  # type: ignore[union-attr]
        fields = self.key_fields + self.value_fields
        width, values_width = len(self.key_fields), len(self.value_fields)
        counts, sums, buckets = aggregate.counts, aggregate.sums, aggregate.buckets
        histograms = [(self._value_index[m.value], m.buckets) for m in self._histograms]  # type: ignore[index]
        gauges = [self._value_index[m.value] for m in self._gauges]  # type: ignore[index]
        last = aggregate.last
        bisect_left = bisect.bisect_left
        unmatched = malformed = 0
        for line in lines:
            found = match(line)
            if found is None:
                unmatched += 1
                continue
            groups = found.group(*fields) if len(fields) > 1 else (found.group(*fields),) if fields else ()
            key = groups[:width]
            if values_width:
                try:
                    values = [float(text) for text in groups[width:]]  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    malformed += 1
                    continue
                line_sums = sums.get(key)
                if line_sums is None:
                    line_sums = sums[key] = [0.0] * values_width
                    buckets[key] = [[0] * (len(bounds) + 1) for _, bounds in histograms]
                for index, value in enumerate(values):
                    line_sums[index] += value
                if histograms:
                    for (index, bounds), bucket_counts in zip(histograms, buckets[key], strict=True):
                        bucket_counts[bisect_left(bounds, values[index])] += 1
                if gauges:
                    last.pop(key, None)
                    last[key] = [values[index] for index in gauges]
            counts[key] = counts.get(key, 0) + 1
        result.unmatched += unmatched
        result.malformed += malformed

    def _aggregate_fields(self, lines: list[str], aggregate: _Aggregate, result: BatchResult) -> None:
        is_json = self.config.format == "json"
        key_fields, value_fields = self.key_fields, self.value_fields
        for line in lines:
            if is_json:
                try:
                    fields = json.loads(line)
                except ValueError:
                    result.malformed += 1
                    continue
                if not isinstance(fields, dict):
                    result.malformed += 1
                    continue
            else:
                fields = parse_logfmt(line)
                if not fields:
                    result.unmatched += 1
                    continue
            key = tuple(_text(fields.get(name)) for name in key_fields)
            try:
                values = [float(fields[name]) for name in value_fields]
            except (KeyError, TypeError, ValueError):
                result.malformed += 1
                continue
            self._add(aggregate, key, values)

    def _add(self, aggregate: _Aggregate, key: tuple, values: list[float]) -> None:
        aggregate.counts[key] = aggregate.counts.get(key, 0) + 1
        sums = aggregate.sums.get(key)
        if sums is None:
            sums = aggregate.sums[key] = [0.0] * len(values)
            aggregate.buckets[key] = [[0] * (len(m.buckets) + 1) for m in self._histograms]
        for index, value in enumerate(values):
            sums[index] += value
        if self._histograms:
            for counts, metric in zip(aggregate.buckets[key], self._histograms, strict=True):
                counts[bisect.bisect_left(metric.buckets, values[self._value_index[metric.value]])] += 1  # type: ignore[index]
        if self._gauges:  # pop first: the dict's order becomes the order of each key's last line
            aggregate.last.pop(key, None)
            aggregate.last[key] = [values[self._value_index[m.value]] for m in self._gauges]  # type: ignore[index]

    def _merge(self, aggregate: _Aggregate) -> None:
        for metric, family, accepts, label_positions in self._families:
            gauge_index = self._gauges.index(metric) if metric.type == "gauge" else -1
            histogram_index = self._histograms.index(metric) if metric.type == "histogram" else -1
            value_index = self._value_index.get(metric.value or "", -1)
            keys = aggregate.last if metric.type == "gauge" else aggregate.counts
            for key in keys:
                if not accepts(key):
                    continue
                labels = tuple(key[i] or "" for i in label_positions)
                if metric.type == "counter":
                    family.inc(labels, aggregate.sums[key][value_index] if value_index >= 0 else aggregate.counts[key])
                elif metric.type == "gauge":
                    family.set(labels, aggregate.last[key][gauge_index])  # type: ignore[arg-type]
                else:
                    family.merge_histogram(labels, aggregate.buckets[key][histogram_index],  # type: ignore[arg-type]
                                           aggregate.sums[key][value_index])


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _filter(metric: LogMetric, position: dict[str, int]) -> Callable[[tuple], bool]:
    checks = [(position[name], re.compile(pattern).fullmatch) for name, pattern in metric.match.items()]
    if not checks:
        return lambda key: True
    return lambda key: all(key[i] is not None and fullmatch(key[i]) is not None for i, fullmatch in checks)


def _family(group: Group, metric: LogMetric, max_series: int) -> Family:
    if metric.type == "counter":
        return group.counter(metric.name[: -len("_total")], metric.help, metric.labels, max_series)
    if metric.type == "gauge":
        return group.gauge(metric.name, metric.help, metric.labels, max_series)
    return group.histogram(metric.name, metric.help, metric.labels, metric.buckets, max_series)
