"""Prometheus's target group: addresses sharing labels, as ``static_configs``, a ``file_sd`` file and an
``http_sd`` answer write them (``[{targets: [...], labels: {...}}]``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import values
from agent.config.fields import Fields
from agent.config.problems import ConfigError, FileProblems, Problem
from agent.config.yaml import load_text
from agent.discovery import relabel
from agent.formatting import excerpt


@dataclass(frozen=True)
class TargetGroup:
    targets: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)


def _sd_label_map(value: Any) -> dict[str, str]:
    """Target group labels: Prometheus label names (``__`` prefixes allowed) to scalar values."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of label names to values, got {excerpt(value)}")
    labels = {}
    for key, item in value.items():
        relabel.label_name(key)
        if isinstance(item, (dict, list)) or item is None:
            raise ValueError(f"label {excerpt(key)}: expected a value, got {excerpt(item)}")
        labels[key] = str(item).lower() if isinstance(item, bool) else str(item)
    return labels


def parse_target_group(fields: Fields, meta: dict[str, str] | None = None) -> TargetGroup:
    """One ``{targets: [...], labels: {...}}`` entry, from the config or from a target file or endpoint."""
    targets = fields.get("targets", values.list_of(values.nonempty_string), [])
    labels = fields.get("labels", _sd_label_map, {})
    fields.finish()
    return TargetGroup(tuple(targets), {**labels, **(meta or {})})


# A JSON escape of a UTF-16 surrogate: a pair (one character beyond U+FFFF), or a lone one; and an escaped
# backslash, matched so that the scan stays aligned on escapes ("\\\\ud800" is a backslash, then text).
_SURROGATE_ESCAPE_RE = re.compile(
    r"\\(?:\\|u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|u[dD][89a-fA-F][0-9a-fA-F]{2})")


def _unescaped_surrogate(match: re.Match[str]) -> str:
    high, low = match.group(1), match.group(2)
    if high:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00)
    return match.group(0) if match.group(0) == "\\\\" else "\ufffd"


def json_surrogates_decoded(text: str) -> str:
    """JSON text with its surrogate escapes decoded: pairs to their character, a lone one to U+FFFD (what Go's
    encoding/json, so Prometheus, reads). libyaml, which reads target files, refuses both."""
    return _SURROGATE_ESCAPE_RE.sub(_unescaped_surrogate, text) if "\\u" in text else text


def parse_target_groups(text: str, name: str, meta: dict[str, str], is_json: bool = True) -> list[TargetGroup]:
    """The target groups of a file_sd file or an http_sd response (JSON or YAML: a list of
    ``{targets: [...], labels: {...}}``); raises ConfigError naming file, line and field of every problem."""
    document = load_text(json_surrogates_decoded(text) if is_json else text, name)
    if document is None:
        return []
    report = FileProblems(name)
    groups = []
    if not isinstance(document, list):
        report.error(getattr(document, "line", None), "", "expected a list of target groups "
                                                          "({targets: [...], labels: {...}})")
    else:
        lines = getattr(document, "item_lines", [None] * len(document))
        for index, item in enumerate(document):
            groups.append(parse_target_group(Fields(item, f"[{index}]", report, lines[index]), meta))
    report.raise_if_errors()
    return groups


def read_target_file(path: str) -> list[TargetGroup]:
    """A file_sd file's target groups (blocking); raises ConfigError."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read: {exc}")]) from None
    return parse_target_groups(text, path, {"__meta_filepath": path}, path.lower().endswith(".json"))
