"""Grafana dashboards and Grafana-managed alert rules for KPI specs, built with grafana-foundation-sdk.

Dashboards read only the stable ``kpi:*`` series (and the agent's own metrics), so they work for every spec
and every ``group_by``. Output is deterministic: uids derive from service names, JSON keys are sorted.
"""

from __future__ import annotations

import json
import re
from typing import Any

from grafana_foundation_sdk.builders import alerting, dashboard, expr, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
from grafana_foundation_sdk.builders.dashboard import DatasourceVariable, QueryVariable
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.alerting import RelativeTimeRange
from grafana_foundation_sdk.models.common import BigValueColorMode, GraphTresholdsStyleMode
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    GridPos,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from agent.kpi.compiler import compile_groups, to_yaml
from agent.kpi.spec import Kpi, ServiceSpec
from agent.yamlsrc import format_duration

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
OVERVIEW_UID = "kpi-overview"
AGENT_UID = "kpi-agent-health"
WIDTH = 24


def _uid(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "-", text)[:40]


def _query(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant().format(PromQueryFormat.TABLE)
    return query


def _thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=v, color=c) for v, c in steps])


def _datasource_variable() -> DatasourceVariable:
    return DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def _label_variable(name: str, query: str, label: str | None = None) -> QueryVariable:
    return (QueryVariable(name).label(label or name).datasource(DATASOURCE)
            .query(f"label_values({query}, {name})").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True).include_all(True).all_value(".*"))


def _encode(board: dashboard.Dashboard) -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(board.build()) + "\n"


def overview_dashboard() -> str:
    """One row per KPI of every service: period value, target, whether it is met, budget left, fastest burn."""
    service = 'kpi_service=~"$service"'
    fastest = f'max by (kpi, kpi_service) ({{__name__=~"kpi:burn_rate:rate.+", {service}}})'
    board = (dashboard.Dashboard("KPI overview").uid(OVERVIEW_UID).tags(["kpi", "kpi-agent"])
             .time("now-7d", "now").refresh("1m")
             .with_variable(_datasource_variable())
             .with_variable(_label_variable("kpi_service", "kpi_info", "service").name("service")))
    board = board.with_panel(
        stat.Panel().title("Meets target").description("1 = the KPI meets its target over its window")
        .datasource(DATASOURCE).grid_pos(GridPos(h=6, w=8, x=0, y=0))
        .with_target(_query(f"kpi:meets_target{{{service}}}", "{{kpi_service}} {{kpi}}"))
        .thresholds(_thresholds((None, "red"), (1, "green"))).color_mode(BigValueColorMode.BACKGROUND))
    board = board.with_panel(
        stat.Panel().title("Error budget remaining").datasource(DATASOURCE).grid_pos(GridPos(h=6, w=8, x=8, y=0))
        .with_target(_query(f"kpi:error_budget_remaining:ratio{{{service}}}", "{{kpi_service}} {{kpi}}"))
        .unit("percentunit").thresholds(_thresholds((None, "red"), (0, "orange"), (0.25, "green"))))
    board = board.with_panel(
        stat.Panel().title("Fastest burn rate").description("Highest burn rate over the alert windows")
        .datasource(DATASOURCE).grid_pos(GridPos(h=6, w=8, x=16, y=0))
        .with_target(_query(fastest, "{{kpi_service}} {{kpi}}"))
        .thresholds(_thresholds((None, "green"), (1, "orange"), (6, "red"))))
    board = board.with_panel(
        table.Panel().title("KPIs").datasource(DATASOURCE).grid_pos(GridPos(h=12, w=WIDTH, x=0, y=6))
        .with_target(_query(f"kpi:ratio:period{{{service}}} or kpi:value:period{{{service}}}", ref="period",
                            instant=True))
        .with_target(_query(f"kpi:target{{{service}}}", ref="target", instant=True))
        .with_target(_query(f"kpi:error_budget_remaining:ratio{{{service}}}", ref="budget", instant=True))
        .with_target(_query(fastest, ref="burn", instant=True))
        .with_target(_query(f"kpi_info{{{service}}}", ref="info", instant=True))
        .with_transformation(_transformation("merge", {}))
        .with_transformation(_transformation("organize", {
            "excludeByName": {"Time": True, "__name__": True, "Value #info": True, "higher_is_better": True},
            "renameByName": {"Value #period": "period value", "Value #target": "target",
                             "Value #budget": "budget remaining", "Value #burn": "fastest burn",
                             "kpi_service": "service"}})))
    return _encode(board)


def _transformation(kind: str, options: dict[str, Any]) -> DataTransformerConfig:
    return DataTransformerConfig(id_val=kind, options=options)


def _group_filter(kpi: Kpi) -> str:
    return "".join(f', {label}=~"${label}"' for label in kpi.group_by)


def service_dashboard(spec: ServiceSpec) -> str:
    """Per KPI of one service: the ratio over time against its target, budget left, burn rates, and the
    spec's supporting metrics."""
    board = (dashboard.Dashboard(f"KPIs: {spec.service}").uid(_uid(f"kpi-{spec.service}"))
             .tags(["kpi", "kpi-agent", spec.service]).time("now-24h", "now").refresh("1m")
             .with_variable(_datasource_variable()))
    group_labels = sorted({label for kpi in spec.kpis for label in kpi.group_by})
    for label in group_labels:
        board = board.with_variable(_label_variable(label, f'kpi:ratio:rate5m{{kpi_service="{spec.service}"}}'))
    y = 0
    for kpi in sorted(spec.kpis, key=lambda k: k.name):
        selector = f'kpi="{kpi.name}", kpi_service="{spec.service}"{_group_filter(kpi)}'
        legend = "".join(f" {{{{{label}}}}}" for label in kpi.group_by).strip() or kpi.name
        board = board.with_row(dashboard.Row(f"{kpi.name}: {kpi.description or kpi.objective}".rstrip(": ")))
        y += 1
        if kpi.is_ratio:
            main = (timeseries.Panel().title(f"{kpi.name}: ratio and target")
                    .description(f"{kpi.objective} (owner: {kpi.owner or 'unset'})").datasource(DATASOURCE)
                    .with_target(_query(f"kpi:ratio:rate5m{{{selector}}}", f"5m {legend}", "A"))
                    .with_target(_query(f"kpi:ratio:period{{{selector}}}", f"{format_duration(kpi.window)} {legend}",
                                        "B"))
                    .unit("percentunit"))
        else:
            main = (timeseries.Panel().title(f"{kpi.name}: value and target").datasource(DATASOURCE)
                    .description(f"{kpi.objective} (owner: {kpi.owner or 'unset'})")
                    .with_target(_query(f"kpi:value{{{selector}}}", legend, "A")))
        main = (main.thresholds(_thresholds((None, "red" if kpi.higher_is_better else "green"),
                                            (kpi.target, "green" if kpi.higher_is_better else "red")))
                .thresholds_style(_threshold_line()).grid_pos(GridPos(h=8, w=12, x=0, y=y)))
        board = board.with_panel(main)
        if kpi.is_ratio:
            board = board.with_panel(
                timeseries.Panel().title(f"{kpi.name}: error budget remaining").datasource(DATASOURCE)
                .with_target(_query(f"kpi:error_budget_remaining:ratio{{{selector}}}", legend))
                .unit("percentunit").grid_pos(GridPos(h=8, w=6, x=12, y=y)))
            board = board.with_panel(
                timeseries.Panel().title(f"{kpi.name}: burn rates").datasource(DATASOURCE)
                .with_target(_query(f'{{__name__=~"kpi:burn_rate:rate.+", {selector}}}', "{{__name__}} " + legend))
                .grid_pos(GridPos(h=8, w=6, x=18, y=y)))
        y += 8
        for index, metric in enumerate(kpi.supporting_metrics):
            board = board.with_panel(
                timeseries.Panel().title(metric.title).datasource(DATASOURCE)
                .with_target(_query(metric.query))
                .grid_pos(GridPos(h=6, w=8, x=(index % 3) * 8, y=y + (index // 3) * 6)))
        y += 6 * ((len(kpi.supporting_metrics) + 2) // 3)
    return _encode(board)


def _threshold_line() -> GraphThresholdsStyleConfig:
    return GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.LINE)


def agent_dashboard() -> str:
    """The agent itself: probes, log reading, dropped series, reloads."""
    board = (dashboard.Dashboard("kpi-agent health").uid(AGENT_UID).tags(["kpi-agent"])
             .time("now-6h", "now").refresh("30s").with_variable(_datasource_variable()))
    panels = [
        ("Probe success", "probe_success", "{{target}}", None),
        ("Probe latency p99",
         "histogram_quantile(0.99, sum by (le, target) (rate(probe_latency_seconds_bucket[5m])))", "{{target}}", "s"),
        ("Probe failures by result", 'sum by (target, result) (rate(probes_total{result!="success"}[5m])) or '
                                     "sum by (target) (rate(probes_total[5m])) * 0", "{{target}} {{result}}", None),
        ("Log lines per second", "sum by (source) (rate(kpi_agent_log_lines_total[5m]))", "{{source}}", None),
        ("Unmatched and malformed lines per second",
         "sum by (source) (rate(kpi_agent_log_lines_unmatched_total[5m]) + "
         "rate(kpi_agent_log_lines_malformed_total[5m]))", "{{source}}", None),
        ("Log lag", "kpi_agent_log_lag_bytes", "{{source}}", "bytes"),
        ("Dropped series per second", "sum by (metric) (rate(kpi_agent_series_dropped_total[5m])) or vector(0)",
         "{{metric}}", None),
        ("Config reload successful", "kpi_agent_config_last_reload_successful", "{{instance}}", None),
    ]
    for index, (title, promql, legend, unit) in enumerate(panels):
        panel = (timeseries.Panel().title(title).datasource(DATASOURCE).with_target(_query(promql, legend))
                 .grid_pos(GridPos(h=8, w=12, x=(index % 2) * 12, y=(index // 2) * 8)))
        if unit:
            panel = panel.unit(unit)
        board = board.with_panel(panel)
    return _encode(board)


def panel_queries(dashboard_json: str) -> list[str]:
    """Every PromQL expression of a dashboard's panels (used to prove each returns data)."""
    document = json.loads(dashboard_json)
    return [target["expr"] for panel in document.get("panels", []) for target in panel.get("targets", [])
            if target.get("expr")]


def grafana_alert_rules(specs: list[ServiceSpec], datasource_uid: str = "prometheus",
                        folder_uid: str = "kpi") -> str:
    """The KPI alerts as Grafana-managed alert rules (a provisioning file). They read the kpi:* recording
    rules, so Prometheus must still load the generated rules; only the alerting moves to Grafana."""
    groups = []
    for spec in sorted(specs, key=lambda s: s.service):
        group = alerting.RuleGroup(f"kpi-{spec.service}").folder_uid(folder_uid).interval(60)
        for index, rule in enumerate(r for g in compile_groups(spec) for r in g["rules"] if "alert" in r):
            labels = rule["labels"]
            title = f"{rule['alert']} {labels['kpi']} {labels.get('kpi_severity', '')}".strip()
            grafana_rule = (
                alerting.Rule(title).uid(_uid(f"{spec.service}-{labels['kpi']}-{index}"))
                .condition("C").for_val(rule.get("for", "0s")).labels(labels)
                .annotations({k: _grafana_template(v) for k, v in rule["annotations"].items()})
                .no_data_state("OK").exec_err_state("Error").rule_group(f"kpi-{spec.service}")
                .with_query(alerting.Query("A").datasource_uid(datasource_uid)
                            .relative_time_range(RelativeTimeRange(from_val=600, to=0))
                            .model(prometheus.Dataquery().expr(rule["expr"]).instant().ref_id("A")))
                # A returns series only while the alert condition holds: last value, then "> 0" fires
                .with_query(alerting.Query("B").datasource_uid("__expr__").model(
                    expr.TypeReduce().ref_id("B").expression("A").reducer("last")
                    .settings(expr.ExprTypeReduceSettings().mode("dropNN"))))
                .with_query(alerting.Query("C").datasource_uid("__expr__").model(
                    expr.TypeThreshold().ref_id("C").expression("B").conditions([
                        expr.ExprTypeThresholdConditions().evaluator(
                            expr.ExprTypeThresholdConditionsEvaluator().type("gt").params([0]))]))))
            group = group.with_rule(grafana_rule)
        groups.append(json.loads(JSONEncoder(sort_keys=True).encode(group.build())))
    provisioning = {"apiVersion": 1, "groups": [_provisioning_group(g) for g in groups]}
    return to_yaml(provisioning)


def _grafana_template(text: str) -> str:
    """Prometheus alert templates use $value; Grafana's use $values.B.Value for the reduced query. Grafana
    templates cannot run queries, so the sentence that looks up the period value goes."""
    text = re.sub(r"\s*Over the whole window the KPI is .*$", "", text)
    return text.replace("$value", "$values.B.Value")


def _provisioning_group(group: dict[str, Any]) -> dict[str, Any]:
    rules = []
    for rule in group.get("rules", []):
        rules.append({
            "uid": rule["uid"], "title": rule["title"], "condition": rule["condition"], "data": rule["data"],
            "for": rule.get("for", "0s"), "labels": rule.get("labels", {}), "annotations": rule.get("annotations", {}),
            "noDataState": rule.get("noDataState", "OK"), "execErrState": rule.get("execErrState", "Error"),
        })
    return {"orgId": 1, "name": group["title"], "folder": "KPIs", "interval": "1m", "rules": rules}
