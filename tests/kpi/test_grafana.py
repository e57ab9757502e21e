"""Dashboards and Grafana alert rules: deterministic, generic over specs, wired to the kpi:* contract."""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from agent.config.yaml import load_text
from agent.kpi import grafana
from agent.kpi.spec.document import parse_spec
from tests.kpi.helpers import load_spec, panel_queries

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
    spec, report = parse_spec(load_text(text, "s.yaml"), "s.yaml")
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
    for expr in panel_queries(grafana.service_dashboard(spec)):
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
    assert all('region=~"$region"' in e for e in panel_queries(json.dumps(document)) if e.startswith("kpi:"))


def test_overview_covers_every_service_through_a_variable():
    document = json.loads(grafana.overview_dashboard())
    assert [v["name"] for v in document["templating"]["list"]] == ["datasource", "service"]
    assert all('kpi_service=~"$service"' in e for e in panel_queries(grafana.overview_dashboard()))


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


def _boards() -> dict[str, dict]:
    spec = load_spec(ROOT / "rules" / "shop.yaml")
    return {"overview": json.loads(grafana.overview_dashboard()), "agent": json.loads(grafana.agent_dashboard()),
            "shop": json.loads(grafana.service_dashboard(spec)),
            "grouped": json.loads(grafana.service_dashboard(spec_from(GROUPED)))}


def _nulls(node, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [found for key, value in node.items() for found in
                ([f"{path}.{key}"] if value is None and key != "value" else _nulls(value, f"{path}.{key}"))]
    if isinstance(node, list):
        return [found for index, item in enumerate(node) for found in _nulls(item, f"{path}[{index}]")]
    return []


def test_every_panel_has_a_unique_id_a_unit_and_no_null_field():
    for name, board in _boards().items():
        panels = board["panels"]
        ids = [p.get("id") for p in panels]
        assert all(isinstance(i, int) and i > 0 for i in ids) and len(set(ids)) == len(ids), (name, ids)
        for panel in panels:
            if panel["type"] != "row":
                assert panel["fieldConfig"]["defaults"].get("unit"), (name, panel["title"])
                assert isinstance(panel["options"], dict), (name, panel["title"])
        # a threshold's base step has value null by Grafana's schema (it means minus infinity); nothing else
        assert _nulls(board) == [], (name, _nulls(board))


def test_panels_show_seconds_percent_bytes_and_per_second():
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in _boards()["agent"]["panels"]}
    assert units["Probe latency p99"] == "s" and units["Log lag"] == "bytes"
    assert units["Probe success"] == "percentunit"
    assert units["Log lines per second"] == units["Probe failures by result"] == "cps"
    shop = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in _boards()["shop"]["panels"] if p["type"] != "row"}
    assert shop["checkout_availability: ratio and target"] == "percentunit"
    assert shop["checkout_availability: error budget remaining"] == "percentunit"
    assert shop["checkout_availability: burn rates"] == "suffix:x"
    overview = {p["title"]: p for p in _boards()["overview"]["panels"]}
    assert overview["Meets target"]["fieldConfig"]["defaults"]["mappings"][0]["options"]["0"]["text"] == "missed"
    columns = {o["matcher"]["options"]: o["properties"][0]["value"]
               for o in overview["KPIs"]["fieldConfig"]["overrides"]}
    assert columns["budget remaining"] == "percentunit" and columns["fastest burn"] == "suffix:x"


def test_supporting_metrics_take_their_unit_from_the_spec():
    shop = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in _boards()["shop"]["panels"]
            if p["type"] != "row"}
    assert shop["p99 checkout latency"] == "s"
    assert shop["checkout requests per second by status"] == "cps"
    bytes_spec = GROUPED.replace('query: "sum(rate(requests_total[5m]))"}',
                                 'query: "sum(rate(response_bytes_total[5m]))", unit: bytes_per_second}')
    panels = {p["title"]: p for p in json.loads(grafana.service_dashboard(spec_from(bytes_spec)))["panels"]}
    assert panels["Requests"]["fieldConfig"]["defaults"]["unit"] == "binBps"
    grouped = {p["title"]: p for p in _boards()["grouped"]["panels"]}
    assert grouped["Requests"]["fieldConfig"]["defaults"]["unit"] == "short"  # no unit in the spec


def _steps(panel: dict) -> list[tuple[float | None, str]]:
    return [(s["value"], s["color"]) for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_burn_rate_panels_draw_the_tiers_factors_as_threshold_lines():
    shop = {p["title"]: p for p in _boards()["shop"]["panels"]}
    burns = shop["checkout_availability: burn rates"]
    assert _steps(burns) == [(None, "green"), (1.0, "orange"), (3.0, "orange"), (6.0, "red"), (14.4, "red")]
    assert burns["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"
    # a threshold-alerted KPI has no burn rate series, so no burn panel; its budget panel takes the row
    assert "checkout_conversion: burn rates" not in shop
    assert shop["checkout_conversion: error budget remaining"]["gridPos"]["w"] == 12
    page_only = GROUPED + "    alerting: {ticket: false}\n"
    panels = {p["title"]: p for p in json.loads(grafana.service_dashboard(spec_from(page_only)))["panels"]}
    assert _steps(panels["error_rate: burn rates"]) == [(None, "green"), (6.0, "red"), (14.4, "red")]
    overview = {p["title"]: p for p in _boards()["overview"]["panels"]}
    assert [v for v, _ in _steps(overview["Fastest burn rate"])] == [None, 1.0, 3.0, 6.0, 14.4]
