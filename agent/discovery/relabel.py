"""Prometheus's ``relabel_configs``, for targets the agent discovers: same keys, defaults and semantics.

A rule reads ``source_labels`` joined by ``separator`` (";"), matches ``regex`` (default ``(.*)``) against the
whole value (anchored at both ends, ``.`` matching newlines too, as in Prometheus), and acts:

- ``replace`` (default): on a match, set ``target_label`` to ``replacement`` (default ``$1``) with ``$1``,
  ``${1}``, ``$name`` and ``${name}`` expanded as Go's ``regexp.Expand`` does (``$1x`` names group ``1x``,
  a missing group is empty); ``target_label`` is expanded the same way; an empty result deletes the label;
- ``keep`` / ``drop``: keep or drop the target when the value matches;
- ``hashmod``: set ``target_label`` to the MD5 of the value (its last 8 bytes, big-endian) modulo ``modulus``;
- ``labelmap``: for every label whose name matches, copy its value to the label named by ``replacement``
  expanded against the name;
- ``labeldrop`` / ``labelkeep``: remove the labels whose names match (do not match).

Regular expressions are RE2's, as in Prometheus (``agent.config.regex``): same syntax, same matches, linear time
whatever a discovered label holds. Pure functions: parse once at config time, apply to label dicts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.config import regex as regexes
from agent.config import values
from agent.config.fields import Fields
from agent.config.regex import Match, Regex
from agent.config.validation import LABEL_NAME_RE
from agent.formatting import excerpt

ACTIONS = ("replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep")
DEFAULT_REGEX = "(.*)"
DEFAULT_SEPARATOR = ";"
DEFAULT_REPLACEMENT = "$1"
_TEMPLATE_RE = re.compile(r"\$(?:(\$)|\{([a-zA-Z0-9_]+)\}|([a-zA-Z0-9_]+))")


@functools.cache
def _target_template() -> Regex:
    """What a target_label for replace may be, with $1 / ${name} templates: Prometheus's relabelTarget, whose
    nested repetition only RE2 runs in linear time (Python's re took 20 s for 20 letters and a "!")."""
    return regexes.compile(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$")


@functools.cache
def _default_regex() -> Regex:
    return regexes.compile(DEFAULT_REGEX, dot_matches_newline=True)


@dataclass(frozen=True)
class RelabelRule:
    action: str = "replace"
    source_labels: tuple[str, ...] = ()
    separator: str = DEFAULT_SEPARATOR
    regex: Regex = field(default_factory=_default_regex)
    target_label: str = ""
    replacement: str = DEFAULT_REPLACEMENT
    modulus: int = 0


def expand(template: str, match: Match, regex: Regex) -> str:
    """``template`` with ``$1``, ``${1}``, ``$name``, ``${name}`` and ``$$`` replaced as Go's Expand does:
    a group ``regex`` does not have expands to nothing."""
    if "$" not in template:
        return template

    def group(found: re.Match[str]) -> str:
        if found.group(1):
            return "$"
        name = found.group(2) or found.group(3)
        if name.isdigit():
            index = int(name)
            return (match.group(index) or "") if index <= regex.groups else ""
        return (match.group(name) or "") if name in regex.groupindex else ""

    return _TEMPLATE_RE.sub(group, template)


def apply(rules: Iterable[RelabelRule], labels: dict[str, str]) -> dict[str, str] | None:
    """The labels after every rule, or None if a rule dropped the target. ``labels`` is not modified; a label
    set to the empty string is deleted, as in Prometheus."""
    result = dict(labels)
    for rule in rules:
        if not _relabel(rule, result):
            return None
    return result


def _relabel(rule: RelabelRule, labels: dict[str, str]) -> bool:
    action = rule.action
    value = rule.separator.join(labels.get(name, "") for name in rule.source_labels)
    if action == "keep":
        return rule.regex.fullmatch(value) is not None
    if action == "drop":
        return rule.regex.fullmatch(value) is None
    if action == "replace":
        match = rule.regex.fullmatch(value)
        if match is not None:
            target = expand(rule.target_label, match, rule.regex)
            if LABEL_NAME_RE.match(target):
                _set(labels, target, expand(rule.replacement, match, rule.regex))
    elif action == "hashmod":
        import hashlib  # only for hashmod: most agents never load it

        digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
        _set(labels, rule.target_label, str(int.from_bytes(digest[8:], "big") % rule.modulus))
    elif action == "labelmap":
        for name, label_value in list(labels.items()):
            match = rule.regex.fullmatch(name)
            if match is not None:
                _set(labels, expand(rule.replacement, match, rule.regex), label_value)
    elif action == "labeldrop":
        for name in [name for name in labels if rule.regex.fullmatch(name)]:
            del labels[name]
    elif action == "labelkeep":
        for name in [name for name in labels if not rule.regex.fullmatch(name)]:
            del labels[name]
    return True


def _set(labels: dict[str, str], name: str, value: str) -> None:
    if value:
        labels[name] = value
    else:
        labels.pop(name, None)


# --- parsing ------------------------------------------------------------------------------------------------

def label_name(value: Any) -> str:
    """A label name as Prometheus accepts it, ``__`` prefix included (``__address__``, ``__meta_*``)."""
    if not isinstance(value, str) or not LABEL_NAME_RE.match(value):
        raise ValueError(f"{excerpt(value)} is not a valid label name")
    return value


def _regex(value: Any) -> Regex:
    """Prometheus's: RE2, anchored at both ends (applied with fullmatch), "." matching newlines too."""
    if not isinstance(value, str):
        raise ValueError(f"expected a regular expression string, got {type(value).__name__}")
    return regexes.compile(value, dot_matches_newline=True)


def parse_rule(fields: Fields) -> RelabelRule | None:
    """One item of ``relabel_configs``; every problem goes to ``fields.report``."""
    defaults = RelabelRule()
    action = fields.get("action", values.one_of(*ACTIONS), "replace")
    sources = tuple(fields.get("source_labels", values.list_of(label_name), []))
    separator = fields.get("separator", values.string, DEFAULT_SEPARATOR)
    regex = fields.get("regex", _regex, defaults.regex)
    target = fields.get("target_label", values.string, "")
    replacement = fields.get("replacement", values.string, DEFAULT_REPLACEMENT)
    modulus = fields.get("modulus", values.positive_integer, 0)
    if "action" in fields.invalid:
        pass  # what the other keys should be depends on the action
    elif action in ("replace", "hashmod") and not target:
        fields.report.error(fields.line, fields.path, f"action {action} needs a target_label")
    elif action == "replace" and not _target_template().fullmatch(target):
        fields.error("target_label", f"{excerpt(target)} is not a label name (or a $1 / ${{name}} template)")
    elif action == "hashmod" and not LABEL_NAME_RE.match(target):
        fields.error("target_label", f"{excerpt(target)} is not a valid label name")
    if action == "hashmod" and not modulus and "modulus" not in fields.invalid:
        fields.report.error(fields.line, fields.path, "action hashmod needs a modulus")
    if action == "labelmap" and not _target_template().fullmatch(replacement):
        fields.error("replacement", f"{excerpt(replacement)} is not a label name (or a $1 / ${{name}} template)")
    if action in ("labeldrop", "labelkeep"):
        extra = [key for key in ("source_labels", "separator", "target_label", "replacement", "modulus")
                 if fields.has(key)]
        if extra:
            fields.error(extra[0], f"action {action} takes only a regex")
    elif action != "hashmod" and fields.has("modulus"):
        fields.error("modulus", "is only used by action hashmod")
    fields.finish()
    return RelabelRule(action, sources, separator, regex, target, replacement, modulus)
