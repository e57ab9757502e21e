"""What a report says, computed from the ``kpi:*`` series of the README's public contract.

Two questions are asked of Prometheus per KPI, however many periods the report compares:

- **totals**, one instant query: the sum of the recorded 5m rates (``kpi:numerator:rate5m``,
  ``kpi:denominator:rate5m``) over exactly each span the report needs (the judged period, the previous one,
  the same one a year ago, each period of the compliance history, each piece of a planned exclusion), one
  ``sum_over_time(...[length] @ end)`` term per span, told apart by a ``kpi_part`` label;
- **buckets**, one range query: the same sums in each step of a grid that lands on every edge of the chart's
  buckets, added up here into the buckets (a calendar month's buckets follow the local clock across a
  daylight-saving change).

Everything a person reads is derived from those sums in pure functions: traffic-weighted values (good over
all, the formula of ``kpi:ratio:period`` applied to the span), never an average of bucket ratios. Buckets with
no samples are no data, never zero.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from agent.formatting import format_duration
from agent.kpi import conventions as names
from agent.kpi.conventions import DENOMINATOR, NUMERATOR, SERVICE_LABEL, identity_selector, side_rate
from agent.kpi.model import Goal, Kpi, ServiceSpec, SupportingMetric
from agent.kpi.prometheus_api import PrometheusClient, PrometheusError, PrometheusUnreachable, series_labels
from agent.kpi.windows import BASE_RATE_WINDOW
from agent.report.fetch import Fetcher, GroupKey, Pieces, daily, group_key, kpi_groups
from agent.report.grid import (
    DEFAULT_EVALUATION_INTERVAL,
    PARTIAL_ZOOM,
    Period,
    Plan,
    bucketed,
    format_time,
    make_plan,
    plan_period,
)
from agent.report.judging import ERROR, NO_DATA, PARTIAL, Line, budget_exhaustion, judge, judged, ratio_line, value_line
from agent.report.model import Chart, KpiResult, Report
from agent.report.periods import Interval, PeriodChoice, Span, parse_period

NUMERATOR_5M, DENOMINATOR_5M = side_rate(NUMERATOR, BASE_RATE_WINDOW), side_rate(DENOMINATOR, BASE_RATE_WINDOW)



def _exclusion_pieces(exclusions: Sequence[Interval], cuts: Iterable[float], fine: tuple[float, float, float],
                      is_ratio: bool) -> list[tuple[float, float]]:
    """Each exclusion as the sample times it removes, cut at every span boundary and (inside the chart) every
    grid step, so each piece lies inside one span and one bucket. A ratio's 5m rates stamped up to five
    minutes after the window still count its events: they are removed too."""
    boundaries = sorted(set(cuts))
    chart_start, chart_end, step = fine
    pieces = []
    for exclusion in exclusions:
        start, end = exclusion.start, exclusion.end + (BASE_RATE_WINDOW - 0.001 if is_ratio else 0.0)
        points = [b for b in boundaries if start < b < end]
        if step and end > chart_start and start < chart_end:
            first = math.floor((max(start, chart_start) - chart_start) / step) + 1
            last = math.ceil((min(end, chart_end) - chart_start) / step)
            points += [chart_start + i * step for i in range(first, last)]
        edges = [start, *sorted(set(points)), end]
        pieces += [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]
    return pieces


async def _collect_kpi(fetch: Fetcher, plan: Plan, spec: ServiceSpec, kpi: Kpi,
                       exclusions: Sequence[Interval], alerts: Sequence[Interval], goals: Sequence[Goal]) -> KpiResult:
    try:
        result = await _collect_kpi_or_fail(fetch, plan, spec, kpi, exclusions, alerts)
        if goals and result.lines:
            result = await _with_outlooks(fetch, plan, result, goals)
        return result
    except PrometheusError as exc:
        return KpiResult(spec, kpi, state=ERROR, note=f"query failed: {exc}")


async def _with_outlooks(fetch: Fetcher, plan: Plan, result: KpiResult, goals: Sequence[Goal]) -> KpiResult:
    """Each goal's progress and forecast, per series, from the daily values of the recent trend."""
    from agent.report.goals import FIT_DAYS, outlook

    now = plan.span.end
    rows = await daily(fetch, result.kpi, identity_selector(result.spec, result.kpi), now, FIT_DAYS)
    lines = []
    for line in result.lines:
        days = rows.get(_match(line.group, rows), [])
        outlooks = tuple(outlook(goal, result.kpi.higher_is_better, days, now) for goal in goals)
        lines.append(_replace_line(line, outlooks=outlooks))
    return _replace(result, lines=tuple(lines))


def _replace_line(line: Line, **changes: object) -> Line:
    from dataclasses import replace
    return replace(line, **changes)  # type: ignore[arg-type]


def _spans(plan: Plan) -> dict[str, Span]:
    spans = {"current": plan.span}
    if plan.previous:
        spans["previous"] = plan.previous
    if plan.year_ago:
        spans["year_ago"] = plan.year_ago
    for index, span in enumerate(plan.history):
        spans[f"h{index}"] = span
    return spans


async def _collect_kpi_or_fail(fetch: Fetcher, plan: Plan, spec: ServiceSpec, kpi: Kpi,
                               exclusions: Sequence[Interval], alerts: Sequence[Interval]) -> KpiResult:
    selector = identity_selector(spec, kpi)
    period = plan.period
    spans = _spans(plan)
    pieces = Pieces()
    for name, span in spans.items():
        pieces.add(name, span.start, span.end)
    pieces.add("tail", period.regular_end, period.end)
    cuts = [t for span in spans.values() for t in (span.start, span.end)] + [period.regular_end]
    excluded = _exclusion_pieces(exclusions, cuts, (period.start, period.regular_end, period.fine_step),
                                 kpi.is_ratio)
    for index, (start, end) in enumerate(excluded):
        pieces.add(f"x{index}", start, end)
    totals, buckets, charts = await asyncio.gather(
        fetch.totals(kpi, selector, pieces, plan.span.end), fetch.buckets(kpi, selector, period),
        asyncio.gather(*(_chart(fetch, m, period) for m in kpi.supporting_metrics)))
    keys = sorted(set(totals) | set(buckets))
    if not keys:
        return KpiResult(spec, kpi, (), tuple(charts), NO_DATA, await _why_no_data(fetch, plan, spec, kpi))
    groups = kpi_groups(kpi, [dict(k) for k in keys])
    lines = []
    for key, group in zip(keys, groups, strict=True):
        sums = totals.get(key, {})
        removed = {side: [(start, end, sums.get(f"{side}:x{i}", 0.0)) for i, (start, end) in enumerate(excluded)]
                   for side in ("top", "bottom")}

        def over(span: Span, side: str, sums: dict[str, float] = sums, removed: dict = removed) -> float | None:
            name = next(n for n, s in spans.items() if s == span)
            raw = sums.get(f"{side}:{name}")
            if raw is None:
                return None
            return raw - math.fsum(v for a, b, v in removed[side] if a >= span.start and b <= span.end)

        series = buckets.get(key, {})
        tops = _minus(bucketed(series.get("top", []), period), removed["top"], period)
        bottoms = _minus(bucketed(series.get("bottom", []), period), removed["bottom"], period)
        if period.regular_end < period.end:  # a period to date: its last bucket is summed apart
            tops[-1] = _tail(sums.get("top:tail"), removed["top"], period)
            bottoms[-1] = _tail(sums.get("bottom:tail"), removed["bottom"], period)
        line = ratio_line(kpi, group, tops, bottoms) if kpi.is_ratio else value_line(group, tops, bottoms)
        runs_out = (budget_exhaustion(kpi, tops, bottoms, period, plan.choice.full(plan.span).end)
                    if not plan.span.complete or not plan.choice.is_calendar else None)
        current = judged(kpi, plan.span, over(plan.span, "top"), over(plan.span, "bottom"))
        compared = {name: judged(kpi, span, over(span, "top"), over(span, "bottom")) for name, span in spans.items()}
        lines.append(Line(group, current.value, line.per_bucket, line.cumulative, current.budget_remaining,
                          line.budget_curve, line.first, line.last, compared.get("previous"), compared.get("year_ago"),
                          tuple(compared[f"h{i}"] for i in range(len(plan.history))), runs_out))
    state, note = judge(lines, period)
    shown = tuple(Interval(max(e.start, period.start), min(e.end, period.end), e.text) for e in exclusions
                  if e.end > period.start and e.start < period.end)
    mine = tuple(a for a in alerts if f"/{spec.service}/{kpi.name}/" in f"/{a.text}")
    result = KpiResult(spec, kpi, tuple(lines), tuple(charts), state, note, exclusions=shown,
                       alerts=tuple(Interval(a.start, a.end, a.text.split("/", 2)[2]) for a in mine))
    if state == PARTIAL:
        result = await _explain_partial(fetch, plan, result, selector)
    return result


def _minus(sums: list[float | None], removed: Sequence[tuple[float, float, float]], period: Period) -> list:
    """Bucket sums less the excluded pieces inside each bucket."""
    for start, end, value in removed:
        if not value or end > period.regular_end:
            continue
        for index in range(period.buckets):
            if period.bucket_start(index) <= start and end <= period.bucket_end(index):
                if sums[index] is not None:
                    sums[index] = max(0.0, sums[index] - value)  # type: ignore[operator]
                break
    return sums


def _tail(raw: float | None, removed: Sequence[tuple[float, float, float]], period: Period) -> float | None:
    if raw is None:
        return None
    return raw - math.fsum(v for a, b, v in removed if a >= period.regular_end and b <= period.end)


async def _first_sample(fetch: Fetcher, selector: str, kpi: Kpi, period: Period, bucket: int) -> float | None:
    """The time of the first sample in a bucket: where the KPI's data really begins."""
    series = f"{DENOMINATOR_5M}{selector}" if kpi.is_ratio else f"{names.VALUE}{selector}"
    low, high = period.bucket_start(bucket), period.bucket_end(bucket)
    result = await fetch.query(f"{series}[{fetch.range_of(high - low)}] @ {high:.3f}", high)
    times = [float(t) for s in result for t, _ in s.get("values", [])]
    return min(times) if times else None


def suggest_period(seconds: float) -> str:
    """A --period that the data there is covers: the longest of 7d, 1d, 12h, ... 5m within ``seconds``."""
    for candidate in (30 * 86400, 7 * 86400, 86400, 43200, 21600, 10800, 3600, 1800, 900, 300):
        if candidate <= seconds:
            return format_duration(candidate)
    return format_duration(max(60.0, seconds // 60 * 60))


async def _explain_partial(fetch: Fetcher, plan: Plan, result: KpiResult, selector: str) -> KpiResult:
    """Say when the data really begins (the first sample, not its bucket's start); when it covers little of
    the period, chart the part that has data at a resolution that shows it, and suggest a shorter period."""
    period, kpi = plan.period, result.kpi
    firsts = [line.first for line in result.lines if line.first is not None]
    if not firsts or min(firsts) <= 1:
        return result
    start = await _first_sample(fetch, selector, kpi, period, min(firsts)) or period.bucket_start(min(firsts))
    covered = period.end - start
    note = (f"partial period: data only from {format_time(start, 1, period.tz)}, "
            f"{format_duration(round(covered / 60) * 60 or covered)} of {_period_name(plan)}")
    if covered >= PARTIAL_ZOOM * period.length:
        return _replace(result, note=note, data_start=start)
    note += (f"; the charts show the {format_duration(round(covered / 60) * 60 or covered)} with data; for a "
             f"complete report use --period {suggest_period(covered)}")
    zoomed = plan_period(covered, period.end, fetch.evaluation_interval, period.tz)
    buckets = await fetch.buckets(kpi, selector, zoomed)
    charts = await asyncio.gather(*(_chart(fetch, m, zoomed) for m in kpi.supporting_metrics))
    lines = []
    for line in result.lines:
        series = buckets.get(_match(line.group, buckets), {})
        tops, bottoms = bucketed(series.get("top", []), zoomed), bucketed(series.get("bottom", []), zoomed)
        drawn = ratio_line(kpi, line.group, tops, bottoms) if kpi.is_ratio else value_line(line.group, tops, bottoms)
        lines.append(Line(line.group, line.value, drawn.per_bucket, drawn.cumulative, line.budget_remaining,
                          drawn.budget_curve, drawn.first, drawn.last, line.previous, line.year_ago, line.history,
                          line.exhaustion))
    alerts = tuple(Interval(max(a.start, zoomed.start), a.end, a.text) for a in result.alerts if a.end > zoomed.start)
    return _replace(result, lines=tuple(lines), charts=tuple(charts), note=note, data_start=start, period=zoomed,
                    alerts=alerts)


def _period_name(plan: Plan) -> str:
    return plan.span.label if plan.choice.is_calendar else f"the {format_duration(plan.span.length)} period"


def _match(group: dict[str, str], buckets: dict[GroupKey, Any]) -> GroupKey:
    return next((key for key in buckets if all(dict(key).get(k) == v for k, v in group.items())), ())


def _replace(result: KpiResult, **changes: object) -> KpiResult:
    from dataclasses import replace
    return replace(result, **changes)  # type: ignore[arg-type]


async def _chart(fetch: Fetcher, metric: SupportingMetric, period: Period) -> Chart:
    step = period.fine_step
    try:
        result = await fetch.query_range(metric.query, period.start + step, period.regular_end, step)
    except PrometheusError as exc:
        return Chart(metric, error=str(exc))
    times = tuple(period.start + step * (i + 1) for i in range(round((period.regular_end - period.start) / step)))
    index = {t: i for i, t in enumerate(times)}
    series = []
    for item in sorted(result, key=lambda s: group_key(series_labels(s))):
        values: list[float | None] = [None] * len(times)
        for at, value in item["values"]:
            slot = index.get(round(float(at), 3))
            if slot is None:
                slot = round((float(at) - period.start) / step) - 1
            if 0 <= slot < len(times) and math.isfinite(float(value)):
                values[slot] = float(value)
        series.append((series_labels(item), tuple(values)))
    return Chart(metric, tuple(series), times=times)


async def _why_no_data(fetch: Fetcher, plan: Plan, spec: ServiceSpec, kpi: Kpi) -> str:
    selector = identity_selector(spec, kpi)
    span = plan.span
    rules_ran = await fetch.query(f"count_over_time({names.TARGET}{selector}[{format_duration(span.length)}])",
                                  span.end)
    if not rules_ran:
        return (f"no data: Prometheus holds no kpi:* series of this KPI in the period; are the rules generated "
                f"from {spec.file} loaded?")
    if kpi.is_ratio:
        what = kpi.denominator.text if kpi.denominator else "the denominator query"
        return (f"no data: the rules ran, but {DENOMINATOR_5M} has no sample in the period; "
                f"is {what} scraped?")
    return f"no data: the rules ran, but the value expression ({kpi.value}) returned nothing in the period"


async def evaluation_interval(client: PrometheusClient, specs: Sequence[ServiceSpec], at: float) -> float:
    """How often the rules are evaluated: the median spacing of kpi:target samples in the 5 minutes before
    ``at`` (30s, the generated default, when there are none yet)."""
    services = "|".join(s.service.replace(".", "\\\\.") for s in specs)
    result = await client.query(f'{names.TARGET}{{{SERVICE_LABEL}=~"{services}"}}[5m]', at)
    gaps: list[float] = []
    for series in result:
        times = [float(t) for t, _ in series.get("values", [])]
        gaps.extend(b - a for a, b in zip(times, times[1:], strict=False))
    return sorted(gaps)[len(gaps) // 2] if gaps else DEFAULT_EVALUATION_INTERVAL


async def firing_alerts(fetch: Fetcher, specs: Sequence[ServiceSpec], period: Period) -> list[Interval]:
    """Every KPI alert that fired during the period (Prometheus's ALERTS series), as intervals on the chart's
    grid, texts ``<service>/<kpi>/<alertname> (<severity>)``. One query for the whole report."""
    services = "|".join(s.service.replace(".", "\\\\.") for s in specs)
    step = period.fine_step
    if period.regular_end - period.start < step:
        return []
    expr = (f'max by (kpi_service, kpi, alertname, kpi_severity) (max_over_time(ALERTS{{alertstate="firing",'
            f'kpi_service=~"{services}"}}[{fetch.range_of(step)}]))')
    found = []
    for series in await fetch.query_range(expr, period.start + step, period.regular_end, step):
        labels = series_labels(series)
        severity = f" ({labels['kpi_severity']})" if labels.get("kpi_severity") else ""
        text = f"{labels.get('kpi_service', '')}/{labels.get('kpi', '')}/{labels.get('alertname', '')}{severity}"
        times = sorted(float(t) for t, _ in series["values"])
        run_start = previous = None
        for moment in times:
            if previous is None or moment - previous > step * 1.5:
                if run_start is not None and previous is not None:
                    found.append(Interval(run_start - step, previous, text))
                run_start = moment
            previous = moment
        if run_start is not None and previous is not None:
            found.append(Interval(run_start - step, previous, text))
    return found


def _excluded(kpi: Kpi, start: float, end: float) -> list[Interval]:
    if not kpi.exclusions:
        return []
    from agent.report.exclusions import windows

    return windows(kpi.exclusions, start, end)


def _major_version(buildinfo: dict[str, str]) -> int:
    try:
        return int(str(buildinfo.get("version", "")).lstrip("v").split(".")[0])
    except ValueError:
        return 2


async def collect(specs: Sequence[ServiceSpec], client: PrometheusClient, period: float | PeriodChoice,
                  at: float, history: int = 0) -> Report:
    """Ask Prometheus for every KPI of every spec over the period (a rolling length in seconds, or a choice
    from --period) that ends at, or holds, ``at``; with the last ``history`` periods when above 1."""
    generated = time.time()
    choice = period if isinstance(period, PeriodChoice) else parse_period(format_duration(period), ZoneInfo("UTC"))
    try:
        try:
            left_open = _major_version(await client.buildinfo()) >= 3
        except PrometheusUnreachable:
            raise
        except PrometheusError:  # an API without buildinfo (some long-term stores): assume Prometheus 2
            left_open = False
        try:
            interval = await evaluation_interval(client, specs, at)
        except PrometheusUnreachable:
            raise
        except PrometheusError:
            interval = DEFAULT_EVALUATION_INTERVAL
    except PrometheusUnreachable as exc:
        results = tuple(KpiResult(spec, kpi, state=ERROR, note="unknown: Prometheus could not be reached")
                        for spec in specs for kpi in spec.kpis)
        plan = make_plan(choice, at, DEFAULT_EVALUATION_INTERVAL, 0)
        return Report(plan.period, client.url, generated, results, unreachable=str(exc), choice=choice)
    fetch = Fetcher(client, left_open, interval)
    fetch.requests = 2
    plan = make_plan(choice, at, interval, history)
    earliest = min([plan.span.start, *(s.start for s in (plan.previous, plan.year_ago, *plan.history) if s)])
    try:
        alerts = await firing_alerts(fetch, specs, plan.period)
    except PrometheusError:
        alerts = []
    collected = await asyncio.gather(*(
        _collect_kpi(fetch, plan, spec, kpi, _excluded(kpi, earliest, plan.span.end), alerts, kpi.goals)
        for spec in specs for kpi in spec.kpis))
    return Report(plan.period, client.url, generated, tuple(collected), evaluation_interval=interval, choice=choice,
                  queries=fetch.requests)
