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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from agent.formatting import format_duration
from agent.kpi import conventions as names
from agent.kpi.conventions import DENOMINATOR, NUMERATOR, SERVICE_LABEL, identity_selector, side_rate
from agent.kpi.model import Goal, Kpi, ServiceSpec, SupportingMetric
from agent.kpi.prometheus_api import PrometheusClient, PrometheusError, PrometheusUnreachable, series_labels
from agent.kpi.units import significant
from agent.kpi.windows import BASE_RATE_WINDOW
from agent.report.periods import Interval, PeriodChoice, Span, grid_step, local_time_text, parse_period

NUMERATOR_5M, DENOMINATOR_5M = side_rate(NUMERATOR, BASE_RATE_WINDOW), side_rate(DENOMINATOR, BASE_RATE_WINDOW)
TARGET_BUCKETS = 240  # enough for a smooth chart; a 30d period gets 3h buckets
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 14400, 21600, 43200, 86400)
DEFAULT_EVALUATION_INTERVAL = 30.0  # the generated rules' default group interval
MAX_POINTS = 11000  # Prometheus refuses a range query of more points per series
RATE_WINDOW = 300.0  # the recorded rates' window: a sample stamped t counts the events of (t - 5m, t]
PARTIAL_ZOOM = 0.25  # a KPI with data for less of its period gets charts of the part with data

# Exit codes of `kpi-agent report`; the most severe one that applies wins.
EXIT_COMPLETE = 0
EXIT_PARTIAL = 3  # some KPI has data for only part of the period
EXIT_NO_DATA = 4  # some KPI has no value at all (no samples, or no traffic)
EXIT_PROMETHEUS = 5  # Prometheus was unreachable or answered with an error

OK, PARTIAL, NO_DATA, ERROR = "ok", "partial", "no_data", "error"

Values = tuple[float | None, ...]
GroupKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Period:
    """The judged span cut into the chart's buckets: bucket i holds the samples of (edges[i], edges[i+1]]."""

    span: Span
    edges: tuple[float, ...]
    tz: ZoneInfo = ZoneInfo("UTC")
    fine_step: float = 0.0  # the range query's step: every edge up to regular_end lies on its grid
    regular_end: float = 0.0  # a period to date ends off the grid: (regular_end, end] is summed apart

    @property
    def start(self) -> float:
        return self.edges[0]

    @property
    def end(self) -> float:
        return self.edges[-1]

    @property
    def buckets(self) -> int:
        return len(self.edges) - 1

    @property
    def length(self) -> float:
        return self.end - self.start

    @property
    def step(self) -> float:
        """The usual bucket length (a bucket holding a DST change or a period's cut end differs)."""
        return max(set(b - a for a, b in zip(self.edges, self.edges[1:], strict=False)),
                   key=lambda s: sum(1 for a, b in zip(self.edges, self.edges[1:], strict=False) if b - a == s))

    def bucket_end(self, index: int) -> float:
        return self.edges[index + 1]

    def bucket_start(self, index: int) -> float:
        return self.edges[index]


def _nice_step(length: float, evaluation_interval: float) -> float:
    wanted = max(length / TARGET_BUCKETS, evaluation_interval)
    return next((float(s) for s in NICE_STEPS if s >= wanted), math.ceil(wanted / 86400) * 86400.0)


def plan_period(length: float, end: float, evaluation_interval: float, tz: ZoneInfo | None = None) -> Period:
    """Equal buckets ending at ``end``: the nice step that gives about TARGET_BUCKETS of them, never shorter
    than the rules' evaluation interval (a shorter bucket would hold no sample every other time). The first
    bucket may start before ``end - length``: buckets are never cut short."""
    step = _nice_step(length, evaluation_interval)
    count = max(1, math.ceil(length / step - 1e-9))
    edges = tuple(end - step * (count - i) for i in range(count + 1))
    return Period(Span(end - length, end, format_duration(length)), edges, tz or ZoneInfo("UTC"), step, end)


def plan_calendar(span: Span, tz: ZoneInfo, evaluation_interval: float) -> Period:
    """Buckets that follow the local clock from the span's start (every 4 hours of a month, every day of a
    year), so a day that a DST change makes 23 or 25 hours long keeps its buckets on the hour; the span's end,
    when it is cut at --at, ends the last bucket early."""
    step = _nice_step(span.length, evaluation_interval)
    start_local = datetime.fromtimestamp(span.start, tz).replace(tzinfo=None)
    wall: list[float] = []
    index = 0
    while True:
        moment = (start_local + timedelta(seconds=step * index)).replace(tzinfo=tz).timestamp()
        if moment >= span.end:
            break
        if not wall or moment > wall[-1]:  # a wall time in a DST gap lands on the same instant as the next
            wall.append(moment)
        index += 1
    regular_end = span.end if _on_wall_clock(span.end, start_local, step, tz) else wall[-1]
    if regular_end == span.end:
        wall.append(span.end)
    fine = grid_step(wall, at_most=min(b - a for a, b in zip(wall, wall[1:], strict=False)) if len(wall) > 1
                     else step)
    edges = tuple(wall) if regular_end == span.end else (*wall, span.end)
    return Period(span, edges, tz, fine, regular_end)


def _on_wall_clock(moment: float, start_local: datetime, step: float, tz: ZoneInfo) -> bool:
    local = datetime.fromtimestamp(moment, tz).replace(tzinfo=None)
    elapsed = (local - start_local).total_seconds()
    return elapsed % step == 0


def plan_for(choice: PeriodChoice, span: Span, evaluation_interval: float) -> Period:
    if choice.is_calendar:
        return plan_calendar(span, choice.tz, evaluation_interval)
    return plan_period(span.length, span.end, evaluation_interval, choice.tz)


def bucketed(series: Sequence[tuple[float, float]], period: Period) -> list[float | None]:
    """A range query's samples on the chart's grid, added up into the chart's buckets (None: no sample)."""
    slots: dict[int, float] = {}
    origin, step = period.start, period.fine_step or period.step
    for at, value in series:
        index = round((at - origin) / step) - 1  # fine slot (origin + i*step, origin + (i+1)*step]
        if index >= 0 and math.isfinite(value):
            slots[index] = value
    sums: list[float | None] = []
    for bucket in range(period.buckets):
        low, high = period.bucket_start(bucket), period.bucket_end(bucket)
        first, last = round((low - origin) / step), round((min(high, period.regular_end) - origin) / step)
        found = [slots[i] for i in range(first, last) if i in slots]
        sums.append(math.fsum(found) if found else None)
    return sums


@dataclass(frozen=True)
class Judged:
    """A KPI series' value over one span, and whether it met the target there."""

    span: Span
    value: float | None  # None: no data or no traffic in the span
    met: bool | None
    budget_remaining: float | None = None


@dataclass(frozen=True)
class Line:
    """One series of a KPI (one set of group_by values) over the period."""

    group: dict[str, str]
    value: float | None  # over the whole period; None when there was no data or no traffic
    per_bucket: Values  # the value inside each bucket
    cumulative: Values  # the value from the period's start to the end of each bucket
    budget_remaining: float | None = None  # ratio KPIs: 1 - bad share / error budget, over the period
    budget_curve: Values = ()  # the same from the period's start to the end of each bucket
    first: int | None = None  # first and last bucket with samples
    last: int | None = None
    previous: Judged | None = None  # the period before (for a period to date: up to the same point)
    year_ago: Judged | None = None  # the same period a year before
    history: tuple[Judged, ...] = ()  # the last N periods, oldest first, the judged one last
    exhaustion: float | None = None  # when the error budget runs out at the last day's burn (see budget_exhaustion)
    outlooks: tuple[Any, ...] = ()  # agent.report.goals.Outlook of each of the KPI's goals


def _coverage(present: Sequence[bool]) -> tuple[int | None, int | None]:
    indices = [i for i, p in enumerate(present) if p]
    return (indices[0], indices[-1]) if indices else (None, None)


def _bad(kpi: Kpi, ratio: float) -> float:
    return 1 - ratio if kpi.higher_is_better else ratio


def budget_left(kpi: Kpi, ratio: float | None) -> float | None:
    return None if ratio is None else 1 - _bad(kpi, ratio) / kpi.error_budget


def ratio_line(kpi: Kpi, group: dict[str, str], numerators: Sequence[float | None],
               denominators: Sequence[float | None]) -> Line:
    """Traffic-weighted ratios from bucket sums of the recorded 5m rates. A bucket with traffic but no
    numerator has no good event (the compiler records 0 there; older rules may not)."""
    per_bucket: list[float | None] = []
    cumulative: list[float | None] = []
    good = total = 0.0
    for numerator, denominator in zip(numerators, denominators, strict=True):
        if denominator is not None:
            good += numerator or 0.0
            total += denominator
        per_bucket.append((numerator or 0.0) / denominator if denominator else None)
        cumulative.append(good / total if total > 0 else None)
    value = good / total if total > 0 else None
    first, last = _coverage([d is not None for d in denominators])
    return Line(group, value, tuple(per_bucket), tuple(cumulative), budget_left(kpi, value),
                tuple(budget_left(kpi, c) for c in cumulative), first, last)


def value_line(group: dict[str, str], sums: Sequence[float | None], counts: Sequence[float | None]) -> Line:
    """Averages of a value KPI: per bucket, from the period's start, and over the period (sum / count of
    samples, which is what avg_over_time over the whole period gives)."""
    per_bucket: list[float | None] = []
    cumulative: list[float | None] = []
    running_sum = running_count = 0.0
    for total, count in zip(sums, counts, strict=True):
        if total is not None and count:
            running_sum += total
            running_count += count
            per_bucket.append(total / count)
        else:
            per_bucket.append(None)
        cumulative.append(running_sum / running_count if running_count else None)
    value = running_sum / running_count if running_count else None
    first, last = _coverage([c is not None and c > 0 for c in counts])
    return Line(group, value, tuple(per_bucket), tuple(cumulative), first=first, last=last)


RECENT_BURN = 86400.0  # the burn that is projected: the last day's


def budget_exhaustion(kpi: Kpi, tops: Sequence[float | None], bottoms: Sequence[float | None], period: Period,
                      ends: float) -> float | None:
    """When a ratio KPI's error budget runs out if the last day's traffic and failures go on: the moment the
    failed events of the period so far plus those to come pass the budget's share of all its events. None when
    that cannot be said (a value KPI, no traffic); minus infinity when it is spent already; infinity when not
    before ``ends`` (the end of the period)."""
    if not kpi.is_ratio:
        return None
    now = period.end
    good = math.fsum(t or 0.0 for t, b in zip(tops, bottoms, strict=True) if b is not None)
    total = math.fsum(b for b in bottoms if b is not None)
    if total <= 0:
        return None
    bad = total - good if kpi.higher_is_better else good
    recent = [i for i in range(period.buckets) if period.bucket_end(i) > now - RECENT_BURN and bottoms[i] is not None]
    seconds = now - max(period.start, now - RECENT_BURN)
    recent_total = math.fsum(bottoms[i] or 0.0 for i in recent)
    recent_good = math.fsum(tops[i] or 0.0 for i in recent)
    recent_bad = recent_total - recent_good if kpi.higher_is_better else recent_good
    allowed = kpi.error_budget * total - bad
    if allowed <= 0:
        return -math.inf
    burning = (recent_bad - kpi.error_budget * recent_total) / seconds if seconds > 0 else 0.0
    if burning <= 0:
        return math.inf
    when = now + allowed / burning
    return when if when < ends else math.inf


def meets(kpi: Kpi, value: float | None) -> bool | None:
    if value is None:
        return None
    return value >= kpi.target if kpi.higher_is_better else value <= kpi.target


def judged(kpi: Kpi, span: Span, top: float | None, bottom: float | None) -> Judged:
    """A span's value from its two sums: good and all events (ratio KPIs), or sum and count (value KPIs)."""
    value = top / bottom if top is not None and bottom else None
    if value is not None and kpi.is_ratio and top is not None:
        value = min(max(value, 0.0), 1.0)  # excluded pieces subtracted from sums can leave float dust
    return Judged(span, value, meets(kpi, value), budget_left(kpi, value) if kpi.is_ratio else None)


@dataclass(frozen=True)
class Chart:
    """A supporting metric's series over the period (one value per sample time)."""

    metric: SupportingMetric
    series: tuple[tuple[dict[str, str], Values], ...] = ()
    error: str = ""
    times: tuple[float, ...] = ()


@dataclass(frozen=True)
class KpiResult:
    spec: ServiceSpec
    kpi: Kpi
    lines: tuple[Line, ...] = ()
    charts: tuple[Chart, ...] = ()
    state: str = OK
    note: str = ""  # what is missing or failed, in a sentence
    period: Period | None = None  # the charts' buckets, when they differ from the report's (a fresh install)
    data_start: float | None = None  # the first sample, when it came after the period's start
    exclusions: tuple[Interval, ...] = ()
    alerts: tuple[Interval, ...] = ()

    @property
    def anchor(self) -> str:
        return f"{self.spec.service}-{self.kpi.name}"


@dataclass(frozen=True)
class Report:
    period: Period
    prometheus_url: str
    generated_at: float
    results: tuple[KpiResult, ...]
    unreachable: str = ""  # why Prometheus could not be asked at all
    evaluation_interval: float = DEFAULT_EVALUATION_INTERVAL
    choice: PeriodChoice | None = None
    queries: int = 0  # how many requests the report made of Prometheus

    @property
    def exit_code(self) -> int:
        states = {r.state for r in self.results}
        if self.unreachable or ERROR in states or any(c.error for r in self.results for c in r.charts):
            return EXIT_PROMETHEUS
        if NO_DATA in states:
            return EXIT_NO_DATA
        if PARTIAL in states:
            return EXIT_PARTIAL
        return EXIT_COMPLETE

    def problems(self) -> list[str]:
        """Every reason the report is not complete, one sentence each."""
        if self.unreachable:
            return [f"Prometheus could not be reached, so no KPI has a value: {self.unreachable}"]
        found = []
        for result in self.results:
            if result.state != OK:
                found.append(f"{result.spec.service}/{result.kpi.name}: {result.note}")
            for chart in result.charts:
                if chart.error:
                    found.append(f"{result.spec.service}/{result.kpi.name}: supporting metric "
                                 f"{chart.metric.title!r} failed: {chart.error}")
        return found


def target_text(kpi: Kpi) -> str:
    sign = "≥" if kpi.higher_is_better else "≤"
    return f"{sign} {format_kpi_value(kpi, kpi.target)}"


def format_kpi_value(kpi: Kpi, value: float) -> str:
    """A KPI value with enough decimals to tell it from its target: 99.95% against 99.9%, 99.987% against
    99.99%."""
    if not kpi.is_ratio:  # thousands grouped and whole (123,456), smaller numbers to 4 significant digits
        return f"{value:,.0f}" if abs(value) >= 1000 else significant(value, 4)
    target_decimals = len(f"{kpi.target * 100:.10g}".partition(".")[2])
    return f"{value * 100:.{max(2, target_decimals + 1)}f}%"


def format_time(seconds: float, step: float = 60.0, tz: ZoneInfo | None = None) -> str:
    return local_time_text(seconds, tz or ZoneInfo("UTC"), with_seconds=step < 60)


def _key(labels: dict[str, str]) -> GroupKey:
    return tuple(sorted(labels.items()))


def _groups(kpi: Kpi, label_sets: list[dict[str, str]]) -> list[dict[str, str]]:
    """What tells a KPI's series apart: its group_by labels, and any label whose value differs."""
    varying = {k for labels in label_sets for k in labels
               if len({other.get(k) for other in label_sets}) > 1}
    keep = varying | set(kpi.group_by)
    return [{k: v for k, v in sorted(labels.items()) if k in keep} for labels in label_sets]


PART = "kpi_part"  # the label that tells the terms of one query apart


def _part(expr: str, name: str) -> str:
    return f'label_replace({expr}, "{PART}", "{name}", "", "")'


def sides(kpi: Kpi, selector: str) -> dict[str, tuple[str, str]]:
    """The two sums a KPI's values are made of: (function over time, recorded series) for the top and bottom
    of its fraction."""
    if kpi.is_ratio:
        return {"top": ("sum_over_time", f"{NUMERATOR_5M}{selector}"),
                "bottom": ("sum_over_time", f"{DENOMINATOR_5M}{selector}")}
    return {"top": ("sum_over_time", f"{names.VALUE}{selector}"),
            "bottom": ("count_over_time", f"{names.VALUE}{selector}")}


@dataclass
class Pieces:
    """The spans one totals query sums over: each named, each (start, end]."""

    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    def add(self, name: str, start: float, end: float) -> None:
        if end > start:
            self.spans[name] = (start, end)


class Fetcher:
    """Asks Prometheus, counting the requests (the benchmark states how many a report makes)."""

    def __init__(self, client: PrometheusClient, left_open: bool, evaluation_interval: float):
        self.client = client
        self.left_open = left_open  # Prometheus 3 ranges exclude their start; 2 includes both ends
        self.evaluation_interval = evaluation_interval
        self.requests = 0

    def range_of(self, seconds: float) -> str:
        """A range holding the samples of (end - seconds, end] exactly: one millisecond short on Prometheus 2."""
        return format_duration(seconds if self.left_open else seconds - 0.001)

    async def query(self, expr: str, at: float) -> list[dict]:
        self.requests += 1
        return await self.client.query(expr, at)

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """A range query split into requests of at most MAX_POINTS points (a year on a 30-minute grid)."""
        merged: dict[GroupKey, dict] = {}
        first = start
        while first <= end + 1e-9:
            last = min(end, first + step * (MAX_POINTS - 1))
            self.requests += 1
            for series in await self.client.query_range(expr, first, last, step):
                key = _key(series.get("metric", {}))
                merged.setdefault(key, {"metric": series.get("metric", {}), "values": []})["values"] += series["values"]
            first = last + step
        return list(merged.values())

    async def totals(self, kpi: Kpi, selector: str, pieces: Pieces, at: float) -> dict[GroupKey, dict[str, float]]:
        """One instant query: each side summed over each piece. Returns {group: {"<side>:<piece>": sum}}."""
        terms = []
        for side, (function, series) in sides(kpi, selector).items():
            for name, (start, end) in pieces.spans.items():
                if end - start <= (0 if self.left_open else 0.001):
                    continue
                terms.append(_part(f"{function}({series}[{self.range_of(end - start)}] @ {end:.3f})",
                                   f"{side}:{name}"))
        if not terms:
            return {}
        found: dict[GroupKey, dict[str, float]] = {}
        for item in await self.query(" or ".join(terms), at):
            labels = series_labels(item)
            part = labels.pop(PART, "")
            value = float(item["value"][1])
            if math.isfinite(value):
                found.setdefault(_key(labels), {})[part] = value
        return found

    async def buckets(self, kpi: Kpi, selector: str, period: Period) -> dict[GroupKey, dict[str, list]]:
        """One range query on the chart's grid: each side's sums in each fine step."""
        step = period.fine_step
        terms = [_part(f"{function}({series}[{self.range_of(step)}])", side)
                 for side, (function, series) in sides(kpi, selector).items()]
        if period.regular_end - period.start < step:
            return {}
        result = await self.query_range(" or ".join(terms), period.start + step, period.regular_end, step)
        found: dict[GroupKey, dict[str, list]] = {}
        for series in result:
            labels = series_labels(series)
            part = labels.pop(PART, "")
            found.setdefault(_key(labels), {})[part] = [(float(t), float(v)) for t, v in series["values"]]
        return found


async def daily(fetch: Fetcher, kpi: Kpi, selector: str, end: float, days: int) -> dict[GroupKey, list]:
    """Each side's sum in each of the ``days`` days (24 hours) before ``end``: one range query."""
    terms = [_part(f"{function}({series}[{fetch.range_of(86400)}])", side)
             for side, (function, series) in sides(kpi, selector).items()]
    result = await fetch.query_range(" or ".join(terms), end - 86400 * (days - 1), end, 86400)
    found: dict[GroupKey, dict[str, dict[float, float]]] = {}
    for series in result:
        labels = series_labels(series)
        part = labels.pop(PART, "")
        found.setdefault(_key(labels), {})[part] = {round(float(t), 3): float(v) for t, v in series["values"]}
    rows: dict[GroupKey, list] = {}
    for key, parts in found.items():
        tops, bottoms = parts.get("top", {}), parts.get("bottom", {})
        rows[key] = [(t, (tops.get(t, 0.0) / bottom), bottom) for t, bottom in sorted(bottoms.items()) if bottom > 0]
    return rows


@dataclass(frozen=True)
class Plan:
    """Everything one report asks for a KPI: the judged span, its chart, and the spans compared with it."""

    choice: PeriodChoice
    span: Span
    period: Period
    previous: Span | None
    year_ago: Span | None
    history: tuple[Span, ...]


def make_plan(choice: PeriodChoice, at: float, evaluation_interval: float, history: int) -> Plan:
    span = choice.current(at)
    previous = choice.previous(span)
    year_ago = choice.year_ago(span)
    past = tuple(choice.history(span, history)) if history > 1 else ()
    return Plan(choice, span, plan_for(choice, span, evaluation_interval), previous, year_ago, past)


def _exclusion_pieces(exclusions: Sequence[Interval], cuts: Iterable[float], fine: tuple[float, float, float],
                      is_ratio: bool) -> list[tuple[float, float]]:
    """Each exclusion as the sample times it removes, cut at every span boundary and (inside the chart) every
    grid step, so each piece lies inside one span and one bucket. A ratio's 5m rates stamped up to five
    minutes after the window still count its events: they are removed too."""
    boundaries = sorted(set(cuts))
    chart_start, chart_end, step = fine
    pieces = []
    for exclusion in exclusions:
        start, end = exclusion.start, exclusion.end + (RATE_WINDOW - 0.001 if is_ratio else 0.0)
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
    groups = _groups(kpi, [dict(k) for k in keys])
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
    for item in sorted(result, key=lambda s: _key(series_labels(s))):
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


def judge(lines: Sequence[Line], period: Period) -> tuple[str, str]:
    """The KPI's state and the sentence that explains it, from its lines' coverage."""
    if lines and all(line.value is None for line in lines):
        return NO_DATA, ("no traffic: the denominator was 0 for the whole period, so there is no ratio "
                         "(shown as no data, not as 0%)")
    firsts = [line.first for line in lines if line.first is not None]
    lasts = [line.last for line in lines if line.last is not None]
    if not firsts:
        return NO_DATA, "no data in the period"
    first, last = min(firsts), max(lasts)
    # one empty bucket at either end is a missed evaluation, not a gap in history
    if first > 1:
        start = period.bucket_start(first)
        return PARTIAL, (f"partial period: data only from {format_time(start, 1, period.tz)}, "
                         f"{format_duration(period.end - start)} of the {format_duration(period.length)} period")
    if last < period.buckets - 2:
        end = period.bucket_end(last)
        return PARTIAL, (f"partial period: no data since {format_time(end, period.step, period.tz)}, the last "
                         f"{format_duration(period.end - end)} of the {format_duration(period.length)} period")
    return OK, ""


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


@dataclass(frozen=True)
class Change:
    """A value against an earlier one, the way people read it: an arrow, the difference, and whether that
    is good news for this KPI (lower is better for an error share)."""

    arrow: str  # ▲ ▼ or = (unchanged at the precision shown)
    text: str  # +0.42 pts, -3.1%
    verdict: str  # good | bad | same


def exhaustion_text(line: Line, period: Period) -> str:
    """The budget's outlook in words: "runs out 2026-12-19 14:00 CET", "not before the period ends", "spent"."""
    if line.exhaustion is None:
        return ""
    if line.exhaustion == math.inf:
        return "lasts the period at the last day's burn"
    if line.exhaustion == -math.inf:
        return "spent"
    return f"runs out {local_time_text(line.exhaustion, period.tz)} at the last day's burn"


def change(kpi: Kpi, now: float | None, before: float | None) -> Change | None:
    if now is None or before is None:
        return None
    difference = now - before
    if kpi.is_ratio:
        points = difference * 100
        decimals = max(2, len(f"{kpi.target * 100:.10g}".partition(".")[2]) + 1)
        text = f"{points:+.{decimals}f} pts"
        same = round(points, decimals) == 0
    else:
        relative = difference / abs(before) * 100 if before else math.inf if difference else 0.0
        text = f"{relative:+.1f}%" if math.isfinite(relative) else f"{difference:+,.4g}"
        same = round(relative, 1) == 0 if math.isfinite(relative) else difference == 0
    if same:
        return Change("=", text.replace("+", "±").replace("-", "±"), "same")
    better = (difference > 0) == kpi.higher_is_better
    return Change("▲" if difference > 0 else "▼", text, "good" if better else "bad")
