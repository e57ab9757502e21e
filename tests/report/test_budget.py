"""When an error budget runs out at the last day's burn: worked out by hand on bucket sums."""

import math

from agent.config.yaml import load_text
from agent.kpi.spec.document import parse_spec
from agent.report.grid import plan_period
from agent.report.judging import budget_exhaustion

SPEC, _ = parse_spec(load_text(
    "service: s\nkpis:\n  - {name: a, window: 30d, target: 99%, ratio: {numerator: good, denominator: all}}\n"
    "  - {name: e, window: 30d, target: 5%, higher_is_better: false, ratio: {numerator: bad, denominator: all}}\n"
    "  - {name: v, window: 30d, target: 10, value: up}\n", "s.yaml"), "s.yaml")
assert SPEC is not None
AVAILABILITY, ERRORS, VALUE = SPEC.kpis
DAY = 86400.0


def test_a_budget_burning_faster_than_it_is_earned_runs_out_when_the_sums_say():
    # ten days of 1000 events a day, 0.5% failed; then a day at 3% failed
    period = plan_period(11 * DAY, 11 * DAY, 86400)
    bottoms = [1000.0] * 11
    tops = [995.0] * 10 + [970.0]
    when = budget_exhaustion(AVAILABILITY, tops, bottoms, period, ends=41 * DAY)
    # allowed 1% of 11000 = 110 failures, 80 spent: 30 left; each day adds 30 failures and earns 10 more: 1.5 days
    assert when is not None and math.isclose(when, 11 * DAY + 1.5 * DAY)
    # the same burn with the period ending in one day: it lasts the period
    assert budget_exhaustion(AVAILABILITY, tops, bottoms, period, ends=12 * DAY) == math.inf


def test_a_spent_budget_a_healthy_one_and_a_value_kpi():
    period = plan_period(2 * DAY, 2 * DAY, 86400)
    assert budget_exhaustion(AVAILABILITY, [900.0, 900.0], [1000.0, 1000.0], period, 30 * DAY) == -math.inf
    assert budget_exhaustion(AVAILABILITY, [1000.0, 1000.0], [1000.0, 1000.0], period, 30 * DAY) == math.inf
    # lower is better: the numerator counts the failures
    assert budget_exhaustion(ERRORS, [10.0, 80.0], [1000.0, 1000.0], period, 30 * DAY) == (
        2 * DAY + (0.05 * 2000 - 90) / ((80 - 50) / DAY))
    assert budget_exhaustion(VALUE, [1.0], [1.0], plan_period(DAY, DAY, 86400), DAY) is None
