"""Planned exclusions: maintenance windows a KPI's values and budgets leave out.

An exclusion is one range (start and end, or start and duration) or a recurring one: an RFC 5545 recurrence
rule (``FREQ=WEEKLY;BYDAY=SU``, the iCalendar form Datadog's SLO corrections and every calendar use), expanded
by python-dateutil's ``rrulestr`` from a first start in a named time zone, each occurrence lasting
``duration`` of elapsed time. Occurrences start at their local wall-clock time, so "Sundays 02:00" stays at
02:00 across daylight-saving changes (on the night the clocks skip 02:00, it starts at the first instant after).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from agent.report.model import Interval

MAX_OCCURRENCES = 10_000  # a rule that fires every minute for years is a mistake, not a maintenance plan


@dataclass(frozen=True)
class Exclusion:
    start: datetime  # aware: the first (or only) window's start
    duration: float  # seconds of elapsed time
    reason: str = ""
    rrule: str = ""  # empty: one window

    def occurrences(self, start: float, end: float) -> list[Interval]:
        """The windows that overlap (start, end], clipped to nothing: each whole."""
        text = self.reason or "planned exclusion"
        if not self.rrule:
            first = self.start.timestamp()
            return [Interval(first, first + self.duration, text)] if first < end and first + self.duration > start \
                else []
        from dateutil.rrule import rrulestr

        rule = rrulestr(self.rrule, dtstart=self.start)
        tz = self.start.tzinfo
        lookback = datetime.fromtimestamp(start - self.duration, tz)
        until = datetime.fromtimestamp(end, tz)
        found = []
        for moment in rule.xafter(lookback, count=MAX_OCCURRENCES, inc=True):
            if moment > until:
                break
            begins = moment.timestamp()
            if begins + self.duration > start and begins < end:
                found.append(Interval(begins, begins + self.duration, text))
        return found


def parse_rrule(text: str, start: datetime) -> str:
    """A recurrence rule checked the way it will be expanded; raises ValueError saying what is wrong."""
    from dateutil.rrule import rrulestr

    rule = text.strip()
    if rule.upper().startswith("RRULE:"):
        rule = rule[6:]
    try:
        rrulestr(rule, dtstart=start)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{text!r} is not an RFC 5545 recurrence rule (like FREQ=WEEKLY;BYDAY=SU): {exc}") from None
    return rule


def windows(exclusions: Sequence[Exclusion], start: float, end: float) -> list[Interval]:
    """Every window of ``exclusions`` overlapping (start, end], merged where they overlap, in time order."""
    found = sorted((w for e in exclusions for w in e.occurrences(start, end)), key=lambda w: w.start)
    merged: list[Interval] = []
    for window in found:
        if merged and window.start <= merged[-1].end:
            last = merged[-1]
            text = last.text if window.text in last.text else f"{last.text}; {window.text}"
            merged[-1] = Interval(last.start, max(last.end, window.end), text)
        else:
            merged.append(window)
    return merged


def local(text: str, tz: ZoneInfo) -> datetime:
    """An ISO 8601 time; without an offset, read in ``tz``."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)

