"""The arithmetic behind a report's numbers, on bucket sums whose right answer is known by hand."""

from agent.config.yaml import load_text
from agent.kpi.spec.document import parse_spec
from agent.report.grid import bucketed, plan_period
from agent.report.judging import NO_DATA, OK, PARTIAL, judge, meets, ratio_line, value_line
from agent.report.model import format_kpi_value

SPEC = """\
service: shop
kpis:
  - {name: availability, window: 30d, target: 99%, ratio: {numerator: good_total, denominator: all_total}}
  - {name: errors, window: 30d, target: 5%, higher_is_better: false,
     ratio: {numerator: bad_total, denominator: all_total}}
  - {name: strict, window: 30d, target: 99.99%, ratio: {numerator: good_total, denominator: all_total}}
  - {name: revenue, window: 30d, target: 100000, value: sum(mrr_dollars)}
"""
SPEC_OBJECT, _ = parse_spec(load_text(SPEC, "shop.yaml"), "shop.yaml")
assert SPEC_OBJECT is not None
AVAILABILITY, ERRORS, STRICT, REVENUE = SPEC_OBJECT.kpis


def test_buckets_follow_the_rules_interval_and_cover_the_period_exactly():
    month = plan_period(30 * 86400, 1_000_000.0, 30)
    assert (month.step, month.buckets, month.length) == (10800, 240, 30 * 86400)  # 3h buckets
    minute = plan_period(60, 1_000_000.0, 1)
    assert (minute.step, minute.buckets) == (1, 60)
    # buckets never shorter than the evaluation interval: each holds at least one sample
    assert plan_period(3600, 1_000_000.0, 30).step == 30
    assert plan_period(7 * 86400, 1_000_000.0, 30).step == 3600
    odd = plan_period(100, 1_000_000.0, 30)
    assert odd.step == 30 and odd.buckets == 4 and odd.start == 1_000_000.0 - 120  # rounded up, never short


def test_samples_land_in_their_bucket_and_missing_ones_stay_missing():
    period = plan_period(60, 1000.0, 15)  # 4 buckets of 15s ending at 955, 970, 985, 1000
    assert bucketed([(955.0, 1.0), (985.0, 3.0), (1000.0, float("nan"))], period) == [1.0, None, 3.0, None]


def test_the_period_ratio_weighs_each_bucket_by_its_traffic():
    # a quiet bucket at 50% and a busy one at 100%: 1010 good of 1020, not the 75% an average of ratios gives
    line = ratio_line(AVAILABILITY, {}, [10.0, 1000.0], [20.0, 1000.0])
    assert abs(line.value - 1010 / 1020) < 1e-12
    assert line.per_bucket == (0.5, 1.0)
    assert line.cumulative == (0.5, 1010 / 1020)
    assert abs(line.budget_remaining - (1 - (10 / 1020) / 0.01)) < 1e-12  # bad share over budget
    assert line.budget_curve[-1] == line.budget_remaining
    assert meets(AVAILABILITY, line.value) is True  # 99.02%: met; the average of ratios would say missed


def test_lower_is_better_spends_budget_on_the_ratio_itself():
    line = ratio_line(ERRORS, {}, [2.0], [100.0])
    assert line.value == 0.02 and abs(line.budget_remaining - (1 - 0.02 / 0.05)) < 1e-12
    assert meets(ERRORS, 0.02) is True and meets(ERRORS, 0.06) is False


def test_no_traffic_is_no_value_never_zero_percent():
    line = ratio_line(AVAILABILITY, {}, [0.0, None], [0.0, None])
    assert line.value is None and line.budget_remaining is None and line.per_bucket == (None, None)
    assert meets(AVAILABILITY, line.value) is None
    state, note = judge([line], plan_period(60, 1000.0, 30))
    assert state == NO_DATA and "not as 0%" in note


def test_a_numerator_missing_where_there_is_traffic_counts_no_good_event():
    line = ratio_line(AVAILABILITY, {}, [None, 5.0], [5.0, 5.0])
    assert line.value == 0.5


def test_a_value_kpi_averages_samples_not_buckets():
    line = value_line({}, [30.0, 10.0], [3.0, 1.0])  # three samples of 10, then one of 10: 10, not (10+10)/2
    assert line.value == 10.0
    line = value_line({}, [30.0, 40.0], [3.0, 1.0])
    assert line.value == 70 / 4 and line.per_bucket == (10.0, 40.0) and line.budget_remaining is None


def test_history_that_starts_or_stops_inside_the_period_is_partial():
    period = plan_period(600, 10_000.0, 60)  # 10 buckets
    full = ratio_line(AVAILABILITY, {}, [1.0] * 10, [1.0] * 10)
    assert judge([full], period) == (OK, "")
    missed_one = ratio_line(AVAILABILITY, {}, [None] + [1.0] * 9, [None] + [1.0] * 9)
    assert judge([missed_one], period)[0] == OK  # one empty bucket at an end is a missed evaluation
    late = ratio_line(AVAILABILITY, {}, [None] * 4 + [1.0] * 6, [None] * 4 + [1.0] * 6)
    state, note = judge([late], period)
    assert state == PARTIAL and note.startswith("partial period: data only from ") and "6m of the 10m period" in note
    stopped = ratio_line(AVAILABILITY, {}, [1.0] * 5 + [None] * 5, [1.0] * 5 + [None] * 5)
    state, note = judge([stopped], period)
    assert state == PARTIAL and "no data since" in note and "the last 5m of the 10m period" in note


def test_values_get_enough_decimals_to_be_told_from_their_target():
    assert format_kpi_value(AVAILABILITY, 0.98012) == "98.01%"
    assert format_kpi_value(STRICT, 0.99987) == "99.987%"  # 99.99% would hide the miss
    assert format_kpi_value(ERRORS, 0.0201) == "2.01%"
    # a value KPI: no percent sign, thousands grouped, never an exponent
    assert [format_kpi_value(REVENUE, v) for v in (1234567.8, 123456, 0.25127, 12.5)] == [
        "1,234,568", "123,456", "0.2513", "12.5"]
