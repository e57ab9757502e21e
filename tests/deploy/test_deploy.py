"""Every file under deploy/ is checked by the tool that will read it, or for what that tool needs."""

import configparser
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from agent.config.agent import load_config, parse_config
from agent.config.yaml import load_text
from agent.kpi.compiler import compile_groups
from agent.kpi.grafana import agent_dashboard, grafana_alert_rules, overview_dashboard, service_dashboard
from agent.kpi.render import render_operator, render_prometheus
from agent.kpi.spec.document import parse_spec
from tests.kpi.helpers import load_spec
from tests.tools import require_tool

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"


def test_example_agent_config_is_valid():
    config, report = load_config(DEPLOY / "agent.yaml")
    assert report.errors == [] and config.of_kind("http") and config.of_kind("logs")


def test_prometheus_config_and_its_rules(promtool):
    result = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout and "SUCCESS" in result.stdout


def test_committed_rule_files_match_the_specs():
    """deploy/ ships generated files; they must be what `rules generate` makes from rules/ today."""
    for spec_file in sorted((ROOT / "rules").glob("*.yaml")):
        spec = load_spec(spec_file)
        source = f"rules/{spec_file.name}"
        assert (DEPLOY / "prometheus" / "rules" / f"{spec.service}.rules.yml").read_text() == \
            render_prometheus(spec, source), "run: kpi-agent rules generate rules --out deploy/prometheus/rules"
        assert (DEPLOY / "kubernetes" / f"prometheusrule-{spec.service}.yaml").read_text() == \
            render_operator(spec, source, "monitoring"), \
            "run: kpi-agent rules generate rules --out DIR --format prometheus-operator --namespace monitoring"


def test_alertmanager_config_routes_page_and_ticket_and_inhibits():
    amtool = require_tool("amtool")
    config = str(DEPLOY / "alertmanager" / "alertmanager.yml")
    checked = subprocess.run([amtool, "check-config", config], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for labels, receiver in ((["kpi_severity=page", "kpi=a"], "page"), (["kpi_severity=ticket", "kpi=a"], "ticket"),
                             (["alertname=KPIBelowTarget", "kpi=a"], "ticket"), (["alertname=Other"], "default")):
        assert _route(amtool, config, labels) == receiver, labels
    (inhibit,) = yaml.safe_load(Path(config).read_text())["inhibit_rules"]
    assert inhibit["source_matchers"] == ['kpi_severity="page"']
    assert inhibit["target_matchers"] == ['kpi_severity="ticket"']
    assert {"kpi", "kpi_service"} <= set(inhibit["equal"])


def _route(amtool: str, config: str, labels: list[str]) -> str:
    routed = subprocess.run([amtool, "config", "routes", "test", "--config.file", config, *labels],
                            capture_output=True, text=True)
    assert routed.returncode == 0, routed.stderr
    return routed.stdout.strip()


# Every kind of alert the compiler emits: burn-rate tiers, threshold alerts either way (with and without a
# kpi_severity), renamed alerts, and the blind-KPI alerts (absent metrics, no traffic, a numerator that never
# matched).
EVERY_ALERT = """service: every-alert
kpis:
  - name: burn
    window: 30d
    target: 99.9%
    ratio: {numerator: 'r_total{ok="1"}', denominator: r_total}
  - name: renamed_burn
    window: 30d
    target: 99.9%
    ratio: {numerator: 'r_total{ok="1"}', denominator: r_total}
    alerting: {alert_name: CheckoutBurn, no_data: {alert_name: CheckoutBlind}}
  - name: below
    window: 7d
    target: 3%
    ratio: {numerator: a_total, denominator: b_total}
    alerting: {strategy: threshold}
  - name: above
    window: 30d
    target: 100
    higher_is_better: false
    value: sum(q)
  - name: renamed_threshold
    window: 30d
    target: 100
    value: sum(q)
    alerting: {alert_name: RevenueLow}
  - name: paging_threshold
    window: 30d
    target: 100
    value: sum(q)
    alerting: {alert_name: RevenueCollapsed, severity: page}
"""


def test_every_alert_the_compiler_emits_reaches_a_receiver_with_an_integration():
    amtool = require_tool("amtool")
    config = str(DEPLOY / "alertmanager" / "alertmanager.yml")
    receivers = {r["name"]: r for r in yaml.safe_load(Path(config).read_text())["receivers"]}
    integrated = {name for name, r in receivers.items() if any(k.endswith("_configs") and v for k, v in r.items())}
    spec, report = parse_spec(load_text(EVERY_ALERT, "every.yaml"), "every.yaml")
    assert report.errors == [] and spec is not None
    alerts = [r for g in compile_groups(spec) for r in g["rules"] if "alert" in r]
    names = {a["alert"] for a in alerts}
    assert {"KPIErrorBudgetBurn", "KPIBelowTarget", "KPIAboveTarget", "KPINoData", "KPINoTraffic",
            "KPINumeratorAbsent", "CheckoutBurn", "CheckoutBlind", "RevenueLow", "RevenueCollapsed"} <= names
    for alert in alerts:
        labels = [f"alertname={alert['alert']}", *(f"{k}={v}" for k, v in alert["labels"].items())]
        receiver = _route(amtool, config, labels)
        assert receiver in integrated, (alert["alert"], alert["labels"], receiver)
        severity = alert["labels"].get("kpi_severity")
        if severity:
            assert receiver == severity, (alert["alert"], receiver)


def test_the_shipped_spec_selects_the_job_prometheus_scrapes_the_agent_as():
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [c["job_name"] for c in prometheus["scrape_configs"]]
    for spec_file in sorted((ROOT / "rules").glob("*.yaml")):
        for kpi in load_spec(spec_file).kpis:
            for field, _, text in kpi.indicator_expressions:
                assert f'job="{job}"' in text, (spec_file.name, field, text)


def _kubernetes_objects() -> list[dict]:
    objects = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


def test_kubernetes_manifests_fit_together():
    objects = _kubernetes_objects()
    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    kustomization = by_kind["Kustomization"][0]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    config_maps = {cm["metadata"]["name"]: cm for cm in by_kind["ConfigMap"]}
    workloads = by_kind["StatefulSet"] + by_kind["DaemonSet"]
    assert {w["kind"] for w in workloads} == {"StatefulSet", "DaemonSet"}
    pod_labels = []
    for workload in workloads:
        template = workload["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        pod_labels.append(labels)
        container = template["spec"]["containers"][0]
        assert "metrics" in {p["name"] for p in container["ports"]}
        for volume in template["spec"]["volumes"]:
            data = config_maps[volume["configMap"]["name"]]["data"] if "configMap" in volume else {}
            if "agent.yaml" in data:
                _, report = parse_config(load_text(data["agent.yaml"], volume["configMap"]["name"]), "cm")
                assert report.errors == []
    services = by_kind["Service"]
    for service in services:
        assert any(service["spec"]["selector"].items() <= labels.items() for labels in pod_labels)
    (monitor,) = by_kind["ServiceMonitor"]
    selected = [s for s in services if monitor["spec"]["selector"]["matchLabels"].items()
                <= s["metadata"]["labels"].items()]
    assert len(selected) == 2
    for endpoint in monitor["spec"]["endpoints"]:
        assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)
    # prometheus-operator's job label: the Service's jobLabel label, else the Service's name; the specs select
    # the job Prometheus gives the agent (deploy/prometheus), so in Kubernetes too
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [c["job_name"] for c in prometheus["scrape_configs"]]
    job_label = monitor["spec"].get("jobLabel")
    assert {s["metadata"]["labels"].get(job_label, s["metadata"]["name"]) for s in selected} == {job}
    (rule,) = by_kind["PrometheusRule"]
    assert rule["spec"]["groups"] and rule["metadata"]["namespace"] == kustomization["namespace"]
    daemonset = by_kind["DaemonSet"][0]["spec"]["template"]["spec"]
    mounts = {m["mountPath"] for m in daemonset["containers"][0]["volumeMounts"]}
    logs_config = yaml.safe_load(config_maps["kpi-agent-logs"]["data"]["agent.yaml"])
    assert any(logs_config["positions_file"].startswith(m) for m in mounts)  # positions survive restarts


def test_the_http_statefulset_runs_one_shard_per_pod_over_its_discovered_targets(tmp_path):
    objects = _kubernetes_objects()
    (statefulset,) = [o for o in objects if o["kind"] == "StatefulSet"]
    spec = statefulset["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    args = container["args"]
    assert f"--shard.count={spec['replicas']}" in args and "--shard.index=$(SHARD_INDEX)" in args
    (index,) = [env for env in container["env"] if env["name"] == "SHARD_INDEX"]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None"  # headless: Prometheus scrapes every shard
    config_maps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    volumes = {v["name"]: v["configMap"]["name"] for v in spec["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    # the agent reads its config and its target files where the pod mounts them: check them there
    for path, name in mounts.items():
        for file, text in config_maps[name].items():
            (tmp_path / path.strip("/") / file).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path.strip("/") / file).write_text(
                text.replace("/etc/kpi-agent-targets/", f"{tmp_path}/etc/kpi-agent-targets/"))
    result = subprocess.run([sys.executable, "-m", "agent", "check", "--config.file",
                             str(tmp_path / "etc/kpi-agent/agent.yaml")], capture_output=True, text=True)
    assert result.returncode == 0 and "3 discovered targets" in result.stdout, result.stdout + result.stderr


def test_every_metric_the_shipped_specs_read_comes_from_the_kubernetes_agents(tmp_path):
    """In Kubernetes the HTTP shards and the log DaemonSet run different configs: between them they produce
    every series the specs read (with the labels they select, e.g. path on http_requests_total)."""
    config_maps = {o["metadata"]["name"]: o["data"] for o in _kubernetes_objects() if o["kind"] == "ConfigMap"}
    configs = []
    for name in ("kpi-agent-http", "kpi-agent-logs"):
        configs += ["--config.file", str(tmp_path / f"{name}.yaml")]
        (tmp_path / f"{name}.yaml").write_text(config_maps[name]["agent.yaml"])
    check = [sys.executable, "-m", "agent", "rules", "check", str(ROOT / "rules"), "--strict", *configs]
    result = subprocess.run(check, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    logs = yaml.safe_load(config_maps["kpi-agent-logs"]["agent.yaml"])["logs"]
    labels = {m["name"]: set(m.get("labels", [])) for source in logs for m in source["metrics"]}
    assert {"method", "path", "status"} <= labels["http_requests_total"]
    (alone,) = [c for c in configs if c.endswith("logs.yaml")]
    without_http = subprocess.run([*check[:7], "--config.file", alone], capture_output=True, text=True)
    assert without_http.returncode == 1 and "probe_success is not produced" in without_http.stderr


def test_committed_dashboards_and_grafana_alert_rules_match_the_specs():
    # as `kpi-agent dashboards generate rules --out DIR` names them, run from the repository
    specs = [replace(load_spec(p), file=f"rules/{p.name}") for p in sorted((ROOT / "rules").glob("*.yaml"))]
    boards = DEPLOY / "grafana" / "dashboards"
    assert (boards / "kpi-overview.json").read_text() == overview_dashboard()
    assert (boards / "kpi-agent-health.json").read_text() == agent_dashboard()
    for spec in specs:
        assert (boards / f"kpi-{spec.service}.json").read_text() == service_dashboard(spec)
    assert (DEPLOY / "grafana" / "provisioning" / "alerting" / "kpi-alert-rules.yml").read_text() == \
        grafana_alert_rules(specs), "run: kpi-agent dashboards generate rules --out DIR"


def test_grafana_provisioning_matches_the_generated_objects():
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus" and datasource["uid"] == "prometheus"
    providers = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "kpi.yml").read_text())
    assert providers["providers"][0]["type"] == "file"
    board = service_dashboard(load_spec(ROOT / "rules" / "shop.yaml"))
    assert '"uid": "${datasource}"' in board


def test_systemd_unit_is_sandboxed(tmp_path):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(DEPLOY / "systemd" / "kpi-agent.service")
    service = unit["Service"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("DynamicUser", "yes"),
                       ("StateDirectory", "kpi-agent"), ("ReadOnlyPaths", "/var/log"),
                       ("Type", "notify")):  # a reload right after start waits until the agent is ready
        assert service[key] == value
    assert "--config.file /etc/kpi-agent/agent.yaml" in service["ExecStart"]
    config, _ = load_config(DEPLOY / "agent.yaml")
    assert config.positions_file.startswith("/var/lib/kpi-agent/")  # inside StateDirectory
    if shutil.which("systemd-analyze"):
        # verify checks that ExecStart exists: point it at this checkout's installed command
        installed = Path(sys.executable).parent / "kpi-agent"
        unit_copy = tmp_path / "kpi-agent.service"
        unit_copy.write_text((DEPLOY / "systemd" / "kpi-agent.service").read_text()
                             .replace("/opt/kpi-agent/.venv/bin/kpi-agent", str(installed)))
        verified = subprocess.run(["systemd-analyze", "verify", str(unit_copy)], capture_output=True, text=True)
        assert verified.returncode == 0, verified.stderr
    else:
        pytest.skip("systemd-analyze not installed: the unit's keys were checked, not systemd's own parse")
