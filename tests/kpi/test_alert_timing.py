"""When burn-rate alerts fire, measured with promtool: at the SRE Workbook's times for constant error rates
(within one evaluation interval), not for a handful of failures at night, and unaffected by gaps."""

import pytest

from tests.kpi.firing import BAD, GOOD, SPEC, WORKBOOK, late_or_early, rates_and_alerts, workbook_seconds
from tests.kpi.test_compiler import run_promtool_test, spec_from

EVALUATION = 30  # seconds: the rule group's default interval


def off_the_workbook_time(promtool, tmp_path, tier: str, share: float) -> list[str]:
    """[] when the tier first fires within one evaluation after the Workbook's time, or what promtool saw."""
    expected = workbook_seconds(WORKBOOK[tier], share, 0.001)
    assert expected is not None
    history = max(pair.long for pair in WORKBOOK[tier]) + 600
    alert = f'ALERTS{{alertname="KPIErrorBudgetBurn",alertstate="firing",kpi_severity="{tier}"}}'
    return late_or_early(promtool, tmp_path, rates_and_alerts(spec_from(SPEC)), GOOD, BAD, alert, share, expected,
                         history, EVALUATION)


@pytest.mark.parametrize("share", [0.01, 0.02, 0.05, 1.0])
@pytest.mark.slow
def test_page_fires_within_one_evaluation_of_the_workbook_time(promtool, tmp_path, share):
    # 2% at 99.9%: the Workbook pages after 43.2 minutes (1h window reaches 14.4x); 100%: after 52 seconds
    assert off_the_workbook_time(promtool, tmp_path, "page", share) == []


@pytest.mark.slow
def test_ticket_fires_within_one_evaluation_of_the_workbook_time(promtool, tmp_path):
    # 2% at 99.9%: the 1d window reaches 3x after 3.6 hours (three days of healthy history first)
    assert off_the_workbook_time(promtool, tmp_path, "ticket", 0.02) == []


def test_min_bad_events_keeps_three_failures_out_of_five_at_night_from_paging(promtool, tmp_path):
    spec = spec_from(SPEC + "    alerting: {min_bad_events: 10}\n")
    page = 'count(ALERTS{alertname="KPIErrorBudgetBurn",alertstate="firing",kpi_severity="page"})'
    run_promtool_test(promtool, tmp_path, spec, [
        {"name": "2 good then 3 failed requests in the night's only 5 minutes of traffic",
         "interval": "1m",
         "input_series": [{"series": GOOD, "values": "0+10x60 600+0x120 601 602 602+0x10"},
                          {"series": BAD, "values": "0+0x180 0 0 1 2 3 3+0x10"}],
         "promql_expr_test": [
             # the burn is enormous (60% failed) but 3 failures are fewer than 10
             {"expr": 'count(kpi:burn_rate:rate1h{kpi="availability"} > 14.4)', "eval_time": "186m",
              "exp_samples": [{"value": 1}]},
             {"expr": page, "eval_time": "186m", "exp_samples": []}]},
        {"name": "a real outage at night: 30 failed requests in 30 minutes",
         "interval": "1m",
         "input_series": [{"series": GOOD, "values": "0+10x60 600+0x150"},
                          {"series": BAD, "values": "0+0x180 1+1x30"}],
         "promql_expr_test": [{"expr": page, "eval_time": "200m", "exp_samples": [{"value": 1}]}]},
    ])


def test_a_gap_in_the_data_leaves_the_rest_of_the_window_counted(promtool, tmp_path):
    """Prometheus down for 20 minutes: the 1h window keeps the 40 minutes it has (each slice of a long window
    is its own term, summed with `or`), instead of disappearing for an hour."""
    spec = spec_from(SPEC)
    labels = '{kpi="availability",kpi_service="shop"}'
    run_promtool_test(promtool, tmp_path, spec, [{
        "interval": "1m",
        "input_series": [{"series": GOOD, "values": "0+99x60 _x20 7920+99x25"},
                         {"series": BAD, "values": "0+1x60 _x20 80+1x25"}],
        "promql_expr_test": [
            {"expr": 'abs(kpi:ratio:rate1h{kpi="availability"} - 0.99) < bool 1e-9', "eval_time": "100m",
             "exp_samples": [{"labels": labels, "value": 1}]},
            {"expr": 'abs(kpi:ratio:period{kpi="availability"} - 0.99) < bool 1e-9', "eval_time": "100m",
             "exp_samples": [{"labels": labels, "value": 1}]},
        ],
    }])
