"""Just enough PromQL for checks, imports and the compiler: the metric names an expression selects, whether a
query is the plain ``sum(rate(selector[window]))`` that a KPI selector stands for, and numbers as PromQL
reads them back exactly. promtool remains the judge of whether an expression parses; this never has to
reject anything."""

from __future__ import annotations

import re

_TOKEN_RE = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>(?:0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(?:[a-zA-Z]+[0-9a-zA-Z]*)*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<punct>[(){}\[\],@]|=~|!~|!=|==|<=|>=|[-+*/%^=<>])
  | (?P<space>\s+)
""", re.VERBOSE)
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                 "quantile", "limitk", "limit_ratio"}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
             "atan2", "inf", "nan", "start", "end"}
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}

_SELECTOR = r'[a-zA-Z_:][a-zA-Z0-9_:]*\s*(?:\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\})?'
_RANGE = r"\[\s*(?:\{\{\s*\.?window\s*\}\}|[0-9a-z]+)\s*\]"
_RATE = rf"(?:rate|increase)\s*\(\s*(?P<selector>{_SELECTOR})\s*{_RANGE}\s*\)"
_SUM_OF_RATE_RES = [re.compile(pattern) for pattern in (
    rf"^\s*sum\s*by\s*\((?P<labels>[^)]*)\)\s*\(\s*{_RATE}\s*\)\s*$",
    rf"^\s*sum\s*\(\s*{_RATE}\s*\)\s*(?:by\s*\((?P<labels>[^)]*)\))?\s*$",
    rf"^\s*{_RATE}\s*$",
    rf"^\s*(?P<selector>{_SELECTOR})\s*$",
)]
# a sum of counter values: what OpenSLO queries with ratioMetric.counter: true return
_SUM_OF_COUNTER_RES = [re.compile(pattern) for pattern in (
    rf"^\s*sum\s*by\s*\((?P<labels>[^)]*)\)\s*\(\s*(?P<selector>{_SELECTOR})\s*\)\s*$",
    rf"^\s*sum\s*\(\s*(?P<selector>{_SELECTOR})\s*\)\s*(?:by\s*\((?P<labels>[^)]*)\))?\s*$",
)]


def number(value: float) -> str:
    """A float as PromQL reads it back exactly, without noise digits (0.0010000000000000009 -> 0.001)."""
    text = f"{value:.12g}"
    return text if "e" not in text else repr(value)


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens = []
    position = 0
    while position < len(expr):
        match = _TOKEN_RE.match(expr, position)
        if not match:  # something we do not know: skip one character, promtool judges the syntax
            position += 1
            continue
        position = match.end()
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append((kind, match.group()))
    return tokens


def metric_names(expr: str) -> list[str]:
    """The metric names ``expr`` selects, in order of appearance (``{{window}}`` placeholders allowed)."""
    tokens = _tokens(expr.replace("{{window}}", "5m"))
    names: list[str] = []
    depth_braces = depth_brackets = 0
    skip_list = False
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if text == "{":
            depth_braces += 1
        elif text == "}":
            depth_braces -= 1
        elif text == "[":
            depth_brackets += 1
        elif text == "]":
            depth_brackets -= 1
        elif skip_list:
            if text == ")":
                skip_list = False
        elif depth_braces:
            if text == "__name__" and following == "=" and index + 2 < len(tokens):
                names.append(tokens[index + 2][1][1:-1])
        elif kind == "ident" and not depth_brackets:
            if text in _LABEL_LISTS and following == "(":
                skip_list = True
                index += 1
            elif text == "offset":
                index += 1
            elif text not in _KEYWORDS and text not in _AGGREGATIONS and following != "(":
                names.append(text)
        index += 1
    return list(dict.fromkeys(names))


def sum_of_rate(query: str, counter: bool = False) -> tuple[str, list[str]] | None:
    """(selector, by-labels) when ``query`` is ``sum [by (labels)] (rate|increase(selector[window]))``, a bare
    rate of a selector or a bare selector (a counter); with ``counter`` (the query returns counter values), also
    ``sum [by (labels)] (selector)``. None for anything else."""
    for pattern in _SUM_OF_RATE_RES + (_SUM_OF_COUNTER_RES if counter else []):
        match = pattern.match(query)
        if match:
            labels = match.groupdict().get("labels") or ""
            return match.group("selector").strip(), [label.strip() for label in labels.split(",") if label.strip()]
    return None
