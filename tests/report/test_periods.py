"""Calendar periods as people name them, in a time zone with daylight-saving changes."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from agent.report.grid import plan_calendar
from agent.report.periods import grid_step, parse_period, short_label, zone

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*parts: int) -> float:
    return datetime(*parts, tzinfo=BERLIN).timestamp()


def test_a_month_with_a_dst_change_is_an_hour_short_or_long():
    at = berlin(2026, 12, 6, 12)
    march = parse_period("2026-03", BERLIN).current(at)
    assert (march.start, march.end) == (berlin(2026, 3, 1), berlin(2026, 4, 1))
    assert march.length == 31 * 86400 - 3600 and march.label == "March 2026"
    october = parse_period("2026-10", BERLIN).current(at)
    assert october.length == 31 * 86400 + 3600
    # midnight of 1 April is 22:00 UTC on 31 March: the hour after it is April's in Berlin and March's in UTC
    assert datetime.fromtimestamp(march.end, ZoneInfo("UTC")).isoformat() == "2026-03-31T22:00:00+00:00"


def test_last_and_to_date_are_relative_to_the_moment_of_the_report():
    at = berlin(2026, 12, 6, 12)
    last = parse_period("last-month", BERLIN)
    november = last.current(at)
    assert november.label == "November 2026" and november.complete
    assert last.previous(november).label == "October 2026"
    assert last.year_ago(november).label == "November 2025"
    assert [s.label for s in last.history(november, 3)] == ["September 2026", "October 2026", "November 2026"]
    running = parse_period("month-to-date", BERLIN)
    december = running.current(at)
    assert (december.start, december.end, december.complete) == (berlin(2026, 12, 1), at, False)
    assert december.label == "December 2026 to date"
    # compared with the same stretch of the month before: 1-6 November, noon
    before = running.previous(december)
    assert (before.start, before.end) == (berlin(2026, 11, 1), berlin(2026, 11, 6, 12))
    # at exactly midnight of the 1st, the last month is the one that just ended
    assert last.current(berlin(2026, 12, 1)).label == "November 2026"


def test_quarters_weeks_and_years():
    at = berlin(2026, 12, 6, 12)
    quarter = parse_period("last-quarter", BERLIN).current(at)
    assert (quarter.label, quarter.start, quarter.end) == ("2026 Q3", berlin(2026, 7, 1), berlin(2026, 10, 1))
    q1 = parse_period("2026-Q1", BERLIN).current(at)
    assert q1.length == (31 + 28 + 31) * 86400 - 3600  # the spring change falls in Q1
    week = parse_period("last-week", BERLIN).current(at)  # ISO weeks start on Monday
    assert (week.start, week.end) == (berlin(2026, 11, 23), berlin(2026, 11, 30))
    assert week.label.startswith("2026-W48")
    spring = parse_period("2026-W13", BERLIN).current(at)
    assert spring.length == 7 * 86400 - 3600
    assert parse_period("2025", BERLIN).current(at).label == "2025"
    year = parse_period("year-to-date", BERLIN)
    assert year.year_ago(year.current(at)).end == berlin(2025, 12, 6, 12)


def test_a_rolling_period_compares_with_the_one_before_it():
    choice = parse_period("30d", BERLIN)
    span = choice.current(berlin(2026, 12, 6, 12))
    assert span.length == 30 * 86400
    assert choice.previous(span).end == span.start


@pytest.mark.parametrize(("text", "message"), [
    ("month", r"say which month: last-month \(the last complete one\) or month-to-date"),
    ("2026-13", "is not a period"),
    ("2026-W54", "is not a date"),
    ("fortnight", "is not a period: use a duration"),
])
def test_what_is_not_a_period_says_what_is(text, message):
    with pytest.raises(ValueError, match=message):
        parse_period(text, BERLIN)


def test_an_unknown_time_zone_is_named():
    with pytest.raises(ValueError, match="'Mars/Olympus' is not an IANA time zone name"):
        zone("Mars/Olympus")


def test_chart_buckets_follow_the_local_clock_across_a_dst_change():
    march = parse_period("2026-03", BERLIN).current(berlin(2026, 12, 6))
    period = plan_calendar(march, BERLIN, 30)
    local_hours = {datetime.fromtimestamp(edge, BERLIN).hour for edge in period.edges}
    assert local_hours == {0, 4, 8, 12, 16, 20}  # every 4 hours of the wall clock, before and after the change
    assert period.fine_step == 3600  # one grid lands on every edge on both sides of the change
    assert period.edges[0] == march.start and period.edges[-1] == march.end


def test_the_grid_step_lands_on_every_instant():
    assert grid_step([0, 3600, 7200, 10800 + 1800], 86400) == 1800
    assert grid_step([0, 86400 * 31, 86400 * 61 - 3600], 86400) == 3600
    assert grid_step([0.0, 7200.0], 3600) == 3600  # never above the limit


def test_history_columns_have_short_names():
    assert [short_label(text) for text in ("November 2026", "2026 Q4", "2026-W47 (Nov 16 – Nov 22)", "2026",
                                           "2026-11-24 (Tue)", "December 2026 to date")] == [
        "Nov 2026", "2026 Q4", "W47", "2026", "2026-11-24", "Dec 2026 so far"]
