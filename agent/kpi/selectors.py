"""Series selectors as specs write them (``metric{label="v",other!~"5.."}``), and the ``le`` matcher of a
histogram bound in every spelling exporters use."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from agent.config import values
from agent.kpi.model import Matcher, Selector
from agent.series.exposition import go_float

_MATCHER_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_SELECTOR_RE = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$", re.DOTALL)


def make_selector(metric: str, matchers: tuple[Matcher, ...]) -> Selector:
    """A selector built from parts (the histogram shorthand's _bucket and _count selectors)."""
    body = ",".join(m.text for m in matchers)
    return Selector(f"{metric}{{{body}}}" if body else metric, metric, matchers)


def parse_selector(value: Any) -> Selector:
    """A series selector: ``metric{label="v",other!~"5.."}``."""
    text = values.nonempty_string(value)
    match = _SELECTOR_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a selector (metric{{label=\"value\",...}}); "
                         "use numerator_query/denominator_query for other PromQL")
    metric, body = match.group(1), match.group(2)
    matchers = []
    if body and body.strip():
        for part in _split_matchers(body):
            matchers.append(_parse_matcher(text, part))
    return Selector(text.strip(), metric, tuple(matchers))


def _parse_matcher(selector: str, part: str) -> Matcher:
    found = _MATCHER_RE.fullmatch(part)
    if not found:
        raise ValueError(f"{selector!r}: {part.strip()!r} is not a label matcher (label=\"value\")")
    label, op, raw = found.groups()
    unescaped = raw.encode().decode("unicode_escape")
    if op in ("=~", "!~"):
        try:
            re.compile(unescaped)
        except re.error as exc:
            raise ValueError(f"{selector!r}: regex {raw!r} does not compile: {exc}") from None
    return Matcher(label, op, unescaped)


def _split_matchers(body: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in body:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if "".join(current).strip():
        parts.append("".join(current))
    return parts


def bound_spellings(bound: float) -> list[str]:
    """How exporters write a bucket bound in ``le``: Go's client (``1``, ``1e+06``) and Python's (``1.0``)."""
    digits = Decimal(repr(bound)).normalize()
    exponent = digits.adjusted()
    if exponent < -4 or exponent >= 6:  # Go's %g with the shortest precision switches to an exponent here
        mantissa = f"{digits.scaleb(-exponent):f}"
        go = f"{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"
    else:
        go = f"{digits:f}"
    return list(dict.fromkeys([go_float(bound), go]))


def bound_matcher(bound: float) -> Matcher:
    spellings = bound_spellings(bound)
    if len(spellings) == 1:
        return Matcher("le", "=", spellings[0])
    return Matcher("le", "=~", "|".join(re.escape(s) for s in spellings))
