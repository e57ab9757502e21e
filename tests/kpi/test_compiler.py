"""The compiler: deterministic output, the public rule contract, and values proven with promtool."""

import subprocess
from pathlib import Path

import yaml

from agent.config.yaml import load_text
from agent.kpi.compiler import compile_groups
from agent.kpi.render import render_operator, render_prometheus, to_yaml
from agent.kpi.spec.document import parse_spec
from tests.kpi.helpers import load_spec, raw_reading_rules

ROOT = Path(__file__).parents[2]


def spec_from(text: str):
    spec, report = parse_spec(load_text(text, "t.yaml"), "t.yaml")
    assert report.errors == [], report.errors
    return spec


def near(expr: str, value: float) -> str:
    """1 where ``expr`` is within 1e-9 of ``value``: rates are floats, exact equality is luck."""
    return f"abs(({expr}) - {value}) < bool 1e-9"


def run_promtool_test(promtool: str, tmp_path: Path, spec, tests: list[dict], interval: str = "1m") -> None:
    (tmp_path / "rules.yml").write_text(render_prometheus(spec, "t.yaml"))
    (tmp_path / "test.yml").write_text(to_yaml({"rule_files": ["rules.yml"], "evaluation_interval": interval,
                                                "tests": tests}))
    result = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


AVAILABILITY = """\
service: shop
labels: {{team: payments}}
kpis:
  - name: availability
    description: Requests without a server error
    objective: Customers can pay
    owner: payments
    window: 30d
    target: {target}
    ratio:
      numerator: http_requests_total{{job="shop",status!~"5.."}}
      denominator: http_requests_total{{job="shop"}}
    alerting:
      page: {{annotations: {{runbook_url: https://runbooks/x}}}}
"""


def test_same_spec_same_bytes_whatever_the_kpi_order(tmp_path):
    text = (ROOT / "rules" / "shop.yaml").read_text()
    first = render_prometheus(spec_from(text), "shop.yaml")
    assert first == render_prometheus(spec_from(text), "shop.yaml")
    head, kpis = text.split("kpis:\n")
    items = ["  - name:" + part for part in kpis.split("  - name:")[1:]]
    reordered = head + "kpis:\n" + "".join(reversed(items))
    assert render_prometheus(spec_from(reordered), "shop.yaml") == first


def test_public_rule_contract():
    groups = compile_groups(spec_from(AVAILABILITY.format(target="99.9%")))
    records = [r["record"] for g in groups for r in g["rules"] if "record" in r]
    for name in ("kpi:numerator:rate5m", "kpi:denominator:rate5m", "kpi:ratio:rate5m", "kpi:ratio:rate1h",
                 "kpi:ratio:rate3d", "kpi:ratio:period", "kpi:target", "kpi:window:seconds", "kpi:meets_target",
                 "kpi:error_budget:ratio", "kpi:error_budget_remaining:ratio", "kpi:burn_rate:rate1h",
                 "kpi:burn_rate:rate5m", "kpi_info"):
        assert name in records, name
    # only the two 5m rates read raw series; every other window sums recorded rates
    # (and, every 5m, the selector check counts the metric's current series: no range)
    assert raw_reading_rules(groups, ["http_requests_total"]) == ["kpi:denominator:rate5m", "kpi:numerator:rate5m",
                                                                  "KPISelectorCannotMatch"]
    for group in groups:
        for rule in group["rules"]:
            assert rule["labels"]["kpi"] == "availability" and rule["labels"]["kpi_service"] == "shop"
            assert rule["labels"]["team"] == "payments"
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    # every alert has a kpi_severity, so that the shipped Alertmanager routes it somewhere
    assert [(a["alert"], a["labels"].get("kpi_severity")) for a in alerts] == [
        ("KPIErrorBudgetBurn", "page"), ("KPIErrorBudgetBurn", "ticket"), ("KPINumeratorAbsent", "ticket"),
        ("KPINoData", "ticket"), ("KPINoTraffic", "ticket"), ("KPISelectorCannotMatch", "ticket")]
    assert alerts[0]["annotations"]["runbook_url"] == "https://runbooks/x"


def test_promtool_accepts_every_example_without_warnings(promtool, tmp_path):
    for spec_file in sorted((ROOT / "rules").glob("*.yaml")):
        out = tmp_path / (spec_file.stem + ".yml")
        out.write_text(render_prometheus(load_spec(spec_file), spec_file.name))
        result = subprocess.run([promtool, "check", "rules", str(out)], capture_output=True, text=True)
        assert result.returncode == 0 and "warn" not in (result.stdout + result.stderr).lower(), result.stdout


def test_prometheus_operator_output_is_a_prometheusrule_with_the_same_groups():
    spec = load_spec(ROOT / "rules" / "shop.yaml")
    document = yaml.safe_load(render_operator(spec, "shop.yaml", "monitoring"))
    assert document["apiVersion"] == "monitoring.coreos.com/v1" and document["kind"] == "PrometheusRule"
    assert document["metadata"]["name"] == "kpi-shop" and document["metadata"]["namespace"] == "monitoring"
    assert document["spec"]["groups"] == yaml.safe_load(render_prometheus(spec, "shop.yaml"))["groups"]


def test_known_traffic_mix_gives_exact_ratio_budget_and_burn(promtool, tmp_path):
    # 7 good and 1 bad request per second against a 75% target: ratio 0.875, budget 0.25, burn 0.5.
    spec = spec_from(AVAILABILITY.format(target="75%").replace("      page: {annotations: {runbook_url: https://runbooks/x}}\n",
                                                               "      page: false\n"))
    sel = '{kpi="availability",kpi_service="shop"}'

    def check(expr, value):
        return {"expr": near(expr, value), "eval_time": "3h",
                "exp_samples": [{"labels": '{kpi="availability",kpi_service="shop",team="payments"}', "value": 1}]}

    tests = [{
        "interval": "1m",
        "input_series": [
            {"series": 'http_requests_total{job="shop",status="200"}', "values": "0+420x240"},
            {"series": 'http_requests_total{job="shop",status="500"}', "values": "0+60x240"},
            {"series": 'http_requests_total{job="other",status="500"}', "values": "0+600x240"},
        ],
        "promql_expr_test": [
            check(f"kpi:denominator:rate5m{sel}", 8),
            check(f"kpi:ratio:rate5m{sel}", 0.875),
            check(f"kpi:ratio:rate1d{sel}", 0.875),
            check(f"kpi:ratio:period{sel}", 0.875),
            check(f"kpi:burn_rate:rate2h{sel}", 0.5),
            check(f"kpi:error_budget:ratio{sel}", 0.25),
            check(f"kpi:error_budget_remaining:ratio{sel}", 0.5),
            check(f"kpi:meets_target{sel}", 1),
            check(f"kpi:target{sel}", 0.75),
            check(f"kpi:window:seconds{sel}", 2592000),
        ],
    }]
    run_promtool_test(promtool, tmp_path, spec, tests)


def test_period_ratio_is_traffic_weighted_not_an_average_of_ratios(promtool, tmp_path):
    # 1h at 100 req/s with 10% errors, then 1h at 1 req/s with no error: 36000 bad of 363600 requests.
    # The exact period ratio is 0.90099; an average of 5m ratios (Sloth) would say about 0.95.
    spec = spec_from(AVAILABILITY.format(target="75%").replace("      page: {annotations: {runbook_url: https://runbooks/x}}\n",
                                                               "      page: false\n"))
    tests = [{
        "interval": "1m",
        "input_series": [
            {"series": 'http_requests_total{job="shop",status="200"}', "values": "0+5400x60 324000+60x60"},
            {"series": 'http_requests_total{job="shop",status="500"}', "values": "0+600x60 36000+0x60"},
        ],
        "promql_expr_test": [
            {"expr": 'count(kpi:ratio:period{kpi="availability"} > 0.895 < 0.91)', "eval_time": "120m",
             "exp_samples": [{"value": 1}]},
            # what averaging the 5m ratios over the same time would report instead
            {"expr": 'count(avg_over_time(kpi:ratio:rate5m{kpi="availability"}[2h]) > 0.93)', "eval_time": "120m",
             "exp_samples": [{"value": 1}]},
        ],
    }]
    run_promtool_test(promtool, tmp_path, spec, tests)


def test_page_fires_when_one_hour_of_two_percent_errors_spends_two_percent_of_budget(promtool, tmp_path):
    # 99.9% target, 6h healthy (so the 6h window is full), then 2% errors: the 1h window reaches 14.4x burn
    # (1.44% bad) ~43 minutes after the errors start; the 6h pair (6x) would need ~108 minutes.
    spec = spec_from(AVAILABILITY.format(target="99.9%"))
    alerts = 'count(ALERTS{alertname="KPIErrorBudgetBurn",alertstate="firing",kpi_severity="page"})'
    tests = [{
        "interval": "1m",
        "input_series": [
            {"series": 'http_requests_total{job="shop",status="200"}', "values": "0+1000x360 360980+980x89"},
            {"series": 'http_requests_total{job="shop",status="500"}', "values": "0+0x360 20+20x89"},
        ],
        "promql_expr_test": [
            {"expr": alerts, "eval_time": "400m", "exp_samples": []},
            {"expr": alerts, "eval_time": "410m", "exp_samples": [{"value": 1}]},
            {"expr": near('kpi:burn_rate:rate5m{kpi="availability"}', 20), "eval_time": "410m",
             "exp_samples": [{"labels": '{kpi="availability",kpi_service="shop",team="payments"}', "value": 1}]},
        ],
        "alert_rule_test": [{
            "eval_time": "410m",
            "alertname": "KPINoData",
            "exp_alerts": [],
        }],
    }]
    run_promtool_test(promtool, tmp_path, spec, tests)


def test_a_typo_in_the_numerator_is_a_ticket_not_a_page_and_a_real_outage_still_pages(promtool, tmp_path):
    """A numerator naming a metric that never existed used to become 0 x denominator: a 100x burn and a false
    page within minutes. Good events that never existed are now a mistake (KPINumeratorAbsent, ticket); good
    events that stop increasing, or whose series vanish after existing, are an outage and page."""
    typo = spec_from(AVAILABILITY.format(target="99.9%").replace('numerator: http_requests_total{',
                                                                 'numerator: http_request_total{'))
    page = 'count(ALERTS{alertname="KPIErrorBudgetBurn",alertstate="firing",kpi_severity="page"})'
    absent = 'ALERTS{alertname="KPINumeratorAbsent",alertstate="firing"}'
    (typo_rules := tmp_path / "typo").mkdir()
    run_promtool_test(promtool, typo_rules, typo, [{
        "name": "healthy traffic, numerator selector names a metric that does not exist",
        "interval": "1m",
        "input_series": [{"series": 'http_requests_total{job="shop",status="200"}', "values": "0+100x90"}],
        "promql_expr_test": [
            {"expr": page, "eval_time": "90m", "exp_samples": []},
            {"expr": 'kpi:ratio:rate5m{kpi="availability"}', "eval_time": "90m", "exp_samples": []},
            {"expr": absent, "eval_time": "8m", "exp_samples": []},
            {"expr": absent, "eval_time": "15m", "exp_samples": [{
                "labels": '{__name__="ALERTS",alertname="KPINumeratorAbsent",alertstate="firing",kpi="availability",'
                          'kpi_service="shop",kpi_severity="ticket",team="payments"}', "value": 1}]},
        ],
    }])
    rules = yaml.safe_load((typo_rules / "rules.yml").read_text())
    (alert,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "KPINumeratorAbsent"]
    assert alert["annotations"]["selector"] == 'http_request_total{job="shop",status!~"5.."}'
    assert 'http_request_total{job="shop",status!~"5.."}' in alert["annotations"]["summary"]

    spec = spec_from(AVAILABILITY.format(target="99.9%"))
    run_promtool_test(promtool, tmp_path, spec, [
        {"name": "every request fails from the start: good events never counted, no page but a ticket",
         "interval": "1m",
         "input_series": [{"series": 'http_requests_total{job="shop",status="503"}', "values": "0+100x30"}],
         "promql_expr_test": [
             {"expr": page, "eval_time": "30m", "exp_samples": []},
             {"expr": f"count({absent})", "eval_time": "30m", "exp_samples": [{"value": 1}]}]},
        {"name": "good counters stop increasing while requests fail: pages",
         "interval": "1m",
         "input_series": [{"series": 'http_requests_total{job="shop",status="200"}', "values": "0+100x60 6000+0x30"},
                          {"series": 'http_requests_total{job="shop",status="503"}', "values": "0+0x60 0+100x30"}],
         "promql_expr_test": [
             {"expr": page, "eval_time": "59m", "exp_samples": []},
             {"expr": page, "eval_time": "63m", "exp_samples": [{"value": 1}]}]},
        {"name": "the good series vanish (the exporter restarted) while requests fail: still pages",
         "interval": "1m",
         "input_series": [{"series": 'http_requests_total{job="shop",status="200"}', "values": "0+100x60"},
                          {"series": 'http_requests_total{job="shop",status="503"}', "values": "0+0x60 0+100x30"}],
         "promql_expr_test": [
             {"expr": page, "eval_time": "63m", "exp_samples": [{"value": 1}]},
             # long after the last good sample: the numerator is filled with 0, not missing
             {"expr": 'kpi:ratio:rate5m{kpi="availability"} + 0', "eval_time": "85m",
              "exp_samples": [{"labels": '{kpi="availability",kpi_service="shop",team="payments"}', "value": 0}]},
             {"expr": page, "eval_time": "85m", "exp_samples": [{"value": 1}]},
             {"expr": f"count({absent})", "eval_time": "85m", "exp_samples": []}]},
        {"name": "flat counters: no ratio, no page, and KPINoTraffic after an hour",
         "interval": "1m",
         "input_series": [{"series": 'http_requests_total{job="shop",status="200"}', "values": "5+0x90"}],
         "promql_expr_test": [
             {"expr": page, "eval_time": "80m", "exp_samples": []},
             {"expr": 'kpi:ratio:rate1h{kpi="availability"}', "eval_time": "80m", "exp_samples": []},
             {"expr": 'count(ALERTS{alertname="KPINoTraffic",alertstate="firing"})', "eval_time": "80m",
              "exp_samples": [{"value": 1}]},
             {"expr": 'count(ALERTS{alertname="KPINoData",alertstate="firing"})', "eval_time": "80m",
              "exp_samples": []}]},
        {"name": "metrics absent: KPINoData after 10m",
         "interval": "1m",
         "input_series": [{"series": "unrelated", "values": "1x30"}],
         "promql_expr_test": [
             {"expr": 'count(ALERTS{alertname="KPINoData",alertstate="firing"})', "eval_time": "9m",
              "exp_samples": []},
             {"expr": 'count(ALERTS{alertname="KPINoData",alertstate="firing"})', "eval_time": "11m",
              "exp_samples": [{"value": 1}]}]},
    ])


def test_group_by_and_lower_is_better(promtool, tmp_path):
    spec = spec_from("""\
service: api
kpis:
  - name: error_rate
    window: 30d
    target: 5%
    higher_is_better: false
    ratio:
      numerator: requests_total{code=~"5.."}
      denominator: requests_total
    group_by: [region]
    alerting: {page: false, ticket: false, no_data: false}
""")
    sel = '{kpi="error_rate"}'
    eu, us = '{kpi="error_rate",kpi_service="api",region="eu"}', '{kpi="error_rate",kpi_service="api",region="us"}'
    tests = [{
        "interval": "1m",
        "input_series": [
            {"series": 'requests_total{region="eu",code="200"}', "values": "0+576x60"},
            {"series": 'requests_total{region="eu",code="500"}', "values": "0+24x60"},
            {"series": 'requests_total{region="us",code="200"}', "values": "0+600x60"},
        ],
        "promql_expr_test": [
            # 4% errors in eu (no 5xx series at all in us: 0%, not missing)
            {"expr": near('kpi:ratio:rate5m{kpi="error_rate",region="eu"}', 0.04), "eval_time": "50m",
             "exp_samples": [{"labels": eu, "value": 1}]},
            {"expr": 'kpi:ratio:rate5m{kpi="error_rate",region="us"} + 0', "eval_time": "50m",
             "exp_samples": [{"labels": us, "value": 0}]},
            {"expr": f"kpi:meets_target{sel} + 0", "eval_time": "50m", "exp_samples": [
                {"labels": eu, "value": 1}, {"labels": us, "value": 1}]},
            {"expr": near('kpi:error_budget_remaining:ratio{kpi="error_rate",region="eu"}', 0.2), "eval_time": "50m",
             "exp_samples": [{"labels": eu, "value": 1}]},
            {"expr": near('kpi:error_budget_remaining:ratio{kpi="error_rate",region="us"}', 1), "eval_time": "50m",
             "exp_samples": [{"labels": us, "value": 1}]},
        ],
    }]
    run_promtool_test(promtool, tmp_path, spec, tests)


def test_threshold_and_value_kpis(promtool, tmp_path):
    spec = load_spec(ROOT / "rules" / "shop.yaml")
    below = 'count(ALERTS{alertname="KPIBelowTarget",alertstate="firing",kpi="checkout_conversion"})'
    mrr = 'count(ALERTS{alertname="KPIBelowTarget",alertstate="firing",kpi="monthly_recurring_revenue"})'
    tests = [{
        "interval": "1m",
        "input_series": [
            {"series": 'shop_checkouts_started_total{job="kpi-agent"}', "values": "0+1000x200"},
            {"series": 'shop_orders_total{job="kpi-agent"}', "values": "0+20x200"},  # 2% conversion, target 3%
            {"series": 'shop_mrr_dollars{job="kpi-agent"}', "values": "90000x200"},
        ],
        "promql_expr_test": [
            # steady traffic: the 1h ratio is 2% as soon as the 5m rate exists; then `for: 30m` must pass
            {"expr": below, "eval_time": "30m", "exp_samples": []},
            {"expr": below, "eval_time": "40m", "exp_samples": [{"value": 1}]},
            {"expr": 'kpi:value{kpi="monthly_recurring_revenue"} + 0', "eval_time": "10m",
             "exp_samples": [{"labels": '{kpi="monthly_recurring_revenue",kpi_service="shop",team="payments"}',
                              "value": 90000}]},
            {"expr": mrr, "eval_time": "50m", "exp_samples": []},
        ],
    }]
    run_promtool_test(promtool, tmp_path, spec, tests)
