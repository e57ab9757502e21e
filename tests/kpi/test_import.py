"""`kpi-agent rules import --from sloth|openslo`: specs written like Sloth's and OpenSLO's own examples become
KPI specs that load, check, and page at the SRE Workbook's times; what cannot be translated is reported."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.kpi.loading import load_spec
from agent.kpi.render import render_prometheus
from tests.kpi.firing import WORKBOOK, first_firing, workbook_seconds

DATA = Path(__file__).parent / "data" / "import"


def import_(source: str, *files: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "rules", "import", "--from", source, *map(str, files),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)


def kpis(path: Path) -> dict[str, dict]:
    return {kpi["name"]: kpi for kpi in yaml.safe_load(path.read_text())["kpis"]}


def test_sloth_spec_keeps_names_objectives_alerts_labels_and_reports_what_it_cannot_translate(tmp_path):
    source = DATA / "sloth.yml"
    result = import_("sloth", source, out=tmp_path)
    assert result.returncode == 1  # two SLOs could not be translated
    errors = [line for line in result.stderr.splitlines() if ": warning: " not in line]
    assert errors == [
        f"{source}:7: slo_plugins: SLO plugins are Sloth code: not translated; the SLOs are imported without them",
        f"{source}:55: slos[2].sli.raw: not translated: a raw error-ratio query cannot be split into good and total "
        "events; write ratio.numerator and denominator by hand",
        f"{source}:63: slos[3].sli.plugin: not translated: SLI plugins are Sloth code; write ratio.numerator and "
        "denominator by hand",
    ]
    assert f"{source}:11: warning: slos[0].name: 'requests-availability' becomes the KPI 'requests_availability'" \
        in result.stderr
    written = tmp_path / "checkout-api.yaml"
    spec = yaml.safe_load(written.read_text())
    assert spec["service"] == "checkout-api" and spec["labels"] == {"owner": "payments", "tier": "1"}
    availability, latency = kpis(written)["requests_availability"], kpis(written)["requests_latency"]
    assert availability == {
        "name": "requests_availability",
        "description": "Checkout API answers without a server error.",
        "window": "30d",
        "target": "99.9%",
        "labels": {"category": "availability"},
        # a sum of rates of a selector becomes the selector: cheaper rules, series checks
        "ratio": {"bad": 'http_requests_total{job="checkout",code=~"(5..|429)"}',
                  "denominator": 'http_requests_total{job="checkout"}'},
        "alerting": {"alert_name": "CheckoutHighErrorRate", "labels": {"category": "availability"},
                     "annotations": {"summary": "Too many checkout errors"},
                     "page": {"labels": {"severity": "critical", "routing_key": "payments"}},
                     "ticket": {"labels": {"severity": "slack", "slack_channel": "#payments"}}},
    }
    # any other PromQL keeps its text, with our {{window}}
    assert latency["ratio"]["bad_query"].count("[{{window}}]") == 2
    assert latency["alerting"] == {"alert_name": "CheckoutSlow", "page": False,
                                   "ticket": {"for": "15m", "labels": {"severity": "slack"}}}
    load_spec(written)
    checked = subprocess.run([sys.executable, "-m", "agent", "rules", "check", str(tmp_path)], capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr


def test_sloth_kubernetes_object_translates_like_the_plain_spec(tmp_path):
    plain, kubernetes = tmp_path / "plain", tmp_path / "k8s"
    import_("sloth", DATA / "sloth.yml", out=plain)
    result = import_("sloth", DATA / "sloth-k8s.yml", out=kubernetes)
    assert result.returncode == 0, result.stderr
    assert kpis(kubernetes / "checkout-api.yaml")["requests_availability"] == \
        kpis(plain / "checkout-api.yaml")["requests_availability"]


def test_openslo_ratio_slos_translate_and_the_rest_is_reported(tmp_path):
    alpha, v1 = DATA / "openslo-v1alpha.yml", DATA / "openslo-v1.yml"
    result = import_("openslo", alpha, v1, out=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if ": warning: " not in line]
    assert errors == [
        f"{v1}:79: spec.indicator.spec.thresholdMetric: not translated: only ratio metrics (good or bad over total "
        "events) make a KPI ratio",
        f"{v1}:104: spec.indicator.spec.ratioMetric.good: not translated: a Datadog metric source, only Prometheus "
        "queries can be compiled to Prometheus rules",
        f"{v1}:109: spec.indicator.spec.ratioMetric.total: not translated: a Datadog metric source, only Prometheus "
        "queries can be compiled to Prometheus rules",
    ]
    assert (f"{v1}:64: warning: spec.budgetingMethod: Timeslices is translated as Occurrences: the ratio counts "
            "events, not time slices") in result.stderr
    assert f"{v1}:119: warning: kind: AlertPolicy objects are not translated" in result.stderr
    search, orders = kpis(tmp_path / "search.yaml"), kpis(tmp_path / "orders.yaml")
    assert search["search_availability"]["target"] == "99.9%" and search["search_availability"]["window"] == "30d"
    assert search["search_availability"]["ratio"] == {"numerator": 'search_requests_total{code!~"5.."}',
                                                      "denominator": "search_requests_total"}
    # one SLO, two objectives: two KPIs; bucket over count is the latency shorthand
    assert search["search_latency_fast"]["latency"] == {"histogram": "search_seconds", "le": 0.25}
    assert search["search_latency_not_too_slow"]["latency"] == {"histogram": "search_seconds", "le": 2}
    assert search["search_latency_fast"]["window"] == "28d"
    # v1: an SLI object referenced by name, metadata labels, a 4w window
    assert orders["orders"] == {
        "name": "orders", "description": "Orders placed are accepted", "objective": "Accepted",
        "window": "28d", "target": "99.5%",
        "ratio": {"numerator": 'orders_total{result="accepted"}', "denominator": "orders_total"},
        "labels": {"team": "orders"}}
    assert orders["orders_errors"]["ratio"] == {"bad": 'orders_total{result="error"}', "denominator": "orders_total"}
    assert set(orders) == {"orders", "orders_errors"}
    for written in (tmp_path / "search.yaml", tmp_path / "orders.yaml"):
        load_spec(written)


@pytest.mark.parametrize(("source", "file", "kpi", "series"), [
    ("sloth", "sloth.yml", "requests_availability", 'http_requests_total{{job="checkout",code="{code}"}}'),
    ("openslo", "openslo-v1alpha.yml", "search_availability", 'search_requests_total{{code="{code}"}}'),
])
@pytest.mark.slow
def test_imported_specs_page_at_the_workbook_times(promtool, tmp_path, source, file, kpi, series):
    import_(source, DATA / file, out=tmp_path / "spec")
    (written,) = (tmp_path / "spec").glob("*.yaml")
    rules = render_prometheus(load_spec(written), written.name)
    history = max(pair.long for pair in WORKBOOK["page"]) + 600
    for share in (0.02, 1.0):
        expected = workbook_seconds(WORKBOOK["page"], share, 0.001)
        assert expected is not None
        alert = f'ALERTS{{kpi="{kpi}",alertstate="firing",kpi_severity="page"}}'
        fired = first_firing(promtool, tmp_path / f"{share}", rules, series.format(code="200"),
                             series.format(code="500"), alert, share, history, expected + 600)
        assert fired is not None and 0 <= fired - expected <= 30, (share, fired, expected)
