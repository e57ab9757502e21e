"""The period a report covers and the grid it is read on: the buckets of its charts, the step of its range
queries (on the wall clock of a calendar period), and the plan of every span a report asks for."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from agent.formatting import format_duration
from agent.report.periods import PeriodChoice, Span, grid_step, local_time_text

TARGET_BUCKETS = 240  # enough for a smooth chart; a 30d period gets 3h buckets


NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 14400, 21600, 43200, 86400)


DEFAULT_EVALUATION_INTERVAL = 30.0  # the generated rules' default group interval


MAX_POINTS = 11000  # Prometheus refuses a range query of more points per series


PARTIAL_ZOOM = 0.25  # a KPI with data for less of its period gets charts of the part with data


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


def format_time(seconds: float, step: float = 60.0, tz: ZoneInfo | None = None) -> str:
    return local_time_text(seconds, tz or ZoneInfo("UTC"), with_seconds=step < 60)


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
