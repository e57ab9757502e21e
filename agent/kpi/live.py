"""Asks a live Prometheus whether what each KPI reads exists, the way cloudflare/pint's promql/series check does:
a selector that matches no series (over a lookback) is almost always a typo, a renamed metric or a missing
histogram bucket, and is reported with its file, line and the matcher to blame.

A selector of failed events (``bad``, or the numerator when lower is better) may rightly match nothing yet
(nothing has failed): that is a warning, unless its metric has no series at all or one of its label names is on
no series of the metric, which no failure can ever fix. A label name no series carries makes a negative
matcher (``stauts!~"5.."``) match everything: an error even when the selector matches series."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from agent.config.problems import Problem
from agent.formatting import format_duration
from agent.kpi.model import Kpi, Matcher, Selector, ServiceSpec
from agent.kpi.prometheus_api import PrometheusClient
from agent.kpi.promql import metric_names
from agent.kpi.selectors import make_selector, parse_selector


class _Series:
    """Questions about the series Prometheus held over the lookback."""

    def __init__(self, prometheus: PrometheusClient, lookback: str):
        self.prometheus = prometheus
        self.lookback = lookback

    async def count(self, expr: str) -> float:
        result = await self.prometheus.query(f"count(last_over_time({expr}[{self.lookback}]))", time.time())
        return float(result[0]["value"][1]) if result else 0.0

    async def exist(self, expr: str) -> bool:
        return await self.count(expr) > 0

    async def bounds(self, selector: Selector) -> list[str]:
        others = tuple(m for m in selector.matchers if m.label != "le")
        result = await self.prometheus.query(f"count by (le) (last_over_time("
                                             f"{make_selector(selector.metric, others).text}[{self.lookback}]))",
                                             time.time())
        return sorted((r["metric"].get("le", "") for r in result), key=_bound_order)


def _counts_failures(kpi: Kpi, field: str) -> bool:
    """Selectors of failed events may rightly match nothing yet (nothing has failed)."""
    return ".bad" in field or (not kpi.higher_is_better and ".numerator" in field)


def _selector(text: str) -> Selector | None:
    try:
        return parse_selector(text)
    except ValueError:
        return None


def _needs_label(matcher: Matcher) -> bool:
    """Whether the matcher is a typo when no series of the metric carries its label: all but the positive
    matchers that match an absent label (``x=""``)."""
    return matcher.op in ("!=", "!~") or not matcher.matches("")


async def _missing_label_names(series: _Series, selector: Selector) -> list[Matcher]:
    """The matchers whose label no series of the metric carries."""
    missing = []
    for matcher in selector.matchers:
        if _needs_label(matcher) and not await series.exist(f'{selector.metric}{{{matcher.label}!=""}}'):
            missing.append(matcher)
    return missing


def _label_reason(selector: Selector, matcher: Matcher) -> str:
    reason = f"no series of {selector.metric} has a label {matcher.label} (a typo?)"
    if matcher.op in ("!=", "!~"):
        reason += f": {matcher.text} matches every series"
    return reason


async def _why_selector_is_empty(series: _Series, selector: Selector) -> tuple[str, bool]:
    """Why nothing matches, and whether nothing could ever match (a wrong name, not missing values)."""
    if not await series.exist(f'{{__name__="{selector.metric}"}}'):
        return f"metric {selector.metric} has no series in the last {series.lookback} (a typo, or not scraped?)", True
    missing = await _missing_label_names(series, selector)
    if missing:
        return "; ".join(_label_reason(selector, m) for m in missing), True
    reasons = []
    for matcher in selector.matchers:
        if await series.exist(make_selector(selector.metric, (matcher,)).text):
            continue
        reason = f"no series of {selector.metric} has {matcher.text}"
        if matcher.label == "le":
            reason += f" (bucket bounds present: {', '.join(await series.bounds(selector)) or 'none'})"
        reasons.append(reason)
    if reasons:
        return "; ".join(reasons), False
    return f"each of its matchers matches series of {selector.metric}, but no series matches all of them", False


def _bound_order(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def check_series(specs: list[ServiceSpec], url: str, lookback: float) -> list[Problem]:
    """Problems for every selector and value expression of every KPI that matches nothing in Prometheus at
    ``url`` (which may carry user:password for basic auth; messages never show the password)."""
    return asyncio.run(_check_series(specs, url, format_duration(lookback)))


async def _check_series(specs: list[ServiceSpec], url: str, lookback: str) -> list[Problem]:
    async with aiohttp.ClientSession() as session:
        series = _Series(PrometheusClient(url, session), lookback)
        problems = []
        for spec in specs:
            for kpi in spec.kpis:
                for field, line, text in kpi.indicator_expressions:
                    found = await _check_expression(series, text, _counts_failures(kpi, field))
                    if found:
                        message, warning = found
                        problems.append(Problem(spec.file, line, field, message, warning=warning))
        return problems


async def _check_expression(series: _Series, text: str, counts_failures: bool) -> tuple[str, bool] | None:
    """(message, whether it is only a warning) for an expression that reads nothing or reads wrongly."""
    selector = _selector(text)
    if selector is not None:
        if await series.exist(selector.text):
            missing = await _missing_label_names(series, selector)
            return ("; ".join(_label_reason(selector, m) for m in missing), False) if missing else None
        reason, hopeless = await _why_selector_is_empty(series, selector)
        return f"{selector.text} matches no series in the last {series.lookback}: {reason}", \
            counts_failures and not hopeless
    if await series.prometheus.query(text, time.time()):
        return None
    absent = [name for name in metric_names(text) if not await series.exist(f'{{__name__="{name}"}}')]
    detail = f": no series of {', '.join(absent)} in the last {series.lookback}" if absent else ""
    return f"returns nothing now{detail}", False
