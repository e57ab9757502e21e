"""Log source config: which files, how lines become records and records fields, and which metrics the fields
feed. The metric part (``parse_metrics``) is shared with the journal kind."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agent.config import regex
from agent.config import values as config_values
from agent.config.fields import Fields
from agent.config.regex import Regex, Template
from agent.config.validation import family_problems, label_name, metric_name
from agent.formatting import excerpt
from agent.series.family import DEFAULT_BUCKETS, DEFAULT_MAX_SERIES, FamilySpec, counter, gauge, histogram
from agent.sources.base import IDENTITY_LABEL, DeclaredFamily

FORMATS = ("regex", "json", "logfmt")
CONTAINER_FORMATS = ("cri", "docker")
DEFAULT_MAX_LINE_BYTES = 100 * 1024  # Vector's default; a line longer than this is counted and skipped
FILENAME_LABEL = "filename"
KUBERNETES_LABELS = ("namespace", "pod", "container")
DEFAULT_MAX_LINES = 500  # lines joined into one multi-line record at most
DEFAULT_MULTILINE_TIMEOUT = 1.0  # seconds without a new line before a pending record is complete


@dataclass(frozen=True)
class Rewrite:
    """Every match of ``regex`` in the values of ``label`` replaced by ``template`` (``$1``, ``${name}``)."""

    label: str
    regex: Regex
    template: Template


@dataclass(frozen=True)
class LogMetric:
    name: str  # as exported; counters end in _total
    type: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()  # label names the metric sets from fields
    fields: tuple[str, ...] = ()  # the field each label reads, in the same order
    value: str | None = None  # field whose number is added/observed/set; None = count records
    match: dict[str, Regex] = field(default_factory=dict)  # field -> regex (full match)
    buckets: tuple[float, ...] = ()
    rewrite: tuple[Rewrite, ...] = ()  # applied in order, once per distinct label value
    values: dict[str, float] = field(default_factory=dict)  # words in the value field -> their number
    expire_after: float | None = None  # seconds without an update after which a label set is removed
    where: tuple[int | None, str] = field(default=(None, ""), compare=False)  # (line, field path) for errors

    def spec(self, file_labels: tuple[str, ...] = ()) -> FamilySpec:
        """The family, with the labels the source adds per file after the metric's own."""
        labels = (*self.labels, *file_labels)
        if self.type == "counter":
            return counter(self.name, self.help, labels)
        if self.type == "gauge":
            return gauge(self.name, self.help, labels)
        return histogram(self.name, self.help, labels, self.buckets)


@dataclass(frozen=True)
class Multiline:
    start: Regex  # a record starts at a line this regex finds (search); other lines continue it
    max_lines: int = DEFAULT_MAX_LINES
    timeout: float = DEFAULT_MULTILINE_TIMEOUT


@dataclass(frozen=True)
class LogSourceConfig:
    name: str
    paths: tuple[str, ...]
    format: str = "regex"
    pattern: Regex | None = None
    start_at: str = "end"
    max_series_per_metric: int = DEFAULT_MAX_SERIES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    labels: dict[str, str] = field(default_factory=dict)
    metrics: tuple[LogMetric, ...] = ()
    container: str | None = None  # cri | docker: the runtime's line format, parsed before `format`
    multiline: Multiline | None = None
    filename_label: bool = False
    kubernetes_labels: bool = False
    where: tuple[int | None, str] = field(default=(None, ""), compare=False)  # (line, field path) for errors

    @property
    def file_labels(self) -> tuple[str, ...]:
        """Labels whose values come from the path of the file a record was read from."""
        return ((FILENAME_LABEL,) if self.filename_label else ()) + (KUBERNETES_LABELS if self.kubernetes_labels
                                                                     else ())

    @property
    def framed(self) -> bool:
        """Whether lines are assembled into records (container partial lines, multi-line records)."""
        return self.container is not None or self.multiline is not None


# Self-metrics of a log source, beside the kpi_agent_source_* every source has; all labelled source="<name>".
LINES = counter("kpi_agent_log_lines_total", "Complete log lines read (journal: entries)")
RECORDS = counter("kpi_agent_log_records_total",
                  "Records parsed: lines, after container partial lines and multi-line records are joined")
UNMATCHED = counter("kpi_agent_log_lines_unmatched_total",
                    "Records the pattern did not match (or logfmt records with no field)")
MALFORMED = counter("kpi_agent_log_lines_malformed_total",
                    "Records that could not be parsed at all: bad JSON, not a JSON object, invalid UTF-8, "
                    "not in the container runtime's format")
TOO_LONG = counter("kpi_agent_log_lines_too_long_total", "Lines longer than max_line_bytes, skipped")
SKIPPED = counter("kpi_agent_log_lines_skipped_total",
                  "Records a metric skipped because its value field was missing or not a usable number",
                  ["metric", "reason"])
BYTES = counter("kpi_agent_log_bytes_total", "Bytes of complete lines read")
ROTATIONS = counter("kpi_agent_log_rotations_total", "Rotations and truncations detected")
WATCHED = gauge("kpi_agent_log_files_watched", "Files open for reading")
LAG = gauge("kpi_agent_log_lag_bytes", "Bytes written to the files but not read yet")
EXPIRED = counter("kpi_agent_log_series_expired_total", "Label sets removed by expire_after", ["metric"])
# What every source that feeds the pipeline reports; files add rotations, watched files and lag.
PIPELINE_FAMILIES = (LINES, RECORDS, UNMATCHED, MALFORMED, TOO_LONG, SKIPPED, BYTES, EXPIRED)
SELF_FAMILIES = (*PIPELINE_FAMILIES, ROTATIONS, WATCHED, LAG)
# Why a metric skipped a record; negative only for counters (a counter never goes down).
SKIP_REASONS = ("missing", "not_a_number", "not_finite", "negative")


def declared_families(metrics: tuple[LogMetric, ...], file_labels: tuple[str, ...] = ()) -> list[DeclaredFamily]:
    return [DeclaredFamily(metric.spec(file_labels), *metric.where) for metric in metrics]


def _glob(value: Any) -> str:
    text = config_values.nonempty_string(value)
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    return text


def _buckets(value: Any) -> tuple[float, ...]:
    bounds = config_values.list_of(config_values.number)(value)
    if not bounds:
        raise ValueError("needs at least one bucket")
    if bounds != sorted(set(bounds)):
        raise ValueError(f"buckets must be sorted and distinct, got {excerpt(bounds)}")
    return tuple(bounds)


def _match(value: Any) -> dict[str, Regex]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of field names to regular expressions")
    result = {}
    for name, pattern in value.items():
        try:  # {status: 500} means the text 500, as a number in YAML
            result[str(name)] = regex.parse(str(pattern) if isinstance(pattern, (int, float)) else pattern)
        except ValueError as exc:
            raise ValueError(f"{excerpt(name)}: {exc}") from None
    return result


_NOT_IN_LABEL_NAMES = re.compile(r"[^a-zA-Z0-9_]")


def _label(value: Any) -> tuple[str, str]:
    """(label name, field) of one item of a metric's ``labels``: a field (``http.status`` gives the label
    ``http_status``) or a one-entry mapping ``{label: field}``."""
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError(f"a label given as a mapping has one entry, label: field; got {excerpt(value)}")
        ((label, source),) = value.items()
        return label_name(label), config_values.nonempty_string(source)
    source = config_values.nonempty_string(value)
    label = _NOT_IN_LABEL_NAMES.sub("_", source)
    try:
        return label_name(label), source
    except ValueError:
        raise ValueError(f"field {excerpt(source)} does not make a label name: name it, "
                         f"{{my_label: {source}}}") from None


def _word(key: Any) -> str:
    return ("true" if key else "false") if isinstance(key, bool) else str(key)


def _values(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise ValueError("expected a mapping of words to numbers, e.g. {UP: 1, DOWN: 0}")
    result = {}
    for key, number in value.items():
        try:
            result[_word(key)] = config_values.number(number)
        except ValueError as exc:
            raise ValueError(f"{excerpt(key)}: {exc}") from None
    return result


def _parse_rewrite(item: Fields, labels: tuple[str, ...]) -> Rewrite | None:
    label = item.get("label", label_name)
    compiled = item.get("regex", regex.parse)
    replacement = item.get("replacement", config_values.string)
    item.finish()
    if label is not None and label not in labels:
        item.error("label", f"{label!r} is not a label of this metric (labels: {', '.join(labels) or 'none'})")
        return None
    if label is None or compiled is None or replacement is None:
        return None
    try:
        template = regex.template(replacement, compiled)
    except ValueError as exc:
        item.error("replacement", str(exc))
        return None
    return Rewrite(label, compiled, template)


@dataclass
class _Draft:
    """A metric item as written, before its checks."""

    name: str | None
    kind: str | None
    help: str | None
    pairs: list[tuple[str, str]]  # (label, field)
    value: str | None
    match: dict[str, Regex]
    buckets: tuple[float, ...] | None
    words: dict[str, float]
    expire_after: float | None
    rewrites: list[Rewrite | None]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label for label, _ in self.pairs)


def _read_metric(item: Fields) -> _Draft:
    name = item.get("name", metric_name)
    kind = item.get("type", config_values.one_of("counter", "gauge", "histogram"))
    pairs = item.get("labels", config_values.list_of(_label), []) or []
    labels = tuple(label for label, _ in pairs)
    buckets = item.get("buckets", _buckets, None) if item.has("buckets") else None
    if kind == "histogram" and buckets is None and not item.has("buckets"):
        buckets = DEFAULT_BUCKETS
    return _Draft(name, kind, item.get("help", config_values.string, None), pairs,
                  item.get("value", config_values.nonempty_string, None), item.get("match", _match, {}) or {}, buckets,
                  item.get("values", _values, {}) or {}, item.get("expire_after", config_values.duration, None),
                  [_parse_rewrite(Fields(raw, path, item.report, line), labels)
                   for raw, path, line in item.items("rewrite")])


def _check_value(item: Fields, draft: _Draft, file_labels: tuple[str, ...]) -> None:
    """What the metric's type asks of value, buckets, values and expire_after."""
    if draft.kind == "histogram" and draft.value is None and not item.has("value"):
        item.report.error(item.line, item.field("value"), "a histogram needs value: the field it observes")
    if draft.kind != "histogram" and item.has("buckets"):
        item.error("buckets", "only histograms have buckets")
    if draft.kind == "gauge" and draft.value is None and not item.has("value"):
        item.report.error(item.line, item.field("value"), "a gauge needs value: the field whose last value it shows")
    if draft.words and not item.has("value"):
        item.error("values", "maps the words of the value field to numbers: set value too")
    if draft.expire_after is not None and not draft.labels and not file_labels:
        item.error("expire_after", "a metric without labels has one series, which never expires")


def _check_fields(item: Fields, draft: _Draft, fields_known: set[str]) -> None:
    """Every field the metric reads is a named group of the pattern."""
    used = (("labels", [source for _, source in draft.pairs]), ("value", [draft.value] if draft.value else []),
            ("match", list(draft.match)))
    for key, names in used:
        for name_used in names:
            if name_used not in fields_known:
                item.error(key, f"{name_used!r} is not a named group of the pattern "
                                f"(groups: {', '.join(sorted(fields_known)) or 'none'})")


def _parse_metric(item: Fields, fields_known: set[str] | None, reserved: dict[str, str],
                  file_labels: tuple[str, ...]) -> LogMetric | None:
    """One item of ``metrics``: read, then checked (its value, its family's name and labels, its fields)."""
    draft = _read_metric(item)
    _check_value(item, draft, file_labels)
    if draft.name is not None and draft.kind is not None:
        for key, message in family_problems(draft.name, draft.kind, draft.labels, reserved):
            item.error(key, message)
    if fields_known is not None:
        _check_fields(item, draft, fields_known)
    item.finish()
    if draft.name is None or draft.kind is None or (draft.kind == "histogram" and (draft.value is None or
                                                                                     draft.buckets is None)):
        return None
    return LogMetric(draft.name, draft.kind, draft.help or f"{draft.name} counted from logs", draft.labels,
                     tuple(source for _, source in draft.pairs), draft.value, draft.match, tuple(draft.buckets or ()),
                     tuple(r for r in draft.rewrites if r is not None), draft.words, draft.expire_after,
                     (item.line_of("name"), item.field("name")))


def parse_metrics(fields: Fields, known: set[str] | None, static: dict[str, str],
                  file_labels: tuple[str, ...] = ()) -> tuple[LogMetric, ...]:
    """The ``metrics`` list of a log or journal source. ``known``: the fields records can have (the pattern's
    groups), or None when any name may occur."""
    metrics = []
    seen: set[str] = set()
    for item, path, line in fields.items("metrics"):
        entry = Fields(item, path, fields.report, line)
        reserved = {IDENTITY_LABEL: "is set by the agent to the source name",
                    **{label: "is a static label of the source" for label in static},
                    **{label: "is set by the source from the file's path" for label in file_labels}}
        metric = _parse_metric(entry, known, reserved, file_labels) if entry.ok else None
        if metric and metric.name in seen:
            fields.report.error(line, f"{path}.name", f"{metric.name!r} is defined twice")
        elif metric:
            seen.add(metric.name)
            metrics.append(metric)
    if not fields.has("metrics"):
        fields.report.error(fields.line, fields.field("metrics"), "is required: what to count")
    return tuple(metrics)


def parse_static_labels(fields: Fields, file_labels: tuple[str, ...] = ()) -> dict[str, str]:
    static = fields.get("labels", config_values.label_map, {})
    for label in sorted(set(static) & {IDENTITY_LABEL, "le", *file_labels}):
        fields.error("labels", f"{label!r} is set by the agent to the source name" if label == IDENTITY_LABEL
                     else f"{label!r} is set by the source from the file's path" if label in file_labels
                     else f"{label!r} is reserved")
    return static


def parse_max_line_bytes(fields: Fields) -> int:
    """``max_line_bytes``: longer lines are counted and skipped; under 256 B real lines would be lost."""
    max_line = fields.get("max_line_bytes", config_values.size, DEFAULT_MAX_LINE_BYTES)
    if max_line < 256 and "max_line_bytes" not in fields.invalid:
        fields.error("max_line_bytes", "must be at least 256B")
    return max_line


def parse_format(fields: Fields, default: str | None) -> tuple[str | None, Regex | None]:
    """``format`` and ``pattern``: how a record's text becomes fields. None: no format (journal fields only)."""
    fmt = fields.get("format", config_values.one_of(*FORMATS), default)
    compiled = fields.get("pattern", regex.parse, None)
    if fmt == "regex" and not fields.has("pattern"):
        fields.report.error(fields.line, fields.field("pattern"), "format regex needs a pattern with named groups")
    if fmt != "regex" and fields.has("pattern"):
        fields.error("pattern", f"format {fmt} reads fields by name; pattern applies to format regex"
                     if fmt else "pattern applies to format regex: set format: regex")
    if compiled is not None and fmt == "regex" and not compiled.groupindex:
        fields.error("pattern", "has no named groups ((?P<name>...)): no field to count by")
    return fmt, compiled if fmt == "regex" else None


def _multiline(section: Fields) -> Multiline | None:
    start = section.get("start", regex.parse)
    max_lines = section.get("max_lines", config_values.positive_integer, DEFAULT_MAX_LINES)
    timeout = section.get("timeout", config_values.duration, DEFAULT_MULTILINE_TIMEOUT)
    section.finish()
    return Multiline(start, max_lines, timeout) if start is not None else None


def parse_log_source(fields: Fields) -> LogSourceConfig | None:
    name = fields.get("name", config_values.nonempty_string)
    paths = fields.get("paths", config_values.list_of(_glob))
    fmt, compiled = parse_format(fields, "regex")
    start_at = fields.get("start_at", config_values.one_of("end", "beginning"), "end")
    limit = fields.get("max_series_per_metric", config_values.positive_integer, DEFAULT_MAX_SERIES)
    max_line = parse_max_line_bytes(fields)
    container = fields.get("container", config_values.one_of(*CONTAINER_FORMATS), None)
    multiline_section = fields.section("multiline")
    multiline = _multiline(multiline_section) if multiline_section is not None else None
    filename_label = fields.get("filename_label", config_values.boolean, False)
    kubernetes_labels = fields.get("kubernetes_labels", config_values.boolean, False)
    file_labels = ((FILENAME_LABEL,) if filename_label else ()) + (KUBERNETES_LABELS if kubernetes_labels else ())
    static = parse_static_labels(fields, file_labels)
    known = set(compiled.groupindex) if compiled is not None else None
    metrics = parse_metrics(fields, known if fmt == "regex" else None, static, file_labels)
    fields.finish()
    if name is None or paths is None or fmt is None or (fmt == "regex" and compiled is None) \
            or (multiline_section is not None and multiline is None):
        return None
    return LogSourceConfig(name, tuple(paths), fmt, compiled, start_at, limit,
                           max_line, static, metrics, container, multiline, filename_label, kubernetes_labels,
                           (fields.line_of("name"), fields.field("name")))
