"""Log source config: which files, how lines become fields, and which metrics the fields feed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agent import yamlsrc
from agent.sources.base import DeclaredFamily
from agent.store import DEFAULT_BUCKETS, DEFAULT_MAX_SERIES, FamilySpec, counter, gauge, histogram
from agent.yamlsrc import Fields, excerpt

FORMATS = ("regex", "json", "logfmt")
IDENTITY_LABEL = "source"
DEFAULT_MAX_LINE_BYTES = 100 * 1024  # Vector's default; a line longer than this is counted and skipped


@dataclass(frozen=True)
class LogMetric:
    name: str  # as exported; counters end in _total
    type: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    value: str | None = None  # field whose number is added/observed/set; None = count lines
    match: dict[str, str] = field(default_factory=dict)  # field -> regex (full match)
    buckets: tuple[float, ...] = ()
    where: tuple[int | None, str] = field(default=(None, ""), compare=False)  # (line, field path) for errors

    @property
    def spec(self) -> FamilySpec:
        if self.type == "counter":
            return counter(self.name, self.help, self.labels)
        if self.type == "gauge":
            return gauge(self.name, self.help, self.labels)
        return histogram(self.name, self.help, self.labels, self.buckets)


@dataclass(frozen=True)
class LogSourceConfig:
    name: str
    paths: tuple[str, ...]
    format: str = "regex"
    pattern: str | None = None
    start_at: str = "end"
    max_series_per_metric: int = DEFAULT_MAX_SERIES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    labels: dict[str, str] = field(default_factory=dict)
    metrics: tuple[LogMetric, ...] = ()
    where: tuple[int | None, str] = field(default=(None, ""), compare=False)  # (line, field path) for errors


# Self-metrics of a log source, beside the kpi_agent_source_* every source has; all labelled source="<name>".
LINES = counter("kpi_agent_log_lines_total", "Complete log lines read")
UNMATCHED = counter("kpi_agent_log_lines_unmatched_total",
                    "Lines the pattern did not match (or logfmt lines with no field)")
MALFORMED = counter("kpi_agent_log_lines_malformed_total",
                    "Lines that could not be parsed at all: bad JSON, not a JSON object, invalid UTF-8")
TOO_LONG = counter("kpi_agent_log_lines_too_long_total", "Lines longer than max_line_bytes, skipped")
SKIPPED = counter("kpi_agent_log_lines_skipped_total",
                  "Lines a metric skipped because its value field was missing or not a usable number",
                  ["metric", "reason"])
BYTES = counter("kpi_agent_log_bytes_total", "Bytes of complete lines read")
ROTATIONS = counter("kpi_agent_log_rotations_total", "Rotations and truncations detected")
WATCHED = gauge("kpi_agent_log_files_watched", "Files open for reading")
LAG = gauge("kpi_agent_log_lag_bytes", "Bytes written to the files but not read yet")
SELF_FAMILIES = (LINES, UNMATCHED, MALFORMED, TOO_LONG, SKIPPED, BYTES, ROTATIONS, WATCHED, LAG)
# Why a metric skipped a line; negative only for counters (a counter never goes down).
SKIP_REASONS = ("missing", "not_a_number", "not_finite", "negative")


def declared_families(config: LogSourceConfig) -> list[DeclaredFamily]:
    return [DeclaredFamily(metric.spec, *metric.where) for metric in config.metrics]


def _glob(value: Any) -> str:
    text = yamlsrc.nonempty_string(value)
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    return text


def _buckets(value: Any) -> tuple[float, ...]:
    bounds = yamlsrc.list_of(yamlsrc.number)(value)
    if not bounds:
        raise ValueError("needs at least one bucket")
    if bounds != sorted(set(bounds)):
        raise ValueError(f"buckets must be sorted and distinct, got {excerpt(bounds)}")
    return tuple(bounds)


def _match(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of field names to regular expressions")
    result = {}
    for name, pattern in value.items():
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise ValueError(f"{excerpt(name)}: regular expression {excerpt(pattern)} does not compile: "
                             f"{exc}") from None
        result[str(name)] = str(pattern)
    return result


def _parse_metric(item: Fields, fields_known: set[str] | None, reserved: set[str]) -> LogMetric | None:
    name = item.get("name", yamlsrc.metric_name)
    kind = item.get("type", yamlsrc.one_of("counter", "gauge", "histogram"))
    help_text = item.get("help", yamlsrc.string, None)
    labels = item.get("labels", yamlsrc.list_of(yamlsrc.label_name), []) or []
    value = item.get("value", yamlsrc.nonempty_string, None)
    match = item.get("match", _match, {}) or {}
    buckets = item.get("buckets", _buckets, None) if item.has("buckets") else None
    if kind == "histogram":
        if value is None and not item.has("value"):
            item.report.error(item.line, item.field("value"), "a histogram needs value: the field it observes")
        if buckets is None and not item.has("buckets"):
            buckets = DEFAULT_BUCKETS
    elif item.has("buckets"):
        item.error("buckets", "only histograms have buckets")
    if kind == "gauge" and value is None and not item.has("value"):
        item.report.error(item.line, item.field("value"), "a gauge needs value: the field whose last value it shows")
    if name and kind == "counter" and not name.endswith("_total"):
        item.error("name", f"counter names end in _total: {name}_total")
    if name and kind == "histogram" and name.endswith(("_bucket", "_sum", "_count")):
        item.error("name", "a histogram's name must not end in _bucket, _sum or _count")
    if name and kind == "gauge" and name.endswith("_total"):
        item.error("name", "_total is the suffix of counters: use type: counter, or another name")
    if name and name.startswith("kpi_agent_"):
        item.error("name", "kpi_agent_* names are the agent's own")
    for label in labels:
        if label in reserved or label == "le":
            item.error("labels", f"{label!r} is reserved" + (" (a static label of the source)" if label in reserved
                                                                and label != IDENTITY_LABEL else ""))
    if fields_known is not None:
        for key, used in (("labels", labels), ("value", [value] if value else []), ("match", list(match))):
            for name_used in used:
                if name_used not in fields_known:
                    item.error(key, f"{name_used!r} is not a named group of the pattern "
                                    f"(groups: {', '.join(sorted(fields_known)) or 'none'})")
    item.finish()
    if name is None or kind is None or (kind == "histogram" and (value is None or buckets is None)):
        return None
    return LogMetric(name, kind, help_text or f"{name} counted from logs", tuple(labels), value, match,
                     tuple(buckets or ()), (item.line_of("name"), item.field("name")))


def parse_log_source(fields: Fields) -> LogSourceConfig | None:
    name = fields.get("name", yamlsrc.nonempty_string)
    paths = fields.get("paths", yamlsrc.list_of(_glob))
    fmt = fields.get("format", yamlsrc.one_of(*FORMATS), "regex")
    start_at = fields.get("start_at", yamlsrc.one_of("end", "beginning"), "end")
    limit = fields.get("max_series_per_metric", yamlsrc.positive_integer, DEFAULT_MAX_SERIES)
    max_line = fields.get("max_line_bytes", yamlsrc.size, DEFAULT_MAX_LINE_BYTES)
    if max_line < 256 and "max_line_bytes" not in fields.invalid:
        fields.error("max_line_bytes", "must be at least 256B")
    static = fields.get("labels", yamlsrc.label_map, {})
    for label in sorted(set(static) & {IDENTITY_LABEL, "le"}):
        fields.error("labels", f"{label!r} is set by the agent to the source name" if label == IDENTITY_LABEL
                     else f"{label!r} is reserved")
    compiled = fields.get("pattern", yamlsrc.regex, None)
    if fmt == "regex" and not fields.has("pattern"):
        fields.report.error(fields.line, fields.field("pattern"), "format regex needs a pattern with named groups")
    if fmt != "regex" and fields.has("pattern"):
        fields.error("pattern", f"format {fmt} reads fields by name; pattern applies to format regex")
    known = set(compiled.groupindex) if compiled is not None and fmt == "regex" else None
    if compiled is not None and fmt == "regex" and not known:
        fields.error("pattern", "has no named groups ((?P<name>...)): no field to count by")
    metrics = []
    seen: set[str] = set()
    for item, path, line in fields.items("metrics"):
        entry = Fields(item, path, fields.report, line)
        metric = _parse_metric(entry, known, {IDENTITY_LABEL, *static}) if entry.ok else None
        if metric and metric.name in seen:
            fields.report.error(line, f"{path}.name", f"{metric.name!r} is defined twice")
        elif metric:
            seen.add(metric.name)
            metrics.append(metric)
    if not fields.has("metrics"):
        fields.report.error(fields.line, fields.field("metrics"), "is required: what to count")
    fields.finish()
    if name is None or paths is None or (fmt == "regex" and compiled is None):
        return None
    return LogSourceConfig(name, tuple(paths), fmt, compiled.pattern if compiled else None, start_at, limit,
                           max_line, static, tuple(metrics), (fields.line_of("name"), fields.field("name")))
