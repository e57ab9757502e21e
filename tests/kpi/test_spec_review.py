"""The spec's review fields: calendar, goals and planned exclusions, read with every mistake named."""

from datetime import datetime
from zoneinfo import ZoneInfo

from agent.config.yaml import load_text
from agent.kpi.spec.document import parse_spec

BERLIN = ZoneInfo("Europe/Berlin")
HEAD = "service: shop\ntime_zone: Europe/Berlin\nkpis:\n  - name: conversion\n    window: 30d\n    target: 3%\n" \
       "    alerting: {strategy: none}\n    ratio: {numerator: orders_total, denominator: sessions_total}\n"


def read(extra: str):
    return parse_spec(load_text(HEAD + extra, "shop.yaml"), "shop.yaml")


def test_goals_exclusions_and_calendar_in_the_spec_time_zone():
    spec, report = read("""\
    calendar: month
    goals:
      - {target: 3.5%, by: 2027-03-31, from: 2026-10-01, baseline: 2.5%}
    exclusions:
      - {start: 2026-11-08T02:00, duration: 2h, every: "FREQ=WEEKLY;BYDAY=SU", reason: weekly maintenance}
      - {start: 2026-11-20T22:00:00+00:00, end: 2026-11-21T01:00:00+00:00, reason: migration}
""")
    assert report.errors == [] and spec is not None and spec.time_zone == "Europe/Berlin"
    kpi = spec.kpis[0]
    assert kpi.calendar == "month"
    goal = kpi.goals[0]
    assert (goal.target, goal.baseline, goal.text) == (0.035, 0.025, "2.5% -> 3.5% by 2027-03-31")
    assert goal.due == datetime(2027, 4, 1, tzinfo=BERLIN).timestamp()  # the end of the due day, in Berlin
    assert goal.start == datetime(2026, 10, 1, tzinfo=BERLIN).timestamp()
    weekly, migration = kpi.exclusions
    assert weekly.start == datetime(2026, 11, 8, 2, tzinfo=BERLIN) and weekly.duration == 7200
    assert weekly.rrule == "FREQ=WEEKLY;BYDAY=SU" and migration.duration == 3 * 3600 and migration.rrule == ""


def test_every_mistake_is_named_with_its_line():
    _, report = read("""\
    calendar: fortnight
    goals:
      - {target: 3.5%, by: 2026-03-31, from: 2026-10-01}
      - {target: 130%, by: soon, from: 2026-10-01}
    exclusions:
      - {start: 2026-11-08T02:00, duration: 2h, every: "FREQ=FORTNIGHTLY", reason: weekly maintenance}
      - {start: 2026-11-08T02:00, end: 2026-11-08T01:00, reason: backwards}
      - {start: 2026-11-08T02:00, reason: no end}
""")
    problems = [str(p) for p in report.errors]
    assert problems[0] == "shop.yaml:9: kpis[0].calendar: 'fortnight' is not one of: day, week, month, quarter, year"
    assert "shop.yaml:11: kpis[0].goals[0].from: must be before the due date (2026-04-01)" in problems
    assert "shop.yaml:12: kpis[0].goals[1].target: a ratio KPI's target is between 0% and 100%, got 1.3" in problems
    assert any(p.startswith("shop.yaml:12: kpis[0].goals[1].by: 'soon' is not a date (2027-03-31)") for p in problems)
    assert any(p.startswith("shop.yaml:14: kpis[0].exclusions[0].every: 'FREQ=FORTNIGHTLY' is not an RFC 5545 "
                            "recurrence rule") for p in problems)
    assert "shop.yaml:15: kpis[0].exclusions[1].end: must be after start" in problems
    assert ("shop.yaml:16: kpis[0].exclusions[2].end: give end or duration (for a recurring window, duration)"
            in problems)
