"""Dashboards and Grafana alert rules: deterministic, generic over specs, wired to the kpi:* contract."""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from agent import yamlsrc
from agent.kpi import grafana
from agent.kpi.spec import load_spec, parse_spec

ROOT = Path(__file__).parents[2]
GROUPED = """\
service: api
kpis:
  - name: error_rate
    window: 7d
    target: 1%
    higher_is_better: false
    ratio: {numerator: 'requests_total{code=~"5.."}', denominator: requests_total}
    group_by: [region]
    supporting_metrics:
      - {title: Requests, query: "sum(rate(requests_total[5m]))"}
"""


def spec_from(text: str):
    spec, report = parse_spec(yamlsrc.load_text(text, "s.yaml"), "s.yaml")
    assert report.errors == []
    return spec


def test_dashboards_are_deterministic_and_valid_json():
    spec = load_spec(ROOT / "rules" / "shop.yaml")
    for build in (grafana.overview_dashboard, grafana.agent_dashboard, lambda: grafana.service_dashboard(spec)):
        first, second = build(), build()
        assert first == second
        document = json.loads(first)
        assert document["uid"] and document["panels"]
        assert all(p.get("datasource", {}).get("uid") == "${datasource}" for p in document["panels"]
                   if p.get("type") != "row")


def test_service_dashboard_reads_only_kpi_series_and_the_specs_supporting_metrics():
    spec = load_spec(ROOT / "rules" / "shop.yaml")
    document = json.loads(grafana.service_dashboard(spec))
    supporting = {m.query for kpi in spec.kpis for m in kpi.supporting_metrics}
    for expr in grafana.panel_queries(grafana.service_dashboard(spec)):
        if expr not in supporting:
            assert re.match(r'^(\{__name__=~"kpi:|kpi:)', expr), expr
    assert document["uid"] == "kpi-shop"
    titles = [p["title"] for p in document["panels"]]
    assert "checkout_availability: ratio and target" in titles and "p99 checkout latency" in titles
    main = next(p for p in document["panels"] if p["title"] == "checkout_availability: ratio and target")
    steps = main["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == 0.999  # the target drawn as a threshold line
    assert main["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"


def test_group_by_labels_become_template_variables_and_filters():
    document = json.loads(grafana.service_dashboard(spec_from(GROUPED)))
    names = [v["name"] for v in document["templating"]["list"]]
    assert names == ["datasource", "region"]
    assert all('region=~"$region"' in e for e in grafana.panel_queries(json.dumps(document)) if e.startswith("kpi:"))


def test_overview_covers_every_service_through_a_variable():
    document = json.loads(grafana.overview_dashboard())
    assert [v["name"] for v in document["templating"]["list"]] == ["datasource", "service"]
    assert all('kpi_service=~"$service"' in e for e in grafana.panel_queries(grafana.overview_dashboard()))


def test_grafana_alert_rules_mirror_the_prometheus_alerts():
    spec = load_spec(ROOT / "rules" / "shop.yaml")
    provisioning = yaml.safe_load(grafana.grafana_alert_rules([spec], "prom-uid"))
    (group,) = provisioning["groups"]
    rules = group["rules"]
    titles = [r["title"] for r in rules]
    assert "KPIErrorBudgetBurn checkout_availability page" in titles
    assert "KPIBelowTarget checkout_conversion" in titles
    for rule in rules:
        assert rule["condition"] == "C" and rule["noDataState"] == "OK"
        assert [d["refId"] for d in rule["data"]] == ["A", "B", "C"]
        assert rule["data"][0]["datasourceUid"] == "prom-uid"
        assert "$value " not in json.dumps(rule["annotations"])  # Grafana templates use $values
    page = rules[titles.index("KPIErrorBudgetBurn checkout_availability page")]
    assert page["labels"]["kpi_severity"] == "page"
    assert page["annotations"]["runbook_url"] == "https://runbooks.example.com/shop/checkout"


def test_cli_writes_every_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "agent", "dashboards", "generate", str(ROOT / "rules"),
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "grafana-alert-rules.yml", "kpi-agent-health.json", "kpi-overview.json", "kpi-shop.json"]
