"""Asks a live Prometheus whether what each KPI reads exists, the way cloudflare/pint's promql/series check does:
a selector that matches no series (over a lookback) is almost always a typo, a renamed metric or a missing
histogram bucket, and is reported with its file, line and the matcher to blame."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from agent.config.problems import Problem
from agent.formatting import format_duration
from agent.kpi.model import Kpi, Selector, ServiceSpec
from agent.kpi.prometheus_api import PrometheusClient
from agent.kpi.promql import metric_names
from agent.kpi.selectors import make_selector, parse_selector


async def _count(prometheus: PrometheusClient, expr: str) -> float:
    result = await prometheus.query(f"count({expr})", time.time())
    return float(result[0]["value"][1]) if result else 0.0


def _counts_failures(kpi: Kpi, field: str) -> bool:
    """Selectors of failed events may rightly match nothing yet (nothing has failed)."""
    return ".bad" in field or (not kpi.higher_is_better and ".numerator" in field)


def _selector(text: str) -> Selector | None:
    try:
        return parse_selector(text)
    except ValueError:
        return None


async def _why_selector_is_empty(prometheus: PrometheusClient, selector: Selector, lookback: str) -> str:
    async def seen(expr: str) -> bool:
        return await _count(prometheus, f"last_over_time({expr}[{lookback}])") > 0

    if not await seen(f'{{__name__="{selector.metric}"}}'):
        return f"metric {selector.metric} has no series in the last {lookback} (a typo, or not scraped?)"
    reasons = []
    for matcher in selector.matchers:
        if await seen(make_selector(selector.metric, (matcher,)).text):
            continue
        reason = f"no series of {selector.metric} has {matcher.text}"
        if matcher.label == "le":
            others = tuple(m for m in selector.matchers if m.label != "le")
            bounds = await prometheus.query(f"count by (le) (last_over_time("
                                            f"{make_selector(selector.metric, others).text}[{lookback}]))", time.time())
            present = sorted((r["metric"].get("le", "") for r in bounds), key=_bound_order)
            reason += f" (bucket bounds present: {', '.join(present) or 'none'})"
        reasons.append(reason)
    if reasons:
        return "; ".join(reasons)
    return f"each of its matchers matches series of {selector.metric}, but no series matches all of them"


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
        prometheus = PrometheusClient(url, session)
        problems = []
        for spec in specs:
            for kpi in spec.kpis:
                for field, line, text in kpi.indicator_expressions:
                    message = await _check_expression(prometheus, text, lookback)
                    if message:
                        problems.append(Problem(spec.file, line, field, message,
                                                warning=_counts_failures(kpi, field)))
        return problems


async def _check_expression(prometheus: PrometheusClient, text: str, lookback: str) -> str | None:
    selector = _selector(text)
    if selector is not None:
        if await _count(prometheus, f"last_over_time({selector.text}[{lookback}])") > 0:
            return None
        return f"{selector.text} matches no series in the last {lookback}: " + \
            await _why_selector_is_empty(prometheus, selector, lookback)
    if await prometheus.query(text, time.time()):
        return None
    missing = [name for name in metric_names(text)
               if await _count(prometheus, f'last_over_time({{__name__="{name}"}}[{lookback}])') == 0]
    detail = f": no series of {', '.join(missing)} in the last {lookback}" if missing else ""
    return f"returns nothing now{detail}"

