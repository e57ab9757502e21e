"""Grafana dashboards and Grafana-managed alert rules for KPI specs, built with grafana-foundation-sdk.

Dashboards read only the stable ``kpi:*`` series (and the agent's own metrics), so they work for every spec
and every ``group_by``. Output is deterministic: uids derive from service names, JSON keys are sorted.
"""

from __future__ import annotations

import json
import re
from typing import Any

from grafana_foundation_sdk.builders import alerting, common, dashboard, expr, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
from grafana_foundation_sdk.builders.dashboard import DatasourceVariable, QueryVariable
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.alerting import RelativeTimeRange
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    GraphTresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    GridPos,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from agent.formatting import format_duration
from agent.kpi import conventions as names
from agent.kpi.compiler import compile_groups
from agent.kpi.conventions import KPI_LABEL, SERVICE_LABEL, SEVERITY_LABEL
from agent.kpi.model import Kpi, ServiceSpec
from agent.kpi.output import header_line
from agent.kpi.render import to_yaml
from agent.kpi.units import GRAFANA_UNITS
from agent.kpi.windows import BASE_RATE_WINDOW, BASE_TIERS

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
OVERVIEW_UID = "kpi-overview"
AGENT_UID = "kpi-agent-health"
WIDTH = 24
# Grafana unit ids of what the panels show (grafana-data valueFormats)
RATIO, SECONDS, BYTES, SHORT = GRAFANA_UNITS["ratio"], GRAFANA_UNITS["seconds"], GRAFANA_UNITS["bytes"], "short"
PER_SECOND = GRAFANA_UNITS["per_second"]
BURN = "suffix:x"  # a burn rate is a multiple of the sustainable rate: 14.4x
COMMAND = "dashboards generate"  # what the header of every generated file tells people to run
SEVERITY_COLORS = {"ticket": "orange", "page": "red"}
LEGEND = f"{{{{{SERVICE_LABEL}}}}} {{{{{KPI_LABEL}}}}}"  # {{kpi_service}} {{kpi}}


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


def _timeseries(title: str, unit: str) -> timeseries.Panel:
    """A time series panel with its unit, a legend and a tooltip listing every series (Grafana fills no
    defaults into provisioned JSON: left out, `options` is null)."""
    return (timeseries.Panel().title(title).datasource(DATASOURCE).unit(unit)
            .legend(common.VizLegendOptions().display_mode(LegendDisplayMode.LIST)
                    .placement(LegendPlacement.BOTTOM).show_legend(True))
            .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)))


def _stat(title: str, unit: str) -> stat.Panel:
    return (stat.Panel().title(title).datasource(DATASOURCE).unit(unit).graph_mode(BigValueGraphMode.NONE)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def _tier_thresholds(tiers: dict[str, list[float]]) -> dashboard.ThresholdsConfig:
    """Each burn factor of the alert tiers as a threshold: ticket factors orange, page factors red."""
    steps: list[tuple[float | None, str]] = [(None, "green")]
    for severity in ("ticket", "page"):
        steps.extend((factor, SEVERITY_COLORS[severity]) for factor in sorted(set(tiers.get(severity, []))))
    return _thresholds(*sorted(steps, key=lambda step: -1.0 if step[0] is None else step[0]))


def _encode(board: dashboard.Dashboard) -> str:
    """The dashboard's JSON; panel ids numbered in order, so each is unique and stable."""
    built = board.build()
    for index, panel in enumerate(built.panels or []):
        panel.id_val = index + 1
    return JSONEncoder(sort_keys=True, indent=2).encode(built) + "\n"


def overview_dashboard() -> str:
    """One row per KPI of every service: period value, target, whether it is met, budget left, fastest burn."""
    service = f'{SERVICE_LABEL}=~"$service"'
    fastest = f'max by ({KPI_LABEL}, {SERVICE_LABEL}) ({{__name__=~"{names.BURN_RATE_NAME_RE}", {service}}})'
    base_factors = {severity: [factor for _, factor in tiers] for severity, tiers in BASE_TIERS.items()}
    board = (dashboard.Dashboard("KPI overview").uid(OVERVIEW_UID).tags(["kpi", "kpi-agent"])
             .description(header_line(COMMAND))
             .time("now-7d", "now").refresh("1m")
             .with_variable(_datasource_variable())
             .with_variable(_label_variable(SERVICE_LABEL, names.INFO, "service").name("service")))
    board = board.with_panel(
        _stat("Meets target", "bool").description("Whether the KPI meets its target over its window")
        .grid_pos(GridPos(h=6, w=8, x=0, y=0))
        .with_target(_query(f"{names.MEETS_TARGET}{{{service}}}", LEGEND))
        .mappings([ValueMap({"0": ValueMappingResult(text="missed", color="red", index=0),
                             "1": ValueMappingResult(text="met", color="green", index=1)})])
        .thresholds(_thresholds((None, "red"), (1, "green"))).color_mode(BigValueColorMode.BACKGROUND))
    board = board.with_panel(
        _stat("Error budget remaining", RATIO).grid_pos(GridPos(h=6, w=8, x=8, y=0))
        .with_target(_query(f"{names.BUDGET_REMAINING}{{{service}}}", LEGEND))
        .thresholds(_thresholds((None, "red"), (0, "orange"), (0.25, "green"))))
    board = board.with_panel(
        _stat("Fastest burn rate", BURN)
        .description("Highest burn rate over the alert windows; thresholds at the default tiers' factors")
        .grid_pos(GridPos(h=6, w=8, x=16, y=0))
        .with_target(_query(fastest, LEGEND))
        .thresholds(_tier_thresholds(base_factors)))
    # Ratio and value KPIs share the period value and target columns (one query each, so every column has
    # data whatever the specs): their unit is "none", the number as recorded (0.999 is 99.9%).
    columns = {"Value #period": ("period value", "none"), "Value #target": ("target", "none"),
               "Value #budget": ("budget remaining", RATIO), "Value #burn": ("fastest burn", BURN)}
    kpis = (table.Panel().title("KPIs").datasource(DATASOURCE).unit("none").show_header(True)
            .description("Period value and target: ratio KPIs as a fraction (0.999 = 99.9%), value KPIs as is")
            .grid_pos(GridPos(h=12, w=WIDTH, x=0, y=6))
            .with_target(_query(f"{names.RATIO_PERIOD}{{{service}}} or {names.VALUE_PERIOD}{{{service}}}", ref="period",
                                instant=True))
            .with_target(_query(f"{names.TARGET}{{{service}}}", ref="target", instant=True))
            .with_target(_query(f"{names.BUDGET_REMAINING}{{{service}}}", ref="budget", instant=True))
            .with_target(_query(fastest, ref="burn", instant=True))
            .with_target(_query(f"{names.INFO}{{{service}}}", ref="info", instant=True))
            .with_transformation(_transformation("merge", {}))
            .with_transformation(_transformation("organize", {
                "excludeByName": {"Time": True, "__name__": True, "Value #info": True, "higher_is_better": True},
                "renameByName": {**{field: name for field, (name, _) in columns.items()},
                                 SERVICE_LABEL: "service"}})))
    for name, unit in columns.values():
        kpis = kpis.override_by_name(name, [DynamicConfigValue(id_val="unit", value=unit)])
    return _encode(board.with_panel(kpis))


def _transformation(kind: str, options: dict[str, Any]) -> DataTransformerConfig:
    return DataTransformerConfig(id_val=kind, options=options)


def _group_filter(kpi: Kpi) -> str:
    return "".join(f', {label}=~"${label}"' for label in kpi.group_by)


def service_dashboard(spec: ServiceSpec) -> str:
    """Per KPI of one service: the ratio over time against its target, budget left, burn rates against the
    alert tiers' factors, and the spec's supporting metrics in their units."""
    board = (dashboard.Dashboard(f"KPIs: {spec.service}").uid(_uid(f"kpi-{spec.service}"))
             .description(header_line(COMMAND, spec.file))
             .tags(["kpi", "kpi-agent", spec.service]).time("now-24h", "now").refresh("1m")
             .with_variable(_datasource_variable()))
    group_labels = sorted({label for kpi in spec.kpis for label in kpi.group_by})
    base_ratio = names.ratio_rate(BASE_RATE_WINDOW)
    for label in group_labels:
        board = board.with_variable(_label_variable(label, f'{base_ratio}{{{SERVICE_LABEL}="{spec.service}"}}'))
    y = 0
    for kpi in sorted(spec.kpis, key=lambda k: k.name):
        selector = f'{KPI_LABEL}="{kpi.name}", {SERVICE_LABEL}="{spec.service}"{_group_filter(kpi)}'
        legend = "".join(f" {{{{{label}}}}}" for label in kpi.group_by).strip() or kpi.name
        board = board.with_row(dashboard.Row(f"{kpi.name}: {kpi.description or kpi.objective}".rstrip(": ")))
        y += 1
        if kpi.is_ratio:
            main = (_timeseries(f"{kpi.name}: ratio and target", RATIO)
                    .with_target(_query(f"{base_ratio}{{{selector}}}", f"5m {legend}", "A"))
                    .with_target(_query(f"{names.RATIO_PERIOD}{{{selector}}}",
                                        f"{format_duration(kpi.window)} {legend}", "B")))
        else:
            main = (_timeseries(f"{kpi.name}: value and target", SHORT)
                    .with_target(_query(f"{names.VALUE}{{{selector}}}", legend, "A")))
        main = (main.description(f"{kpi.objective} (owner: {kpi.owner or 'unset'})")
                .thresholds(_thresholds((None, "red" if kpi.higher_is_better else "green"),
                                        (kpi.target, "green" if kpi.higher_is_better else "red")))
                .thresholds_style(_threshold_line()).grid_pos(GridPos(h=8, w=12, x=0, y=y)))
        board = board.with_panel(main)
        burns = kpi.alerting.strategy == "burn_rate"
        if kpi.is_ratio:
            board = board.with_panel(
                _timeseries(f"{kpi.name}: error budget remaining", RATIO)
                .with_target(_query(f"{names.BUDGET_REMAINING}{{{selector}}}", legend))
                .grid_pos(GridPos(h=8, w=6 if burns else 12, x=12, y=y)))
        if burns:
            factors = {tier.severity: [w.factor for w in tier.windows] for tier in kpi.alerting.tiers}
            board = board.with_panel(
                _timeseries(f"{kpi.name}: burn rates", BURN)
                .description("Burn rate per window; the lines are the alert tiers' factors "
                             "(ticket orange, page red)")
                .with_target(_query(f'{{__name__=~"{names.BURN_RATE_NAME_RE}", {selector}}}', "{{__name__}} " + legend))
                .thresholds(_tier_thresholds(factors)).thresholds_style(_threshold_line())
                .grid_pos(GridPos(h=8, w=6, x=18, y=y)))
        y += 8
        for index, metric in enumerate(kpi.supporting_metrics):
            board = board.with_panel(
                _timeseries(metric.title, GRAFANA_UNITS[metric.unit])
                .with_target(_query(metric.query))
                .grid_pos(GridPos(h=6, w=8, x=(index % 3) * 8, y=y + (index // 3) * 6)))
        y += 6 * ((len(kpi.supporting_metrics) + 2) // 3)
    return _encode(board)


def _threshold_line() -> GraphThresholdsStyleConfig:
    return GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.LINE)


def agent_dashboard() -> str:
    """The agent itself: probes, log reading, dropped series, reloads."""
    board = (dashboard.Dashboard("kpi-agent health").uid(AGENT_UID).tags(["kpi-agent"])
             .description(header_line(COMMAND))
             .time("now-6h", "now").refresh("30s").with_variable(_datasource_variable()))
    panels = [
        ("Probe success", "probe_success", "{{target}}", RATIO),
        ("Probe latency p99",
         "histogram_quantile(0.99, sum by (le, target) (rate(probe_latency_seconds_bucket[5m])))", "{{target}}",
         SECONDS),
        ("Probe failures by result", 'sum by (target, result) (rate(probes_total{result!="success"}[5m])) or '
                                     "sum by (target) (rate(probes_total[5m])) * 0", "{{target}} {{result}}",
         PER_SECOND),
        ("Log lines per second", "sum by (source) (rate(kpi_agent_log_lines_total[5m]))", "{{source}}", PER_SECOND),
        ("Unmatched and malformed lines per second",
         "sum by (source) (rate(kpi_agent_log_lines_unmatched_total[5m]) + "
         "rate(kpi_agent_log_lines_malformed_total[5m]))", "{{source}}", PER_SECOND),
        ("Log lag", "kpi_agent_log_lag_bytes", "{{source}}", BYTES),
        ("Dropped series per second", "sum by (metric) (rate(kpi_agent_series_dropped_total[5m])) or vector(0)",
         "{{metric}}", PER_SECOND),
        ("Config reload successful", "kpi_agent_config_last_reload_successful", "{{instance}}", "bool"),
    ]
    for index, (title, promql, legend, unit) in enumerate(panels):
        board = board.with_panel(
            _timeseries(title, unit).with_target(_query(promql, legend))
            .grid_pos(GridPos(h=8, w=12, x=(index % 2) * 12, y=(index // 2) * 8)))
    return _encode(board)


def grafana_alert_rules(specs: list[ServiceSpec], datasource_uid: str = "prometheus",
                        folder_uid: str = "kpi") -> str:
    """The KPI alerts as Grafana-managed alert rules (a provisioning file). They read the kpi:* recording
    rules, so Prometheus must still load the generated rules; only the alerting moves to Grafana."""
    groups = []
    for spec in sorted(specs, key=lambda s: s.service):
        group = alerting.RuleGroup(names.rule_group(spec.service)).folder_uid(folder_uid).interval(60)
        for index, rule in enumerate(r for g in compile_groups(spec) for r in g["rules"] if "alert" in r):
            labels = rule["labels"]
            title = f"{rule['alert']} {labels[KPI_LABEL]} {labels.get(SEVERITY_LABEL, '')}".strip()
            grafana_rule = (
                alerting.Rule(title).uid(_uid(f"{spec.service}-{labels[KPI_LABEL]}-{index}"))
                .condition("C").for_val(rule.get("for", "0s")).labels(labels)
                .annotations({k: _grafana_template(v) for k, v in rule["annotations"].items()})
                .no_data_state("OK").exec_err_state("Error").rule_group(names.rule_group(spec.service))
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
    return f"# {header_line(COMMAND)}\n" + to_yaml(provisioning)


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
