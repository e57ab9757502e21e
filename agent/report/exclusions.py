"""Planned exclusions: maintenance windows a KPI's values and budgets leave out.

An exclusion is one range (start and end, or start and duration) or a recurring one: an RFC 5545 recurrence
rule (``FREQ=WEEKLY;BYDAY=SU``, the iCalendar form Datadog's SLO corrections and every calendar use), expanded
by python-dateutil's ``rrulestr`` from a first start in a named time zone, each occurrence lasting
``duration`` of elapsed time. Occurrences start at their local wall-clock time, so "Sundays 02:00" stays at
02:00 across daylight-saving changes (on the night the clocks skip 02:00, it starts at the first instant after).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from agent.kpi.model import Exclusion
from agent.report.periods import Interval

MAX_OCCURRENCES = 10_000  # a rule that fires every minute for years is a mistake, not a maintenance plan


def occurrences(exclusion: Exclusion, start: float, end: float) -> list[Interval]:
    """The windows of ``exclusion`` that overlap (start, end], each whole."""
    text = exclusion.reason or "planned exclusion"
    if not exclusion.rrule:
        first = exclusion.start.timestamp()
        overlaps = first < end and first + exclusion.duration > start
        return [Interval(first, first + exclusion.duration, text)] if overlaps else []
    from dateutil.rrule import rrulestr

    rule = rrulestr(exclusion.rrule, dtstart=exclusion.start)
    tz = exclusion.start.tzinfo
    lookback = datetime.fromtimestamp(start - exclusion.duration, tz)
    until = datetime.fromtimestamp(end, tz)
    found = []
    for moment in rule.xafter(lookback, count=MAX_OCCURRENCES, inc=True):
        if moment > until:
            break
        begins = moment.timestamp()
        if begins + exclusion.duration > start and begins < end:
            found.append(Interval(begins, begins + exclusion.duration, text))
    return found


def windows(exclusions: Sequence[Exclusion], start: float, end: float) -> list[Interval]:
    """Every window of ``exclusions`` overlapping (start, end], merged where they overlap, in time order."""
    found = sorted((w for e in exclusions for w in occurrences(e, start, end)), key=lambda w: w.start)
    merged: list[Interval] = []
    for window in found:
        if merged and window.start <= merged[-1].end:
            last = merged[-1]
            text = last.text if window.text in last.text else f"{last.text}; {window.text}"
            merged[-1] = Interval(last.start, max(last.end, window.end), text)
        else:
            merged.append(window)
    return merged
