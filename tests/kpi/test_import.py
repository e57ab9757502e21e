"""`kpi-agent rules import --from sloth|openslo`: specs written like Sloth's and OpenSLO's own examples become
KPI specs that load, check, and page at the SRE Workbook's times; what cannot be translated is reported."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agent.kpi.render import render_prometheus
from tests.kpi.firing import WORKBOOK, late_or_early, rates_and_alerts, workbook_seconds
from tests.kpi.helpers import load_spec

DATA = Path(__file__).parent / "data" / "import"


def import_(source: str, *files: Path, out: Path, window: str | None = None) -> subprocess.CompletedProcess:
    extra = ["--window", window] if window else []
    return subprocess.run([sys.executable, "-m", "agent", "rules", "import", "--from", source, *map(str, files),
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=120)


def kpis(path: Path) -> dict[str, dict]:
    return {kpi["name"]: kpi for kpi in yaml.safe_load(path.read_text())["kpis"]}


def test_sloth_spec_keeps_names_objectives_alerts_labels_and_reports_what_it_cannot_translate(tmp_path):
    source = DATA / "sloth.yml"
    result = import_("sloth", source, out=tmp_path)
    assert result.returncode == 1  # two SLOs could not be translated
    errors = [line for line in result.stderr.splitlines() if ": warning: " not in line]
    assert errors == [
        f"{source}:7: slo_plugins: SLO plugins are Sloth code: not translated (sloth.dev/contrib/alert_for/v1); the "
        "SLOs are imported without them",
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
    rules = rates_and_alerts(load_spec(written))
    history = max(pair.long for pair in WORKBOOK["page"]) + 600
    for share in (0.02, 1.0):
        expected = workbook_seconds(WORKBOOK["page"], share, 0.001)
        assert expected is not None
        alert = f'ALERTS{{kpi="{kpi}",alertstate="firing",kpi_severity="page"}}'
        assert late_or_early(promtool, tmp_path / f"{share}", rules, series.format(code="200"),
                             series.format(code="500"), alert, share, expected, history) == [], share


def test_openslo_objects_as_one_list_and_counter_queries(tmp_path):
    source = DATA / "openslo-list.yml"
    result = import_("openslo", source, out=tmp_path)
    assert result.returncode == 1  # the SLO whose sums are not declared counters
    errors = [line for line in result.stderr.splitlines() if ": warning: " not in line]
    assert errors == [
        f"{source}:48: spec.indicator.spec.ratioMetric: not translated: 'sum(refunds_total{{status=\"ok\"}})' is "
        "neither a sum of rates of a selector nor a query with a {{.window}} range: its range cannot follow the "
        "alert windows (with ratioMetric.counter: true, a sum of counters is read as one)"]
    # counter: true: a sum of counter values is the counter, with its grouping
    assert kpis(tmp_path / "payments.yaml")["payments"] == {
        "name": "payments", "window": "30d", "target": "99.9%",
        "ratio": {"numerator": 'payments_total{status="ok"}', "denominator": "payments_total"},
        "group_by": ["region"]}
    load_spec(tmp_path / "payments.yaml")


def test_sloth_28d_windows_are_sloths(tmp_path):
    """Sloth's 28d catalog keeps the 30d windows and scales the factors (2% of 28d in 1h: 13.44); ours would
    scale the windows instead, so the import states Sloth's."""
    result = import_("sloth", DATA / "sloth-k8s.yml", out=tmp_path, window="28d")
    assert result.returncode == 0, result.stderr
    alerting = kpis(tmp_path / "checkout-api.yaml")["requests_availability"]["alerting"]
    assert alerting["page"]["windows"] == [{"long": "1h", "short": "5m", "factor": 13.44},
                                           {"long": "6h", "short": "30m", "factor": 5.6}]
    assert alerting["ticket"]["windows"] == [{"long": "1d", "short": "2h", "factor": 2.8},
                                             {"long": "3d", "short": "6h", "factor": 0.933333333}]
    assert alerting["page"]["labels"] == {"severity": "critical", "routing_key": "payments"}
    rules = render_prometheus(load_spec(tmp_path / "checkout-api.yaml"), "x")
    assert "kpi:burn_rate:rate1h" in rules and "> 13.44 and" in rules
    # 30d: Sloth's windows are ours, nothing to state
    default = import_("sloth", DATA / "sloth-k8s.yml", out=tmp_path / "30d")
    assert "windows" not in (tmp_path / "30d" / "checkout-api.yaml").read_text(), default.stderr


def test_sloth_alert_windows_files_give_other_periods_and_none_is_a_warning(tmp_path):
    result = import_("sloth", DATA / "sloth-k8s.yml", DATA / "sloth-windows-7d.yml", out=tmp_path, window="7d")
    assert result.returncode == 0, result.stderr
    alerting = kpis(tmp_path / "checkout-api.yaml")["requests_availability"]["alerting"]
    assert alerting["page"]["windows"] == [{"long": "1h", "short": "5m", "factor": 13.44},
                                           {"long": "6h", "short": "30m", "factor": 3.5}]
    assert alerting["ticket"]["windows"] == [{"long": "1d", "short": "2h", "factor": 1.4},
                                             {"long": "3d", "short": "6h", "factor": 0.98}]
    load_spec(tmp_path / "checkout-api.yaml")
    alone = import_("sloth", DATA / "sloth-k8s.yml", out=tmp_path / "alone", window="7d")
    assert alone.returncode == 0
    assert ("--window: warning: Sloth has no alert windows for a 7d period (its catalog holds 30d and 28d; an "
            "AlertWindows file among the files adds others): kpi-agent's tiers scaled to it apply") in alone.stderr


def test_denominator_corrected_rules_become_min_bad_events_and_the_owner_stays_on_kpi_info(tmp_path):
    source = DATA / "sloth-corrected.yml"
    result = import_("sloth", source, out=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (f"{source}:12: warning: spec.sloPlugins: sloth.dev/contrib/denominator_corrected_rules/v1 (failures "
            "weighed by traffic, so quiet hours do not page) becomes min_bad_events: 10: a window pair fires only "
            "once that many events failed in its long window; adjust it to your traffic") in result.stderr
    written = tmp_path / "svc01.yaml"
    assert kpis(written)["slo1"]["alerting"]["min_bad_events"] == 10
    spec = load_spec(written)
    info = next(rule for group in yaml.safe_load(render_prometheus(spec, "x"))["groups"] for rule in group["rules"]
                if rule.get("record") == "kpi_info")
    assert info["labels"]["owner"] == "myteam"  # the service's label: the KPI names no owner of its own


@pytest.mark.parametrize(("source", "text", "message"), [
    ("sloth", "version: prometheus/v1\nservice: s\nslos:\n  - name: a\n    objective: .nan\n",
     "5: slos[0]: needs a name and an objective between 0 and 100 (percent)"),
    ("openslo", "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: a}\nspec:\n  service: s\n"
                "  objectives:\n    - target: .nan\n", "7: spec.objectives[0].target: needs a target between 0 and 1"),
])
def test_a_nan_objective_is_an_error_not_a_traceback(tmp_path, source, text, message):
    spec = tmp_path / "nan.yml"
    spec.write_text(text)
    result = import_(source, spec, out=tmp_path / "out")
    assert result.returncode == 1
    assert f"{spec}:{message}" in result.stderr and "Traceback" not in result.stderr


def test_import_limits_alias_bombs_and_huge_values(tmp_path):
    """A 400-byte file of nested aliases (a billion laughs) and a 1 MB description: refused at once, with
    their line (they ran for minutes and gigabytes before)."""
    laughs = tmp_path / "laughs.yml"
    lines = ["version: prometheus/v1", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    laughs.write_text("---\n" + "\n".join(lines) + "\nservice: x\n")
    huge = tmp_path / "huge.yml"
    huge.write_text("version: prometheus/v1\nservice: s\nslos:\n  - name: a\n    objective: 99.9\n"
                    f"    description: {'x' * 1_000_000}\n")
    started = time.monotonic()
    result = import_("sloth", laughs, huge, out=tmp_path / "out")
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert f"{laughs}:2: invalid YAML: holds more than 200000 values once its aliases are expanded" in result.stderr
    assert f"{huge}:6: slos[0].description: 1000000 characters, more than 65536: the document is not imported" \
        in result.stderr


def test_a_nan_target_in_a_spec_is_refused(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("service: s\nkpis:\n  - name: revenue\n    window: 30d\n    target: .nan\n    value: sum(x)\n")
    result = subprocess.run([sys.executable, "-m", "agent", "rules", "check", str(spec)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert f"{spec}:5: kpis[0].target: nan is not a finite number" in result.stderr
