"""Journal source config: which journal, which entries (units, field matches), and the metrics their fields
feed (the same metric language as log sources)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agent.config import values as config_values
from agent.config.fields import Fields
from agent.config.regex import Regex
from agent.formatting import excerpt
from agent.series.family import DEFAULT_MAX_SERIES
from agent.sources.logs.config import (
    DEFAULT_MAX_LINE_BYTES,
    LogMetric,
    parse_format,
    parse_max_line_bytes,
    parse_metrics,
    parse_static_labels,
)

_FIELD_NAME_RE = re.compile(r"^[A-Z0-9_]+$")  # journal field names: upper case, digits, underscores


@dataclass(frozen=True)
class JournalSourceConfig:
    name: str
    directory: str | None = None  # journal files to read (journalctl --directory); None: the system journal
    files: tuple[str, ...] = ()  # or these journal files (journalctl --file, globs allowed)
    units: tuple[str, ...] = ()  # entries of any of these units (journalctl --unit)
    matches: tuple[tuple[str, tuple[str, ...]], ...] = ()  # field -> values: one of the values, for every field
    start_at: str = "end"
    format: str | None = None  # how MESSAGE becomes fields; None: the entry's fields only
    pattern: Regex | None = None
    max_series_per_metric: int = DEFAULT_MAX_SERIES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    labels: dict[str, str] = field(default_factory=dict)
    metrics: tuple[LogMetric, ...] = ()
    where: tuple[int | None, str] = field(default=(None, ""), compare=False)  # (line, field path) for errors


def _absolute(value: Any) -> str:
    text = config_values.nonempty_string(value)
    if not text.startswith("/"):
        raise ValueError(f"{excerpt(text)} is not an absolute path")
    return text


def _unit(value: Any) -> str:
    text = config_values.nonempty_string(value)
    if text.startswith("-") or any(c.isspace() for c in text):
        raise ValueError(f"{excerpt(text)} is not a unit name")
    return text


def _matches(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of journal fields to a value or a list of values, "
                         "e.g. {SYSLOG_IDENTIFIER: sshd, PRIORITY: [0, 1, 2, 3]}")
    result = []
    for name, values in value.items():
        if not isinstance(name, str) or not _FIELD_NAME_RE.match(name) or name.startswith("__"):
            raise ValueError(f"{excerpt(name)} is not a journal field name (upper case, digits, underscores)")
        items = values if isinstance(values, list) else [values]
        if not items or any(isinstance(item, (dict, list)) or item is None for item in items):
            raise ValueError(f"{name}: expected a value or a list of values")
        result.append((name, tuple(("true" if item else "false") if isinstance(item, bool) else str(item)
                                   for item in items)))
    return tuple(result)


def parse_journal_source(fields: Fields) -> JournalSourceConfig | None:
    name = fields.get("name", config_values.nonempty_string)
    directory = fields.get("directory", _absolute, None)
    files = fields.get("files", config_values.list_of(_absolute), []) or []
    if fields.has("directory") and fields.has("files"):
        fields.error("files", "journalctl reads a directory or files, not both: drop directory or files")
    units = fields.get("units", config_values.list_of(_unit), []) or []
    matches = fields.get("matches", _matches, ()) or ()
    start_at = fields.get("start_at", config_values.one_of("end", "beginning"), "end")
    fmt, compiled = parse_format(fields, None)
    limit = fields.get("max_series_per_metric", config_values.positive_integer, DEFAULT_MAX_SERIES)
    max_line = parse_max_line_bytes(fields)
    static = parse_static_labels(fields)
    metrics = parse_metrics(fields, None, static)
    fields.finish()
    if name is None or (fmt == "regex" and compiled is None) or (fields.has("format") and fmt is None):
        return None
    return JournalSourceConfig(name, directory, tuple(files), tuple(units), matches, start_at, fmt,
                               compiled, limit, max_line, static, metrics,
                               (fields.line_of("name"), fields.field("name")))
