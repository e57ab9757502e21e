"""Compiles a ServiceSpec into Prometheus rule groups. Pure: the same spec gives the same bytes.

Only ``kpi:numerator:rate5m`` and ``kpi:denominator:rate5m`` read raw metrics. Every longer window is a
ratio of sums of those recorded 5m rates: exact (traffic-weighted, unlike an average of ratios) and cheap
(one pass over raw series, whatever the number of windows).
"""

from __future__ import annotations

from typing import Any

import yaml

from agent.kpi.spec import Kpi, ServiceSpec, Tier
from agent.yamlsrc import format_duration

SLI_GROUP_INTERVAL = "30s"
PERIOD_GROUP_INTERVAL = "5m"  # the period ratio reads up to a window of samples: no need to do it often

Rule = dict[str, Any]


def _number(value: float) -> str:
    """A float as PromQL reads it back exactly, without noise digits (0.0010000000000000009 -> 0.001)."""
    text = f"{value:.12g}"
    return text if "e" not in text else repr(value)


def _labels_selector(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _identity(spec: ServiceSpec, kpi: Kpi) -> dict[str, str]:
    return {"kpi": kpi.name, "kpi_service": spec.service}


def _rule_labels(spec: ServiceSpec, kpi: Kpi, extra: dict[str, str] | None = None) -> dict[str, str]:
    labels = dict(sorted(spec.labels.items()))
    labels.update(_identity(spec, kpi))
    labels.update(sorted((extra or {}).items()))
    return labels


def window_name(seconds: float) -> str:
    return format_duration(seconds)


def alert_windows(kpi: Kpi) -> list[float]:
    """Every window some alert or dashboard reads, shortest first (the 5m base included)."""
    windows = {300.0}
    for tier in kpi.alerting.tiers:
        for window in tier.windows:
            windows.update((window.long, window.short))
    if kpi.alerting.strategy == "threshold" and kpi.is_ratio:
        windows.add(kpi.alerting.window)
    return sorted(windows)


def _by(kpi: Kpi) -> str:
    return f" by ({', '.join(kpi.group_by)})" if kpi.group_by else ""


def _raw_rate(kpi: Kpi, side: str) -> str:
    selector = getattr(kpi, side)
    if selector is not None:
        return f"sum{_by(kpi)} (rate({selector.text}[5m]))" if kpi.group_by else f"sum(rate({selector.text}[5m]))"
    return getattr(kpi, f"{side}_query").replace("{{window}}", "5m")


def _sli_rules(spec: ServiceSpec, kpi: Kpi) -> list[Rule]:
    identity = _labels_selector(_identity(spec, kpi))
    labels = _rule_labels(spec, kpi)
    numerator, denominator = _raw_rate(kpi, "numerator"), _raw_rate(kpi, "denominator")
    rules: list[Rule] = [
        # Where no event is good there is no numerator series at all: fill 0 wherever there is traffic, or
        # a total outage would have no ratio and page nobody.
        {"record": "kpi:numerator:rate5m", "expr": f"({numerator}) or (0 * ({denominator}))", "labels": labels},
        {"record": "kpi:denominator:rate5m", "expr": denominator, "labels": labels},
    ]
    for window in alert_windows(kpi):
        name = window_name(window)
        if window == 300:
            expr = f"kpi:numerator:rate5m{identity} / (kpi:denominator:rate5m{identity} > 0)"
        else:
            expr = (f"sum_over_time(kpi:numerator:rate5m{identity}[{name}])"
                    f" / (sum_over_time(kpi:denominator:rate5m{identity}[{name}]) > 0)")
        rules.append({"record": f"kpi:ratio:rate{name}", "expr": expr, "labels": labels})
    if kpi.alerting.strategy == "burn_rate":
        for window in alert_windows(kpi):
            name = window_name(window)
            rules.append({"record": f"kpi:burn_rate:rate{name}",
                          "expr": f"{_bad(f'kpi:ratio:rate{name}{identity}', kpi)} / {_number(kpi.error_budget)}",
                          "labels": labels})
    return rules


def _bad(ratio: str, kpi: Kpi) -> str:
    return f"(1 - {ratio})" if kpi.higher_is_better else ratio


def _constant_rules(spec: ServiceSpec, kpi: Kpi) -> list[Rule]:
    labels = _rule_labels(spec, kpi)
    info = _rule_labels(spec, kpi, {"description": kpi.description, "objective": kpi.objective,
                                    "owner": kpi.owner, "higher_is_better": str(kpi.higher_is_better).lower()})
    rules = [
        {"record": "kpi:target", "expr": f"vector({_number(kpi.target)})", "labels": labels},
        {"record": "kpi:window:seconds", "expr": f"vector({_number(kpi.window)})", "labels": labels},
    ]
    if kpi.is_ratio:
        rules.append({"record": "kpi:error_budget:ratio", "expr": f"vector({_number(kpi.error_budget)})",
                      "labels": labels})
    rules.append({"record": "kpi_info", "expr": "vector(1)", "labels": info})
    return rules


def _compare(kpi: Kpi) -> str:
    return ">=" if kpi.higher_is_better else "<="


def _period_rules(spec: ServiceSpec, kpi: Kpi) -> list[Rule]:
    identity = _labels_selector(_identity(spec, kpi))
    labels = _rule_labels(spec, kpi)
    window = window_name(kpi.window)
    if not kpi.is_ratio:
        return [
            {"record": "kpi:value:period", "expr": f"avg_over_time(kpi:value{identity}[{window}])", "labels": labels},
            {"record": "kpi:meets_target",
             "expr": f"kpi:value:period{identity} {_compare(kpi)} bool {_number(kpi.target)}", "labels": labels},
        ]
    return [
        {"record": "kpi:ratio:period",
         "expr": (f"sum_over_time(kpi:numerator:rate5m{identity}[{window}])"
                  f" / (sum_over_time(kpi:denominator:rate5m{identity}[{window}]) > 0)"),
         "labels": labels},
        {"record": "kpi:meets_target",
         "expr": f"kpi:ratio:period{identity} {_compare(kpi)} bool {_number(kpi.target)}", "labels": labels},
        {"record": "kpi:error_budget_remaining:ratio",
         "expr": f"1 - {_bad(f'kpi:ratio:period{identity}', kpi)} / {_number(kpi.error_budget)}", "labels": labels},
    ]


def _percent(value: float) -> str:
    return f"{value * 100:.6g}%"


def _target_text(kpi: Kpi) -> str:
    target = _percent(kpi.target) if kpi.is_ratio else _number(kpi.target)
    direction = "at least" if kpi.higher_is_better else "at most"
    return f"{direction} {target} over {window_name(kpi.window)}"


def _value_format(kpi: Kpi) -> str:
    return "humanizePercentage" if kpi.is_ratio else "humanize"


def _annotations(kpi: Kpi, summary: str, description: str, extra: dict[str, str]) -> dict[str, str]:
    annotations = {"summary": summary, "description": description}
    annotations.update(sorted(extra.items()))
    return annotations


def _burn_alert(spec: ServiceSpec, kpi: Kpi, tier: Tier) -> Rule:
    identity = _labels_selector(_identity(spec, kpi))
    clauses = []
    for window in tier.windows:
        long, short = window_name(window.long), window_name(window.short)
        factor = _number(window.factor)
        clauses.append(f"(kpi:burn_rate:rate{long}{identity} > {factor}"
                       f" and kpi:burn_rate:rate{short}{identity} > {factor})")
    windows = ", ".join(f"{_number(w.factor)}x over {window_name(w.long)} and {window_name(w.short)}"
                        for w in tier.windows)
    period = f"kpi:ratio:period{identity}"
    group = "".join(f" {g}={{{{ $labels.{g} }}}}" for g in kpi.group_by)
    summary = (f"KPI {kpi.name} of {spec.service}{group} is burning its error budget "
               f"{{{{ $value | printf \"%.1f\" }}}}x too fast ({tier.severity})")
    description = (f"{kpi.description or kpi.name}: the target is {_target_text(kpi)}. Burn thresholds: {windows}. "
                   f"Over the whole window the KPI is "
                   f"{{{{ with printf \"{_escape_template(period)}\" | query }}}}{{{{ . | first | value | "
                   f"humanizePercentage }}}}{{{{ else }}}}unknown{{{{ end }}}}.")
    return {
        "alert": kpi.alerting.name or "KPIErrorBudgetBurn",
        "expr": "\n  or\n".join(clauses),
        "labels": _rule_labels(spec, kpi, {"kpi_severity": tier.severity, **tier.labels}),
        "annotations": _annotations(kpi, summary, description, tier.annotations),
    }


def _escape_template(query: str) -> str:
    return query.replace('"', '\\"')


def _threshold_alert(spec: ServiceSpec, kpi: Kpi) -> Rule:
    identity = _labels_selector(_identity(spec, kpi))
    alerting = kpi.alerting
    below = kpi.higher_is_better
    if kpi.is_ratio:
        series = f"kpi:ratio:rate{window_name(alerting.window)}{identity}"
    else:
        series = f"avg_over_time(kpi:value{identity}[{window_name(alerting.window)}])"
    expr = f"{series} {'<' if below else '>'} {_number(kpi.target)}"
    fmt = _value_format(kpi)
    summary = (f"KPI {kpi.name} of {spec.service} is {'below' if below else 'above'} its target: "
               f"{{{{ $value | {fmt} }}}} over the last {window_name(alerting.window)}")
    description = f"{kpi.description or kpi.name}: the target is {_target_text(kpi)}."
    rule: Rule = {"alert": alerting.name or ("KPIBelowTarget" if below else "KPIAboveTarget"), "expr": expr}
    if alerting.for_:
        rule["for"] = window_name(alerting.for_)
    rule["labels"] = _rule_labels(spec, kpi, alerting.labels)
    rule["annotations"] = _annotations(kpi, summary, description, alerting.annotations)
    return rule


def _no_data_alert(spec: ServiceSpec, kpi: Kpi) -> Rule:
    no_data = kpi.alerting.no_data
    assert no_data is not None
    identity = _labels_selector(_identity(spec, kpi))
    if kpi.is_ratio:
        expr = (f"absent(kpi:denominator:rate5m{identity})"
                f" or (sum(kpi:denominator:rate5m{identity}) == 0)")
        what = "no traffic: its denominator is absent or zero"
    else:
        expr = f"absent(kpi:value{identity})"
        what = "no value: its expression returns nothing"
    return {
        "alert": no_data.name,
        "expr": expr,
        "for": window_name(no_data.for_),
        "labels": _rule_labels(spec, kpi, no_data.labels),
        "annotations": {
            "summary": f"KPI {kpi.name} of {spec.service} has had {what} for {window_name(no_data.for_)}",
            "description": ("Its ratio and alerts are blind until the metrics come back: check that the "
                            "metrics still exist (renamed? scrape failing?) and that traffic is expected."),
        },
    }


def _alert_rules(spec: ServiceSpec, kpi: Kpi) -> list[Rule]:
    alerting = kpi.alerting
    rules: list[Rule] = []
    if alerting.strategy == "burn_rate":
        rules.extend(_burn_alert(spec, kpi, tier) for tier in alerting.tiers)
    elif alerting.strategy == "threshold":
        rules.append(_threshold_alert(spec, kpi))
    if alerting.no_data is not None and alerting.strategy != "none":
        rules.append(_no_data_alert(spec, kpi))
    return rules


def compile_groups(spec: ServiceSpec, interval: str | None = None) -> list[dict[str, Any]]:
    """The rule groups of one service: rates, windows and alerts; then the period judgements.
    ``interval`` overrides both groups' evaluation intervals (tests and demos use seconds)."""
    sli: list[Rule] = []
    period: list[Rule] = []
    alerts: list[Rule] = []
    for kpi in sorted(spec.kpis, key=lambda k: k.name):
        if kpi.is_ratio:
            sli.extend(_sli_rules(spec, kpi))
        else:
            sli.append({"record": "kpi:value", "expr": kpi.value, "labels": _rule_labels(spec, kpi)})
        sli.extend(_constant_rules(spec, kpi))
        period.extend(_period_rules(spec, kpi))
        alerts.extend(_alert_rules(spec, kpi))
    # Alerts share the group of the rates they read: rules in a group run in order, so an alert always sees
    # this evaluation's burn rates, never the previous one's (groups run concurrently, in no set order).
    return [
        {"name": f"kpi-{spec.service}", "interval": interval or SLI_GROUP_INTERVAL, "rules": sli + alerts},
        {"name": f"kpi-{spec.service}-period", "interval": interval or PERIOD_GROUP_INTERVAL, "rules": period},
    ]


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # shared label dicts must not become &id001 anchors
        return True


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1_000_000, allow_unicode=True,
                     default_flow_style=False)


HEADER = "# Generated by kpi-agent from {file}. Do not edit: change the spec and run `kpi-agent rules generate`.\n"


def render_prometheus(spec: ServiceSpec, source_name: str, interval: str | None = None) -> str:
    return HEADER.format(file=source_name) + to_yaml({"groups": compile_groups(spec, interval)})


def render_operator(spec: ServiceSpec, source_name: str, namespace: str | None = None,
                    interval: str | None = None) -> str:
    metadata: dict[str, Any] = {"name": f"kpi-{spec.service}".lower().replace("_", "-").replace(".", "-")}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = {"app.kubernetes.io/name": "kpi-agent", "app.kubernetes.io/component": "kpi-rules",
                          "kpi_service": spec.service}
    document = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": metadata,
                "spec": {"groups": compile_groups(spec, interval)}}
    return HEADER.format(file=source_name) + to_yaml(document)
