"""Reads what a KPI measures: exactly one of ``ratio`` (two counters, or PromQL with {{window}}), ``latency``
(a classic histogram's bucket under a bound over its count), ``bool_gauge`` (a 0/1 gauge) or ``value``."""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import values as config_values
from agent.config.fields import Fields
from agent.kpi.model import Events, Expression, Selector
from agent.kpi.selectors import bound_matcher, make_selector, parse_selector
from agent.kpi.spec import values

INDICATORS = ("ratio", "latency", "bool_gauge", "value")
RATIO_SIDES = ("numerator", "bad", "denominator")


@dataclass
class Indicator:
    kind: str
    numerator: Events | None = None
    bad: Events | None = None
    denominator: Events | None = None
    gauge: Selector | None = None
    value: str | None = None


def read_indicator(fields: Fields, higher: bool, expressions: list[Expression]) -> Indicator | None:
    """The KPI's indicator, or None when it is missing or ambiguous (reported). Every expression it reads is
    appended to ``expressions``."""
    given = [key for key in INDICATORS if fields.has(key)]
    if len(given) != 1:
        fields.report.error(fields.line, fields.path, "give exactly one of ratio, latency, bool_gauge or value"
                            + (f" (got {', '.join(given)})" if given else ""))
    found = Indicator(given[0] if given else "ratio")
    value = fields.get("value", config_values.nonempty_string, None)
    if value is not None:
        expressions.append((fields.field("value"), fields.line_of("value") or 0, value))
        found.value = value
    gauge = fields.get("bool_gauge", parse_selector, None)
    if gauge is not None:
        expressions.append((fields.field("bool_gauge"), fields.line_of("bool_gauge") or 0, gauge.text))
        found.gauge = gauge
    ratio = fields.section("ratio")
    if ratio is not None:
        _read_ratio(ratio, higher, found, expressions)
    latency = fields.section("latency")
    if latency is not None:
        _read_latency(latency, higher, found, expressions)
    return found if len(given) == 1 else None


def _read_side(ratio: Fields, side: str, expressions: list[Expression]) -> Events | None:
    """``numerator`` (a selector) or ``numerator_query`` (PromQL with {{window}}), likewise bad, denominator."""
    selector = ratio.get(side, parse_selector, None)
    query = ratio.get(f"{side}_query", values.query_template, None)
    for key, text in ((side, selector.text if selector else None),
                      (f"{side}_query", query.replace("{{window}}", "5m") if query else None)):
        if text is not None:
            expressions.append((ratio.field(key), ratio.line_of(key) or 0, text))
    if ratio.has(side) and ratio.has(f"{side}_query"):
        ratio.report.error(ratio.line, f"{ratio.path}.{side}",
                           f"give {side} (a selector) or {side}_query (PromQL), not both")
    return Events(selector, query) if selector or query else None


def _read_ratio(ratio: Fields, higher: bool, found: Indicator, expressions: list[Expression]) -> None:
    sides = {side: _read_side(ratio, side, expressions) for side in RATIO_SIDES}
    good_keys = [k for k in ("numerator", "numerator_query", "bad", "bad_query") if ratio.has(k)]
    if len(good_keys) != 1:
        ratio.report.error(ratio.line, f"{ratio.path}.numerator",
                           "give exactly one of numerator, numerator_query (good events), bad or bad_query "
                           "(failed events)")
    if not (ratio.has("denominator") or ratio.has("denominator_query")):
        ratio.report.error(ratio.line, f"{ratio.path}.denominator",
                           "give exactly one of denominator (a selector) or denominator_query (PromQL)")
    if sides["bad"] and not higher:
        ratio.error(good_keys[0], "bad events make the good ratio (higher is better); for an error rate use "
                                  "numerator with higher_is_better: false")
    ratio.finish()
    found.numerator, found.bad, found.denominator = sides["numerator"], sides["bad"], sides["denominator"]


def _read_latency(latency: Fields, higher: bool, found: Indicator, expressions: list[Expression]) -> None:
    """``latency: {histogram, le}``: the bucket under ``le`` over the count, both with the histogram's matchers."""
    histogram = latency.get("histogram", parse_selector)
    bound = latency.get("le", values.bucket_bound)
    latency.finish()
    if not higher:
        latency.report.error(latency.line, latency.path, "counts requests at most `le` seconds long: higher is "
                                                         "better (remove higher_is_better: false)")
    if histogram is None or bound is None:
        return
    if histogram.metric.endswith(("_bucket", "_count", "_sum")):
        latency.error("histogram", f"give the histogram's name without its suffix: "
                                   f"{histogram.metric.rsplit('_', 1)[0]}")
        return
    if any(m.label == "le" for m in histogram.matchers):
        latency.error("histogram", "set the bound with le: <seconds>, not in the selector")
        return
    good = make_selector(f"{histogram.metric}_bucket", (*histogram.matchers, bound_matcher(bound)))
    total = make_selector(f"{histogram.metric}_count", histogram.matchers)
    line = latency.line_of("histogram") or 0
    expressions.extend([(latency.field("histogram"), line, good.text), (latency.field("histogram"), line, total.text)])
    found.numerator, found.denominator = Events(good), Events(total)
