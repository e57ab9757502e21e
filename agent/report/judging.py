"""What a KPI's sums become for a person, in pure functions: traffic-weighted values, verdicts against the
target, the error budget left and when the recent burn would exhaust it, and the change from an earlier period."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.formatting import format_duration
from agent.kpi.model import Kpi
from agent.report.grid import Period, format_time
from agent.report.periods import Span, local_time_text

OK, PARTIAL, NO_DATA, ERROR = "ok", "partial", "no_data", "error"


Values = tuple[float | None, ...]


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
