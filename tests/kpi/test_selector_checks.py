"""A typo in a selector must not be silent. A selector of failed events that can never match (its metric has
no series, or a label name no series of the metric carries) makes a KPI read 100% through a full outage;
a label name nobody carries makes a negative matcher match everything. KPISelectorCannotMatch (ticket) says so
within minutes while the denominator counts traffic; proven with promtool on the generated rules."""

import subprocess

from agent.config.yaml import load_text
from agent.kpi.render import render_prometheus, to_yaml
from agent.kpi.spec.document import parse_spec

SPEC = """\
service: shop
kpis:
  - name: availability
    window: 30d
    target: 99.9%
    ratio:
      {side}: {selector}
      denominator: http_requests_total{{job="shop"}}
"""
TRAFFIC = [{"series": 'http_requests_total{job="shop",status="200"}', "values": "0+600x40"}]
ALERT = 'ALERTS{alertname="KPISelectorCannotMatch",alertstate="firing",kpi="availability"}'
PAGE = 'count(ALERTS{alertname="KPIErrorBudgetBurn",alertstate="firing"})'


def run(promtool: str, tmp_path, side: str, selector: str, tests: list[dict]) -> None:
    spec, report = parse_spec(load_text(SPEC.format(side=side, selector=selector), "s.yaml"), "s.yaml")
    assert spec is not None, report.problems
    (tmp_path / "rules.yml").write_text(render_prometheus(spec, "s.yaml"))
    (tmp_path / "test.yml").write_text(to_yaml({"rule_files": ["rules.yml"], "evaluation_interval": "1m",
                                                "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def fires(problem: str, eval_time: str) -> dict:
    return {"expr": ALERT, "eval_time": eval_time, "exp_samples": [{
        "labels": f'{{__name__="ALERTS",alertname="KPISelectorCannotMatch",alertstate="firing",kpi="availability",'
                  f'kpi_problem="{problem}",kpi_service="shop",kpi_severity="ticket"}}', "value": 1}]}


def quiet(eval_time: str) -> dict:
    return {"expr": f"count({ALERT})", "eval_time": eval_time, "exp_samples": []}


def test_a_bad_selector_with_a_misspelt_label_tickets_within_minutes(promtool, tmp_path):
    run(promtool, tmp_path, "bad", 'http_requests_total{job="shop",code=~"5.."}', [{
        "interval": "1m", "input_series": TRAFFIC,
        "promql_expr_test": [
            quiet("8m"),
            fires("no series of http_requests_total has a label code", "16m"),
            {"expr": PAGE, "eval_time": "16m", "exp_samples": []},  # the KPI reads 100%: the very problem
        ]}])


def test_a_bad_selector_with_a_misspelt_metric_tickets(promtool, tmp_path):
    run(promtool, tmp_path, "bad", 'http_request_total{job="shop",status=~"5.."}', [{
        "interval": "1m", "input_series": TRAFFIC,
        "promql_expr_test": [quiet("8m"), fires("metric http_request_total has no series", "16m")]}])


def test_a_negative_matcher_on_a_label_nobody_carries_tickets(promtool, tmp_path):
    run(promtool, tmp_path, "numerator", 'http_requests_total{job="shop",stauts!~"5.."}', [{
        "interval": "1m", "input_series": TRAFFIC,
        "promql_expr_test": [fires("no series of http_requests_total has a label stauts", "16m")]}])


def test_nothing_failed_yet_is_not_a_typo(promtool, tmp_path):
    run(promtool, tmp_path, "bad", 'http_requests_total{job="shop",status=~"5.."}', [
        {"interval": "1m", "input_series": TRAFFIC, "promql_expr_test": [quiet("30m")]}])


def test_without_traffic_a_typo_waits_for_traffic(promtool, tmp_path):
    run(promtool, tmp_path, "bad", 'http_requests_total{job="shop",code=~"5.."}', [
        {"interval": "1m", "input_series": [{"series": 'http_requests_total{job="shop",status="200"}',
                                             "values": "0+0x40"}],
         "promql_expr_test": [quiet("30m")]}])
