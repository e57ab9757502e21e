"""The periods a report judges, and the ones it compares them with.

A period is rolling (the 30 days before ``--at``) or calendar: a day, ISO week (Monday first), month,
quarter or year in a named IANA time zone, either the one still running ("to date") or the last complete
one, or one named outright (``2026-11``, ``2026-Q4``, ``2026-W47``, ``2026``). Calendar boundaries are
local midnights turned into instants by :mod:`zoneinfo`, so a month that holds a daylight-saving change is
one hour shorter or longer, as it is on the wall clock.

A span holds the samples stamped in (start, end]: a rule evaluated at exactly midnight recorded the rate of
the minutes before it, which belong to the day that ended.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.config.values import duration
from agent.formatting import format_duration
from agent.kpi.model import ServiceSpec

UNITS = ("day", "week", "month", "quarter", "year")
MONTHS_PER = {"month": 1, "quarter": 3, "year": 12}

PERIOD_HELP = ("a duration (30d: the 30 days before --at), last-<unit> (the last complete one), "
               "<unit>-to-date (the one running at --at), or one by name: 2026-11, 2026-Q4, 2026-W47, 2026, "
               "2026-11-24; unit is day, week, month, quarter or year")


def zone(name: str) -> ZoneInfo:
    """An IANA time zone by name (``Europe/Berlin``, ``UTC``)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone name (like UTC, Europe/Berlin, "
                         "America/New_York)") from None


@dataclass(frozen=True)
class Span:
    """The samples stamped in (start, end], as Unix seconds."""

    start: float
    end: float
    label: str  # how people name it: "November 2026", "2026 Q4", "30d to 2026-12-06 11:20 CET"
    complete: bool = True  # False while it is still running (to date)

    @property
    def length(self) -> float:
        return self.end - self.start


def _instant(moment: datetime) -> float:
    return moment.timestamp()


@dataclass(frozen=True)
class Interval:
    """A stretch of time drawn on a KPI's charts: a planned exclusion or a firing alert."""

    start: float
    end: float
    text: str  # the exclusion's reason, or the alert's name and severity


def _local(seconds: float, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(seconds, tz)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    """Local midnight of ``day``; where midnight does not exist (a DST change at 00:00) the first instant of the
    day, which is what zoneinfo's fold=0 gives for a time in the gap."""
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def floor(day: date, unit: str) -> date:
    """The first day of the ``unit`` holding ``day``."""
    if unit == "day":
        return day
    if unit == "week":
        return day - timedelta(days=day.weekday())
    months = MONTHS_PER[unit]
    return date(day.year, (day.month - 1) // months * months + 1, 1)


def shift(first: date, unit: str, count: int) -> date:
    """The first day of the ``unit`` ``count`` units after the one starting on ``first``."""
    if unit == "day":
        return first + timedelta(days=count)
    if unit == "week":
        return first + timedelta(weeks=count)
    index = first.year * 12 + first.month - 1 + MONTHS_PER[unit] * count
    return date(index // 12, index % 12 + 1, 1)


def calendar_label(first: date, unit: str) -> str:
    if unit == "day":
        return f"{first:%Y-%m-%d} ({first:%a})"
    if unit == "week":
        year, week, _ = first.isocalendar()
        last = first + timedelta(days=6)
        return f"{year}-W{week:02d} ({first:%b} {first.day} – {last:%b} {last.day})"
    if unit == "month":
        return f"{first:%B %Y}"
    if unit == "quarter":
        return f"{first.year} Q{(first.month - 1) // 3 + 1}"
    return str(first.year)


def local_time_text(seconds: float, tz: ZoneInfo, with_seconds: bool = False) -> str:
    """``2026-12-06 11:20 CET``: the zone's abbreviation says which side of a DST change a time is on."""
    return _local(seconds, tz).strftime("%Y-%m-%d %H:%M:%S %Z" if with_seconds else "%Y-%m-%d %H:%M %Z")


@dataclass(frozen=True)
class PeriodChoice:
    """What ``--period`` asked for, resolved against a moment by :meth:`current`."""

    text: str
    tz: ZoneInfo
    unit: str | None = None  # None: rolling
    length: float = 0.0  # rolling periods only
    to_date: bool = False  # calendar: the period running at --at, up to --at
    named: date | None = None  # calendar: the first day of a period named outright

    @property
    def is_calendar(self) -> bool:
        return self.unit is not None

    def calendar_span(self, first: date, at: float | None = None) -> Span:
        """The calendar period starting on ``first``; cut at ``at`` when it is still running then."""
        assert self.unit is not None
        start = _instant(_midnight(first, self.tz))
        end = _instant(_midnight(shift(first, self.unit, 1), self.tz))
        label = calendar_label(first, self.unit)
        if at is not None and at < end:
            return Span(start, at, f"{label} to date", complete=False)
        return Span(start, end, label)

    def current(self, at: float) -> Span:
        """The period the report judges, for a report made at ``at``."""
        if self.unit is None:
            return Span(at - self.length, at, f"{format_duration(self.length)} to {local_time_text(at, self.tz)}")
        if self.named is not None:
            return self.calendar_span(self.named, at)
        running = floor(_local(at, self.tz).date(), self.unit)
        if _instant(_midnight(running, self.tz)) >= at:  # at is exactly a boundary: the period that just ended
            return self.calendar_span(shift(running, self.unit, -1))
        return self.calendar_span(running, at) if self.to_date else self.calendar_span(shift(running, self.unit, -1))

    def _first_day(self, span: Span) -> date:
        return floor(_local(span.start, self.tz).date(), str(self.unit))

    def before(self, span: Span, count: int) -> Span:
        """The complete period ``count`` periods before ``span`` (1: the previous one)."""
        if self.unit is None:
            return Span(span.start - count * span.length, span.end - count * span.length,
                        f"{format_duration(span.length)} to "
                        f"{local_time_text(span.end - count * span.length, self.tz)}")
        return self.calendar_span(shift(self._first_day(span), self.unit, -count))

    def previous(self, span: Span) -> Span:
        """What ``span`` is compared with: the period before it; for a period to date, the previous one up to
        the same point (December 1-6 against November 1-6)."""
        earlier = self.before(span, 1)
        if span.complete or self.unit is None:
            return earlier
        return self._same_elapsed(earlier, span)

    def _same_elapsed(self, earlier: Span, span: Span) -> Span:
        """``earlier`` cut where ``span`` is cut, in wall-clock time from their starts."""
        start_local, at_local = _local(span.start, self.tz), _local(span.end, self.tz)
        earlier_start = _local(earlier.start, self.tz)
        wall = at_local.replace(tzinfo=None) - start_local.replace(tzinfo=None)
        cut = (earlier_start.replace(tzinfo=None) + wall).replace(tzinfo=self.tz)
        end = min(_instant(cut), earlier.end)
        return Span(earlier.start, end, f"{earlier.label} to {_local(end, self.tz):%d %b %H:%M}", complete=False)

    def year_ago(self, span: Span) -> Span:
        """The same period one year earlier: the same month, quarter or ISO week number of the year before;
        for rolling periods, the same length ending at the same wall-clock time a year before."""
        if self.unit in ("month", "quarter", "year"):
            earlier = self.calendar_span(shift(self._first_day(span), self.unit, -12 // MONTHS_PER[self.unit]))
        elif self.unit == "week":
            year, week, _ = self._first_day(span).isocalendar()
            weeks_then = date(year - 1, 12, 28).isocalendar()[1]  # 52 or 53
            earlier = self.calendar_span(date.fromisocalendar(year - 1, min(week, weeks_then), 1))
        elif self.unit == "day":
            first = self._first_day(span)
            earlier = self.calendar_span(_year_before(first))
        else:
            end_local = _local(span.end, self.tz).replace(tzinfo=None)
            end = _instant(_year_before_moment(end_local).replace(tzinfo=self.tz))
            return Span(end - span.length, end, f"{format_duration(span.length)} to "
                                                f"{local_time_text(end, self.tz)}")
        return earlier if span.complete else self._same_elapsed(earlier, span)

    def full(self, span: Span) -> Span:
        """The whole period ``span`` is part of: a calendar period to date, uncut; a rolling one as it is."""
        return self.calendar_span(self._first_day(span)) if self.unit is not None else span

    def history(self, span: Span, count: int) -> list[Span]:
        """The ``count`` periods ending with ``span``, oldest first: the compliance history."""
        return [*(self.before(span, back) for back in range(count - 1, 0, -1)), span] if count > 0 else []


def _year_before(day: date) -> date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 1, day=28)


def _year_before_moment(moment: datetime) -> datetime:
    try:
        return moment.replace(year=moment.year - 1)
    except ValueError:
        return moment.replace(year=moment.year - 1, day=28)


_RELATIVE = re.compile(rf"^(?:last-({'|'.join(UNITS)})|({'|'.join(UNITS)})-to-date)$")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_QUARTER = re.compile(r"^(\d{4})-[Qq]([1-4])$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_YEAR = re.compile(r"^(\d{4})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def parse_period(text: str, tz: ZoneInfo) -> PeriodChoice:
    """``--period``'s value; raises ValueError with the forms it takes."""
    value = text.strip()
    if found := _RELATIVE.match(value):
        last, to_date = found.groups()
        return PeriodChoice(value, tz, unit=last or to_date, to_date=bool(to_date))
    named = _named(value)
    if named is not None:
        return PeriodChoice(value, tz, unit=named[0], named=named[1])
    if value in UNITS:
        raise ValueError(f"{text!r}: say which {value}: last-{value} (the last complete one) or "
                         f"{value}-to-date (the one running now)")
    try:
        length = duration(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a period: use {PERIOD_HELP}") from None
    return PeriodChoice(value, tz, length=length)


def _named(value: str) -> tuple[str, date] | None:
    try:
        if found := _MONTH.match(value):
            return "month", date(int(found[1]), int(found[2]), 1)
        if found := _QUARTER.match(value):
            return "quarter", date(int(found[1]), (int(found[2]) - 1) * 3 + 1, 1)
        if found := _WEEK.match(value):
            return "week", date.fromisocalendar(int(found[1]), int(found[2]), 1)
        if found := _YEAR.match(value):
            return "year", date(int(found[1]), 1, 1)
        if found := _DAY.match(value):
            return "day", date(int(found[1]), int(found[2]), int(found[3]))
    except ValueError as exc:  # 2026-W54, 2026-02-30
        raise ValueError(f"{value!r} is not a date: {exc}") from None
    return None


def choose_period(text: str | None, tz_name: str | None, specs: Sequence[ServiceSpec], running: bool) -> PeriodChoice:
    """``--period`` in ``--time-zone``; without them, what the specs say: the calendar period their KPIs are
    judged over when they share one (the last complete one, or with ``running`` the one to date), in the time
    zone they share; else 30 days, in UTC."""
    zones = {spec.time_zone for spec in specs}
    tz = zone(tz_name or (zones.pop() if len(zones) == 1 else "UTC"))
    if text is None:
        units = {kpi.calendar for spec in specs for kpi in spec.kpis}
        unit = units.pop() if len(units) == 1 else ""
        text = (f"{unit}-to-date" if running else f"last-{unit}") if unit else "30d"
    return parse_period(text, tz)


def grid_step(instants: list[float], at_most: float) -> float:
    """The longest step, at most ``at_most`` seconds, that lands on every one of ``instants`` from the first: the
    step a range query must take for its buckets to add up to each span exactly (whole milliseconds)."""
    origin = round(instants[0] * 1000)
    step = 0
    for instant in instants[1:]:
        step = math.gcd(step, abs(round(instant * 1000) - origin))
    if step == 0:
        return at_most
    limit = round(at_most * 1000)
    if step <= limit:
        return step / 1000
    # the largest divisor of step not above the limit
    best = 1
    for divisor in _divisors(step):
        if divisor <= limit:
            best = max(best, divisor)
    return best / 1000


def _divisors(number: int) -> Iterator[int]:
    root = math.isqrt(number)
    for candidate in range(1, root + 1):
        if number % candidate == 0:
            yield candidate
            yield number // candidate


def short_label(label: str) -> str:
    """A history column's heading: "Nov 2026" for "November 2026", "2026 Q4", "W47"; "so far" when to date."""
    if label.endswith(" to date"):
        return f"{short_label(label[:-len(' to date')])} so far"
    words = label.split()
    if len(words) == 2 and words[1].isdigit() and len(words[0]) > 3:
        return f"{words[0][:3]} {words[1]}"
    if label[:4].isdigit() and "-W" in label[:8]:
        return label[5:8]
    return label.split(" (")[0]

