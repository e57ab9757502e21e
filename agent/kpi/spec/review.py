"""Reads what a KPI's reviews need beyond its rules: the calendar period its target is judged over, its goals
(a target by a due date, from a baseline) and its planned exclusions (maintenance windows, one-off or recurring
by an RFC 5545 rule). Times without an offset are read in the spec's ``time_zone``."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.config import values as config_values
from agent.config.fields import Fields
from agent.kpi.model import Exclusion, Goal
from agent.kpi.spec import values

CALENDAR_UNITS = ("day", "week", "month", "quarter", "year")


def read_time_zone(fields: Fields) -> ZoneInfo:
    name = fields.get("time_zone", config_values.nonempty_string, "UTC") or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        fields.error("time_zone", f"{name!r} is not an IANA time zone name (like UTC, Europe/Berlin)")
        return ZoneInfo("UTC")


def _moment(tz: ZoneInfo, end_of_day: bool = False) -> Any:
    """A parser of a date (its midnight, or the next one's with ``end_of_day``) or a date and time."""
    def parse(value: Any) -> datetime:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime.combine(value + timedelta(days=1 if end_of_day else 0), time())
        else:
            try:
                moment = datetime.fromisoformat(str(value).strip())
            except ValueError:
                raise ValueError(f"{value!r} is not a date (2027-03-31) or a time (2026-09-13T02:00, with an "
                                 "offset or in the spec's time_zone)") from None
            if len(str(value).strip()) == 10 and end_of_day:
                moment += timedelta(days=1)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)
    return parse


def read_calendar(fields: Fields) -> str:
    return fields.get("calendar", config_values.one_of(*CALENDAR_UNITS), "") or ""


def read_goals(fields: Fields, tz: ZoneInfo, is_ratio: bool, higher: bool) -> tuple[Goal, ...]:
    goals = []
    for item, path, line in fields.items("goals"):
        goal = Fields(item, path, fields.report, line)
        target = goal.get("target", values.target)
        due = goal.get("by", _moment(tz, end_of_day=True))
        start = goal.get("from", _moment(tz))
        baseline = goal.get("baseline", values.target, None)
        text = goal.get("description", config_values.string, "")
        goal.finish()
        for key, value in (("target", target), ("baseline", baseline)):
            if value is not None and is_ratio and not 0 <= value <= 1:
                goal.error(key, f"a ratio KPI's {key} is between 0% and 100%, got {value:g}")
        if target is None or due is None or start is None:
            continue
        if start >= due:
            goal.error("from", f"must be before the due date ({due:%Y-%m-%d})")
            continue
        if baseline is not None and baseline == target:
            goal.error("baseline", "is the target itself: a goal to hold a value needs no baseline")
            continue
        goals.append(Goal(target, due.timestamp(), start.timestamp(), baseline,
                          text or _goal_text(target, due, baseline, is_ratio)))
    return tuple(goals)


def _goal_text(target: float, due: datetime, baseline: float | None, is_ratio: bool) -> str:
    def show(value: float) -> str:
        return f"{value * 100:.6g}%" if is_ratio else f"{value:,.6g}"
    by = (due - timedelta(seconds=1)).strftime("%Y-%m-%d")
    return (f"{show(baseline)} -> " if baseline is not None else "") + f"{show(target)} by {by}"


def parse_rrule(text: str, start: datetime) -> str:
    """A recurrence rule checked the way reports expand it (python-dateutil); raises ValueError saying why."""
    from dateutil.rrule import rrulestr

    rule = text.strip()
    if rule.upper().startswith("RRULE:"):
        rule = rule[6:]
    try:
        rrulestr(rule, dtstart=start)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{text!r} is not an RFC 5545 recurrence rule (like FREQ=WEEKLY;BYDAY=SU): {exc}") from None
    return rule


def read_exclusions(fields: Fields, tz: ZoneInfo) -> tuple[Exclusion, ...]:
    found = []
    for item, path, line in fields.items("exclusions"):
        window = Fields(item, path, fields.report, line)
        start = window.get("start", _moment(tz))
        end = window.get("end", _moment(tz), None)
        duration = window.get("duration", config_values.duration, None)
        every = window.get("every", config_values.nonempty_string, "")
        reason = window.get("reason", config_values.nonempty_string)
        window.finish()
        if start is None or reason is None:
            continue
        if (end is None) == (duration is None):
            window.report.error(window.line, window.field("end"), "give end or duration (for a recurring window, "
                                                                  "duration)")
            continue
        if end is not None and every:
            window.error("every", "a recurring window takes a duration, not an end")
            continue
        length = duration if duration is not None else (end - start).total_seconds() if end else 0.0
        if length <= 0:
            window.error("end", "must be after start")
            continue
        rule = ""
        if every:
            try:
                rule = parse_rrule(every, start)
            except ValueError as exc:
                window.error("every", str(exc))
                continue
        found.append(Exclusion(start, length, reason, rule))
    return tuple(found)
