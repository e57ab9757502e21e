"""Indicator shorthands, per-KPI labels and per-KPI alert windows: all compile to the same kpi:* contract,
proven with promtool on the generated rules."""

import re
import subprocess

import yaml

from agent.kpi.compiler import compile_groups
from agent.kpi.render import render_prometheus
from tests.kpi.helpers import raw_reading_rules
from tests.kpi.test_compiler import near, run_promtool_test, spec_from

PAGE = 'count(ALERTS{alertname="KPIErrorBudgetBurn",alertstate="firing",kpi_severity="page"})'


def one_kpi(body: str, service: str = "shop") -> str:
    return f"service: {service}\nkpis:\n  - name: k\n    window: 30d\n" + body


def test_latency_shorthand_is_the_share_of_requests_under_the_bound(promtool, tmp_path):
    spec = spec_from(one_kpi("    target: 99%\n    latency: {histogram: 'rpc_seconds{job=\"api\"}', le: 1}\n"))
    labels = '{kpi="k",kpi_service="shop"}'
    run_promtool_test(promtool, tmp_path, spec, [{
        # 90 of 100 requests a minute under 1s; the exporter (a Python client) spells the bound "1.0"
        "interval": "1m",
        "input_series": [
            {"series": 'rpc_seconds_bucket{job="api",le="0.5"}', "values": "0+50x60"},
            {"series": 'rpc_seconds_bucket{job="api",le="1.0"}', "values": "0+90x60"},
            {"series": 'rpc_seconds_bucket{job="api",le="+Inf"}', "values": "0+100x60"},
            {"series": 'rpc_seconds_count{job="api"}', "values": "0+100x60"},
        ],
        "promql_expr_test": [
            {"expr": near('kpi:ratio:rate1h{kpi="k"}', 0.9), "eval_time": "60m",
             "exp_samples": [{"labels": labels, "value": 1}]},
            {"expr": PAGE, "eval_time": "60m", "exp_samples": [{"value": 1}]},
        ],
    }])
    groups = compile_groups(spec)
    assert raw_reading_rules(groups, ["rpc_seconds"]) == ["kpi:denominator:rate5m", "kpi:numerator:rate5m",
                                                          "KPISelectorCannotMatch"]


def test_bool_gauge_is_availability_over_time(promtool, tmp_path):
    spec = spec_from(one_kpi("    target: 99%\n    bool_gauge: probe_success{target=\"home\"}\n"))
    labels = '{kpi="k",kpi_service="shop"}'
    run_promtool_test(promtool, tmp_path, spec, [{
        # probed every 15s: up for 2 probes, down for 1, for an hour: 2/3 of the time (within 1%: Prometheus 2
        # counts a sample that falls exactly on the boundary of two 5m windows in both)
        "interval": "15s",
        "input_series": [{"series": 'probe_success{target="home"}', "values": "1 1 0 " * 80}],
        "promql_expr_test": [
            {"expr": 'abs(kpi:ratio:rate1h{kpi="k"} - 2 / 3) < bool 0.01', "eval_time": "60m",
             "exp_samples": [{"labels": labels, "value": 1}]},
            {"expr": PAGE, "eval_time": "60m", "exp_samples": [{"value": 1}]},
            # a probe that never runs: no ratio, KPINoData
            {"expr": 'count(ALERTS{alertname="KPINoData",alertstate="firing"})', "eval_time": "60m",
             "exp_samples": []},
        ],
    }, {
        "interval": "15s",
        "input_series": [{"series": 'probe_success{target="home"}', "values": "1x240"}],
        "promql_expr_test": [
            {"expr": near('kpi:ratio:period{kpi="k"}', 1), "eval_time": "60m",
             "exp_samples": [{"labels": labels, "value": 1}]},
            {"expr": PAGE, "eval_time": "60m", "exp_samples": []},
        ],
    }])
    assert raw_reading_rules(compile_groups(spec), ["probe_success"]) == ["kpi:denominator:rate5m",
                                                                          "kpi:numerator:rate5m",
                                                                          "KPISelectorCannotMatch"]


def test_bad_events_over_total_with_no_failures_yet_is_all_good(promtool, tmp_path):
    spec = spec_from(one_kpi("    target: 99.9%\n    ratio:\n      bad: 'requests_total{code=~\"5..\"}'\n"
                             "      denominator: requests_total\n"))
    labels = '{kpi="k",kpi_service="shop"}'
    run_promtool_test(promtool, tmp_path, spec, [{
        "interval": "1m",
        "input_series": [{"series": 'requests_total{code="200"}', "values": "0+100x90"},
                         {"series": 'requests_total{code="500"}', "values": "_x60 1+1x29"}],
        "promql_expr_test": [
            # no 5xx series yet: nothing failed
            {"expr": near('kpi:ratio:rate1h{kpi="k"}', 1), "eval_time": "55m",
             "exp_samples": [{"labels": labels, "value": 1}]},
            # then 1 of 101 requests fails a minute: about 1%, a 10x burn (not enough to page at 14.4x)
            {"expr": 'count(kpi:ratio:rate5m{kpi="k"} > 0.985 < 0.995)', "eval_time": "90m",
             "exp_samples": [{"value": 1}]},
            {"expr": PAGE, "eval_time": "90m", "exp_samples": []},
        ],
    }])


def test_per_kpi_labels_are_on_every_rule_of_that_kpi_only():
    spec = spec_from("service: shop\nlabels: {team: payments}\nkpis:\n"
                     "  - name: a\n    window: 30d\n    target: 99%\n    labels: {component: web, team: web}\n"
                     "    ratio: {numerator: 'x_total{ok=\"1\"}', denominator: x_total}\n"
                     "  - name: b\n    window: 30d\n    target: 5\n    value: sum(y)\n")
    rules = [r for g in compile_groups(spec) for r in g["rules"]]
    for rule in rules:
        if rule["labels"]["kpi"] == "a":
            assert rule["labels"]["component"] == "web" and rule["labels"]["team"] == "web"  # the KPI's wins
        else:
            assert "component" not in rule["labels"] and rule["labels"]["team"] == "payments"
    assert {r["labels"]["kpi"] for r in rules} == {"a", "b"}


def test_windows_factors_and_for_per_kpi(promtool, tmp_path):
    """A 30m/5m pair at 10x (a third of a percent of budget spent): 2% errors at 99.9% cross 1% bad in the 30m
    window after 15m, then `for: 2m`; the default 1h/5m pair (14.4x) alone would need 43.2m."""
    spec = spec_from(one_kpi(
        "    target: 99.9%\n    ratio: {numerator: 'r_total{ok=\"1\"}', denominator: r_total}\n"
        "    alerting:\n      labels: {team: checkout}\n      annotations: {runbook_url: https://r/x}\n"
        "      page:\n        windows: [{long: 30m, short: 5m, factor: 10}]\n        for: 2m\n"
        "        labels: {severity: critical}\n      ticket: false\n"))
    run_promtool_test(promtool, tmp_path, spec, [{
        "interval": "15s",
        "input_series": [{"series": 'r_total{ok="1"}', "values": "0+100x120 12000+98x240"},
                         {"series": 'r_total{ok="0"}', "values": "0+0x120 2+2x240"}],
        "promql_expr_test": [
            {"expr": PAGE, "eval_time": "46m", "exp_samples": []},
            {"expr": PAGE, "eval_time": "47m30s", "exp_samples": [{"value": 1}]},
        ],
    }], interval="30s")
    (page,) = [r for g in yaml.safe_load((tmp_path / "rules.yml").read_text())["groups"] for r in g["rules"]
               if r.get("alert") == "KPIErrorBudgetBurn"]
    assert page["for"] == "2m" and page["labels"]["severity"] == "critical" and page["labels"]["team"] == "checkout"
    assert page["annotations"]["runbook_url"] == "https://r/x"


def test_windows_that_are_not_whole_5m_are_read_raw_and_counted():
    spec = spec_from(one_kpi("    target: 99.9%\n    ratio: {numerator: 'r_total{ok=\"1\"}', denominator: r_total}\n"
                             "    alerting:\n      page:\n        windows: [{long: 1h, short: 2m, factor: 14.4}]\n"))
    groups = compile_groups(spec)
    assert raw_reading_rules(groups, ["r_total"]) == [
        "kpi:denominator:rate5m", "kpi:numerator:rate5m", "kpi:denominator:rate2m", "kpi:numerator:rate2m",
        "KPISelectorCannotMatch"]


def test_every_long_window_sums_at_most_twelve_recorded_windows(promtool, tmp_path):
    """Only page tiers on a 90d KPI: the period (90d) is far from the longest alert window (6h), so the plan
    records intermediate windows instead of summing hundreds of terms."""
    spec = spec_from("service: s\nkpis:\n  - name: k\n    window: 90d\n    target: 99.9%\n"
                     "    ratio: {numerator: 'r_total{ok=\"1\"}', denominator: r_total}\n"
                     "    alerting: {ticket: false}\n")
    text = render_prometheus(spec, "s.yaml")
    for rule in (r for g in yaml.safe_load(text)["groups"] for r in g["rules"]):
        assert len(re.findall(r"label_replace", rule["expr"])) <= 2 * 12, rule["record"]
    (tmp_path / "r.yml").write_text(text)
    assert subprocess.run([promtool, "check", "rules", str(tmp_path / "r.yml")]).returncode == 0
