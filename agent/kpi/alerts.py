"""The alerting rules of a KPI: burn-rate tiers (multi-window, multi-burn-rate), threshold alerts, and the
alerts that say a KPI is blind (no data, no traffic, good events never counted). They read the rates
agent.kpi.compiler records; their names and labels are agent.kpi.conventions'."""

from __future__ import annotations

from typing import Any

from agent.kpi import conventions as names
from agent.kpi.conventions import (
    DENOMINATOR,
    NUMERATOR,
    SEVERITY_LABEL,
    identity_selector,
    main_alert_name,
    rule_labels,
    side_rate,
    window_name,
)
from agent.kpi.model import Kpi, Selector, ServiceSpec, Tier
from agent.kpi.promql import number
from agent.kpi.windows import BASE_RATE_WINDOW, DEFAULT_NO_DATA_FOR

Rule = dict[str, Any]


def _percent(value: float) -> str:
    return f"{value * 100:.6g}%"


def _target_text(kpi: Kpi) -> str:
    target = _percent(kpi.target) if kpi.is_ratio else number(kpi.target)
    direction = "at least" if kpi.higher_is_better else "at most"
    return f"{direction} {target} over {window_name(kpi.window)}"


def _value_format(kpi: Kpi) -> str:
    return "humanizePercentage" if kpi.is_ratio else "humanize"


def _annotations(summary: str, description: str, *extra: dict[str, str]) -> dict[str, str]:
    annotations = {"summary": summary, "description": description}
    for more in extra:
        annotations.update(sorted(more.items()))
    return annotations


def _escape_template(query: str) -> str:
    return query.replace('"', '\\"')


def _bad_events(spec: ServiceSpec, kpi: Kpi, window: float) -> str:
    identity = identity_selector(spec, kpi)
    numerator = f"{side_rate(NUMERATOR, window)}{identity}"
    per_second = f"({side_rate(DENOMINATOR, window)}{identity} - {numerator})" if kpi.higher_is_better else numerator
    return f"{per_second} * {number(window)}"


def _burn_alert(spec: ServiceSpec, kpi: Kpi, tier: Tier) -> Rule:
    identity = identity_selector(spec, kpi)
    minimum = kpi.alerting.min_bad_events
    clauses = []
    for window in tier.windows:
        factor = number(window.factor)
        clause = (f"{names.burn_rate(window.long)}{identity} > {factor} and "
                  f"{names.burn_rate(window.short)}{identity} > {factor}")
        if minimum:
            clause += f" and {_bad_events(spec, kpi, window.long)} >= {minimum}"
        clauses.append(f"({clause})")
    windows = ", ".join(f"{number(w.factor)}x over {window_name(w.long)} and {window_name(w.short)}"
                        for w in tier.windows)
    guard = f" Needs at least {minimum} failed events in the long window." if minimum else ""
    period = f"{names.RATIO_PERIOD}{identity}"
    group = "".join(f" {g}={{{{ $labels.{g} }}}}" for g in kpi.group_by)
    summary = (f"KPI {kpi.name} of {spec.service}{group} is burning its error budget "
               f"{{{{ $value | printf \"%.1f\" }}}}x too fast ({tier.severity})")
    description = (f"{kpi.description or kpi.name}: the target is {_target_text(kpi)}. Burn thresholds: {windows}."
                   f"{guard} Over the whole window the KPI is "
                   f"{{{{ with printf \"{_escape_template(period)}\" | query }}}}{{{{ . | first | value | "
                   f"humanizePercentage }}}}{{{{ else }}}}unknown{{{{ end }}}}.")
    rule: Rule = {"alert": main_alert_name(kpi), "expr": "\n  or\n".join(clauses)}
    if tier.for_:
        rule["for"] = window_name(tier.for_)
    rule["labels"] = rule_labels(spec, kpi, {**kpi.alerting.labels, **tier.labels, SEVERITY_LABEL: tier.severity})
    rule["annotations"] = _annotations(summary, description, kpi.alerting.annotations, tier.annotations)
    return rule


def _threshold_alert(spec: ServiceSpec, kpi: Kpi) -> Rule:
    identity = identity_selector(spec, kpi)
    alerting = kpi.alerting
    below = kpi.higher_is_better
    if kpi.is_ratio:
        series = f"{names.ratio_rate(alerting.window)}{identity}"
    else:
        series = f"avg_over_time({names.VALUE}{identity}[{window_name(alerting.window)}])"
    expr = f"{series} {'<' if below else '>'} {number(kpi.target)}"
    fmt = _value_format(kpi)
    summary = (f"KPI {kpi.name} of {spec.service} is {'below' if below else 'above'} its target: "
               f"{{{{ $value | {fmt} }}}} over the last {window_name(alerting.window)}")
    description = f"{kpi.description or kpi.name}: the target is {_target_text(kpi)}."
    rule: Rule = {"alert": main_alert_name(kpi), "expr": expr}
    if alerting.for_:
        rule["for"] = window_name(alerting.for_)
    severity = {SEVERITY_LABEL: alerting.severity} if alerting.severity else {}
    rule["labels"] = rule_labels(spec, kpi, {**alerting.labels, **severity})
    rule["annotations"] = _annotations(summary, description, alerting.annotations)
    return rule


def _no_data_alerts(spec: ServiceSpec, kpi: Kpi) -> list[Rule]:
    no_data = kpi.alerting.no_data
    assert no_data is not None
    identity = identity_selector(spec, kpi)
    labels = rule_labels(spec, kpi, {**no_data.labels, SEVERITY_LABEL: "ticket"})
    base_denominator = f"{side_rate(DENOMINATOR, BASE_RATE_WINDOW)}{identity}"
    absent = base_denominator if kpi.is_ratio else f"{names.VALUE}{identity}"
    what = "its metrics are absent" if kpi.is_ratio else "its value expression returns nothing"
    rules: list[Rule] = [{
        "alert": no_data.name,
        "expr": f"absent({absent})",
        "for": window_name(no_data.for_),
        "labels": labels,
        "annotations": _annotations(
            f"KPI {kpi.name} of {spec.service} is blind: {what} (for {window_name(no_data.for_)})",
            "Its ratio and alerts cannot work until the metrics come back: check that they still exist (renamed? "
            "relabelled?) and that Prometheus still scrapes them (up == 1)."),
    }]
    if kpi.is_ratio and kpi.gauge is None:
        rules.append({
            "alert": names.NO_TRAFFIC_ALERT,
            "expr": f"sum({base_denominator}) == 0",
            "for": window_name(no_data.no_traffic_for),
            "labels": labels,
            "annotations": _annotations(
                f"KPI {kpi.name} of {spec.service} has counted no event for {window_name(no_data.no_traffic_for)}",
                "With no traffic its ratio is undefined and it cannot page: is traffic expected, or has what "
                "counts the events stopped (log rotated away, counter no longer incremented)?"),
        })
    return rules


def _numerator_absent_alert(spec: ServiceSpec, kpi: Kpi) -> Rule:
    assert kpi.numerator is not None
    identity = identity_selector(spec, kpi)
    no_data = kpi.alerting.no_data
    for_ = no_data.for_ if no_data else DEFAULT_NO_DATA_FOR
    selector = kpi.numerator.text.replace("{{window}}", "5m")  # {{ }} would be a template action
    return {
        "alert": names.NUMERATOR_ABSENT_ALERT,
        "expr": (f"count({side_rate(DENOMINATOR, BASE_RATE_WINDOW)}{identity} > 0)"
                 f" unless on () count({side_rate(NUMERATOR, BASE_RATE_WINDOW)}{identity})"),
        "for": window_name(for_),
        "labels": rule_labels(spec, kpi, {**(no_data.labels if no_data else {}), SEVERITY_LABEL: "ticket"}),
        "annotations": _annotations(
            f"KPI {kpi.name} of {spec.service}: its good events ({selector}) have not been counted in the last "
            f"{window_name(kpi.window)} while its denominator counts traffic",
            "Most likely a mistake in the spec: a typo in the metric or a label, a renamed metric, or a histogram "
            "bound that does not exist. Until good events are counted the ratio is not computed (a mistake must "
            "not page); once they have been, their absence counts as zero good events and pages.",
            {"selector": selector}),
    }


def _selectors(kpi: Kpi) -> list[tuple[Selector, bool]]:
    """(selector, whether it counts failed events) for every selector the KPI reads."""
    failures = kpi.bad if kpi.bad is not None else None if kpi.higher_is_better else kpi.numerator
    found = [(events.selector, events is failures) for events in (kpi.bad, kpi.numerator, kpi.denominator)
             if events is not None and events.selector is not None]
    return found + ([(kpi.gauge, False)] if kpi.gauge is not None else [])


def _name_checks(kpi: Kpi) -> dict[str, str]:
    """problem -> PromQL that returns one sample while the problem holds: a selector of failed events whose
    metric has no series, or any selector with a label name no series of its metric carries (a positive matcher
    then matches nothing, a negative one everything). A missing metric of good or all events is the business of
    KPINumeratorAbsent and KPINoData."""
    checks: dict[str, str] = {}
    for selector, counts_failures in _selectors(kpi):
        metric = selector.metric
        if counts_failures:
            checks.setdefault(f"metric {metric} has no series", f"absent({metric})")
        for matcher in selector.matchers:
            if matcher.label == "__name__" or (matcher.op in ("=", "=~") and matcher.matches("")):
                continue  # x="" asks for series without the label: they need not carry it
            checks.setdefault(f"no series of {metric} has a label {matcher.label}",
                              f'count({metric}) unless on () count({metric}{{{matcher.label}!=""}})')
    return checks


def selector_alert(spec: ServiceSpec, kpi: Kpi) -> Rule | None:
    """KPISelectorCannotMatch: while the denominator counts traffic, a name in a selector matches nothing
    (a typo a ratio would otherwise hide: failed events that can never be counted read as 100%)."""
    no_data = kpi.alerting.no_data
    checks = _name_checks(kpi)
    if no_data is None or kpi.alerting.strategy == "none" or not checks:
        return None
    identity = identity_selector(spec, kpi)
    problems = "\n  or\n  ".join(f'label_replace({expr}, "{names.PROBLEM_LABEL}", "{_escape_label(problem)}", "", "")'
                                 for problem, expr in checks.items())
    return {
        "alert": names.SELECTOR_CANNOT_MATCH_ALERT,
        "expr": f"(\n  {problems}\n)\nand on () sum({side_rate(DENOMINATOR, BASE_RATE_WINDOW)}{identity}) > 0",
        "for": window_name(no_data.for_),
        "labels": rule_labels(spec, kpi, {**no_data.labels, SEVERITY_LABEL: "ticket"}),
        "annotations": _annotations(
            f"KPI {kpi.name} of {spec.service}: {{{{ $labels.{names.PROBLEM_LABEL} }}}}, so a selector of the spec "
            "can never match (or matches everything) while its denominator counts traffic",
            "Most likely a typo in the spec's metric or label name. A selector of failed events that can never "
            "match makes the KPI read 100% through any outage. If the metric is only created at the first "
            "failure, export it at 0 from the start; `kpi-agent rules check --prometheus.url` names the culprit."),
    }


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def alert_rules(spec: ServiceSpec, kpi: Kpi) -> list[Rule]:
    """Every alerting rule of one KPI, main alert(s) first."""
    alerting = kpi.alerting
    rules: list[Rule] = []
    if alerting.strategy == "burn_rate":
        rules.extend(_burn_alert(spec, kpi, tier) for tier in alerting.tiers)
    elif alerting.strategy == "threshold":
        rules.append(_threshold_alert(spec, kpi))
    if alerting.strategy != "none":
        if kpi.fills_missing_good_events:
            rules.append(_numerator_absent_alert(spec, kpi))
        if alerting.no_data is not None:
            rules.extend(_no_data_alerts(spec, kpi))
    return rules
