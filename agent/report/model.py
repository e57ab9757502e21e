"""What a report says, computed from the ``kpi:*`` series of the README's public contract.

The period is cut into equal buckets. Prometheus sums the recorded 5m rates inside each bucket
(``sum_over_time(kpi:numerator:rate5m[step])`` and the denominator), and everything a person reads is derived
from those sums here, in pure functions: the value of each bucket, the value from the period's start up to
each bucket, the value over the whole period (traffic-weighted, the same formula as ``kpi:ratio:period``),
and the error budget left. Buckets with no samples are no data, never zero.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.kpi.compiler import identity_selector
from agent.kpi.spec import Kpi, ServiceSpec, SupportingMetric
from agent.kpi.units import significant
from agent.prometheus_api import PrometheusClient, PrometheusError, PrometheusUnreachable, series_labels
from agent.yamlsrc import format_duration

TARGET_BUCKETS = 240  # enough for a smooth chart; a 30d period gets 3h buckets
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
DEFAULT_EVALUATION_INTERVAL = 30.0  # the generated rules' default group interval

# Exit codes of `kpi-agent report`; the most severe one that applies wins.
EXIT_COMPLETE = 0
EXIT_PARTIAL = 3  # some KPI has data for only part of the period
EXIT_NO_DATA = 4  # some KPI has no value at all (no samples, or no traffic)
EXIT_PROMETHEUS = 5  # Prometheus was unreachable or answered with an error

OK, PARTIAL, NO_DATA, ERROR = "ok", "partial", "no_data", "error"

Values = tuple[float | None, ...]


@dataclass(frozen=True)
class Period:
    """``buckets`` buckets of ``step`` seconds ending at ``end``; bucket i covers (end_i - step, end_i]."""

    end: float
    step: float
    buckets: int

    @property
    def start(self) -> float:
        return self.end - self.step * self.buckets

    @property
    def length(self) -> float:
        return self.step * self.buckets

    def bucket_end(self, index: int) -> float:
        return self.start + self.step * (index + 1)


def plan_period(length: float, end: float, evaluation_interval: float) -> Period:
    """The nice step that gives about TARGET_BUCKETS buckets, never shorter than the rules' evaluation
    interval (a shorter bucket would hold no sample at all every other time)."""
    wanted = max(length / TARGET_BUCKETS, evaluation_interval)
    step = next((float(s) for s in NICE_STEPS if s >= wanted), math.ceil(wanted / 86400) * 86400.0)
    return Period(end, step, max(1, math.ceil(length / step - 1e-9)))


def bucketed(series: Sequence[tuple[float, float]], period: Period) -> list[float | None]:
    """A query_range result evaluated at each bucket end, as one slot per bucket (None: no sample)."""
    slots: list[float | None] = [None] * period.buckets
    first = period.bucket_end(0)
    for at, value in series:
        index = round((at - first) / period.step)
        if 0 <= index < period.buckets and math.isfinite(value):
            slots[index] = value
    return slots


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


def meets(kpi: Kpi, value: float | None) -> bool | None:
    if value is None:
        return None
    return value >= kpi.target if kpi.higher_is_better else value <= kpi.target


@dataclass(frozen=True)
class Chart:
    """A supporting metric's series over the period (one value per bucket end)."""

    metric: SupportingMetric
    series: tuple[tuple[dict[str, str], Values], ...] = ()
    error: str = ""


@dataclass(frozen=True)
class KpiResult:
    spec: ServiceSpec
    kpi: Kpi
    lines: tuple[Line, ...] = ()
    charts: tuple[Chart, ...] = ()
    state: str = OK
    note: str = ""  # what is missing or failed, in a sentence

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


def format_time(seconds: float, step: float = 60.0) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if step < 60 else "%Y-%m-%d %H:%M UTC")


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _groups(kpi: Kpi, label_sets: list[dict[str, str]]) -> list[dict[str, str]]:
    """What tells a KPI's series apart: its group_by labels, and any label whose value differs."""
    varying = {k for labels in label_sets for k in labels
               if len({other.get(k) for other in label_sets}) > 1}
    keep = varying | set(kpi.group_by)
    return [{k: v for k, v in sorted(labels.items()) if k in keep} for labels in label_sets]


class _Fetcher:
    def __init__(self, client: PrometheusClient, period: Period, left_open: bool):
        self.client = client
        self.period = period
        # Prometheus 2 range selectors include both ends; 3 excludes the start. A bucket of step - 1ms (2) or
        # step (3) takes each sample exactly once, so bucket sums add up to the whole period's sum.
        self.range = format_duration(period.step if left_open else period.step - 0.001)

    async def buckets(self, expr: str) -> dict[tuple[tuple[str, str], ...], list[float | None]]:
        period = self.period
        result = await self.client.query_range(expr, period.bucket_end(0), period.end, period.step)
        return {_key(series_labels(s)): bucketed([(float(t), float(v)) for t, v in s["values"]], period)
                for s in result}

    def over_buckets(self, function: str, series: str) -> str:
        return f"{function}({series}[{self.range}])"


async def _kpi_lines(fetch: _Fetcher, spec: ServiceSpec, kpi: Kpi) -> list[Line]:
    selector = identity_selector(spec, kpi)
    if kpi.is_ratio:
        numerators, denominators = await asyncio.gather(
            fetch.buckets(fetch.over_buckets("sum_over_time", f"kpi:numerator:rate5m{selector}")),
            fetch.buckets(fetch.over_buckets("sum_over_time", f"kpi:denominator:rate5m{selector}")))
        keys = sorted(denominators)
        groups = _groups(kpi, [dict(k) for k in keys])
        empty: list[float | None] = [None] * fetch.period.buckets
        return [ratio_line(kpi, group, numerators.get(key, empty), denominators[key])
                for key, group in zip(keys, groups, strict=True)]
    sums, counts = await asyncio.gather(
        fetch.buckets(fetch.over_buckets("sum_over_time", f"kpi:value{selector}")),
        fetch.buckets(fetch.over_buckets("count_over_time", f"kpi:value{selector}")))
    keys = sorted(counts)
    groups = _groups(kpi, [dict(k) for k in keys])
    return [value_line(group, sums.get(key, [None] * fetch.period.buckets), counts[key])
            for key, group in zip(keys, groups, strict=True)]


async def _chart(fetch: _Fetcher, metric: SupportingMetric) -> Chart:
    try:
        result = await fetch.buckets(metric.query)
    except PrometheusError as exc:
        return Chart(metric, error=str(exc))
    return Chart(metric, tuple((dict(key), tuple(values)) for key, values in sorted(result.items())))


async def _why_no_data(fetch: _Fetcher, spec: ServiceSpec, kpi: Kpi) -> str:
    selector = identity_selector(spec, kpi)
    period = fetch.period
    rules_ran = await fetch.client.query(f"count_over_time(kpi:target{selector}[{format_duration(period.length)}])",
                                         period.end)
    if not rules_ran:
        return (f"no data: Prometheus holds no kpi:* series of this KPI in the period; are the rules generated "
                f"from {spec.file} loaded?")
    if kpi.is_ratio:
        what = kpi.denominator.text if kpi.denominator else "the denominator query"
        return (f"no data: the rules ran, but kpi:denominator:rate5m has no sample in the period; "
                f"is {what} scraped?")
    return f"no data: the rules ran, but the value expression ({kpi.value}) returned nothing in the period"


def judge(lines: list[Line], period: Period) -> tuple[str, str]:
    """The KPI's state and the sentence that explains it, from its lines' coverage."""
    if lines and all(line.value is None for line in lines):
        return NO_DATA, ("no traffic: the denominator was 0 for the whole period, so there is no ratio "
                         "(shown as no data, not as 0%)")
    firsts = [line.first for line in lines if line.first is not None]
    lasts = [line.last for line in lines if line.last is not None]
    first, last = min(firsts), max(lasts)
    # one empty bucket at either end is a missed evaluation, not a gap in history
    if first > 1:
        start = period.bucket_end(first) - period.step
        return PARTIAL, (f"partial period: data only from {format_time(start, period.step)}, "
                         f"{format_duration(period.end - start)} of the {format_duration(period.length)} period")
    if last < period.buckets - 2:
        end = period.bucket_end(last)
        return PARTIAL, (f"partial period: no data since {format_time(end, period.step)}, the last "
                         f"{format_duration(period.end - end)} of the {format_duration(period.length)} period")
    return OK, ""


async def _collect_kpi(fetch: _Fetcher, spec: ServiceSpec, kpi: Kpi) -> KpiResult:
    try:
        lines, charts = await asyncio.gather(
            _kpi_lines(fetch, spec, kpi), asyncio.gather(*(_chart(fetch, m) for m in kpi.supporting_metrics)))
        if not lines:
            return KpiResult(spec, kpi, (), tuple(charts), NO_DATA, await _why_no_data(fetch, spec, kpi))
    except PrometheusError as exc:
        return KpiResult(spec, kpi, state=ERROR, note=f"query failed: {exc}")
    state, note = judge(lines, fetch.period)
    return KpiResult(spec, kpi, tuple(lines), tuple(charts), state, note)


async def evaluation_interval(client: PrometheusClient, specs: Sequence[ServiceSpec], at: float) -> float:
    """How often the rules are evaluated: the median spacing of kpi:target samples in the 5 minutes before
    ``at`` (30s, the generated default, when there are none yet)."""
    services = "|".join(s.service.replace(".", "\\\\.") for s in specs)
    result = await client.query(f'kpi:target{{kpi_service=~"{services}"}}[5m]', at)
    gaps: list[float] = []
    for series in result:
        times = [float(t) for t, _ in series.get("values", [])]
        gaps.extend(b - a for a, b in zip(times, times[1:], strict=False))
    return sorted(gaps)[len(gaps) // 2] if gaps else DEFAULT_EVALUATION_INTERVAL


def _major_version(buildinfo: dict[str, str]) -> int:
    try:
        return int(str(buildinfo.get("version", "")).lstrip("v").split(".")[0])
    except ValueError:
        return 2


async def collect(specs: Sequence[ServiceSpec], client: PrometheusClient, length: float, at: float) -> Report:
    """Ask Prometheus for every KPI of every spec over (at - length, at]."""
    generated = time.time()
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
        return Report(plan_period(length, at, DEFAULT_EVALUATION_INTERVAL), client.url, generated, results,
                      unreachable=str(exc))
    fetch = _Fetcher(client, plan_period(length, at, interval), left_open)
    collected = await asyncio.gather(*(_collect_kpi(fetch, spec, kpi) for spec in specs for kpi in spec.kpis))
    return Report(fetch.period, client.url, generated, tuple(collected), evaluation_interval=interval)
