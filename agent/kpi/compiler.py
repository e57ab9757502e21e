"""Compiles a ServiceSpec into Prometheus rule groups. Pure: the same spec gives the same bytes.

Raw series are read once per KPI and evaluation, as 5m rates (``kpi:numerator:rate5m``,
``kpi:denominator:rate5m``). Every longer window that is a whole number of 5m is *telescoped*: the mean of a
shorter recorded rate taken at consecutive offsets (the 1h rate is the 30m rate now and 30m ago). Each term
covers its own slice of the window exactly once, so the result is what a raw rate over the whole window
counts (traffic-weighted, no smoothing lag: alerts fire at the Workbook's times), at the cost of a few
lookups of one recorded series instead of a pass over days of raw samples. Terms are summed with ``or``
over distinct ``kpi_term`` labels, so a gap in the past (Prometheus down) leaves the rest of the window
counted instead of blanking it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from agent.formatting import format_duration
from agent.kpi.spec import BASE_RATE_WINDOW, Kpi, ServiceSpec, Source, Tier
from agent.series.exposition import escape_label_value

SLI_GROUP_INTERVAL = "30s"
PERIOD_GROUP_INTERVAL = "5m"  # the period judgements change slowly: no need to evaluate them often
MAX_TERMS = 12  # a telescoped window sums at most this many terms; longer ones get an intermediate window
LAST_SEEN = "kpi:numerator:last_seen_timestamp_seconds"

Rule = dict[str, Any]
Terms = tuple[tuple[float, float], ...]  # (recorded window, offset) pairs that together cover a window


def _number(value: float) -> str:
    """A float as PromQL reads it back exactly, without noise digits (0.0010000000000000009 -> 0.001)."""
    text = f"{value:.12g}"
    return text if "e" not in text else repr(value)


def labels_selector(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items()) + "}"


def identity_labels(spec: ServiceSpec, kpi: Kpi) -> dict[str, str]:
    """The labels that tell one KPI's ``kpi:*`` series and alerts from every other's."""
    return {"kpi": kpi.name, "kpi_service": spec.service}


def identity_selector(spec: ServiceSpec, kpi: Kpi) -> str:
    """``{kpi="...",kpi_service="..."}``."""
    return labels_selector(identity_labels(spec, kpi))


NUMERATOR_ABSENT_ALERT = "KPINumeratorAbsent"


def main_alert_name(kpi: Kpi) -> str:
    """The alert a KPI that misses its target fires: the spec's name, else the strategy's default."""
    if kpi.alerting.name:
        return kpi.alerting.name
    if kpi.alerting.strategy == "threshold":
        return "KPIBelowTarget" if kpi.higher_is_better else "KPIAboveTarget"
    return "KPIErrorBudgetBurn"


def _rule_labels(spec: ServiceSpec, kpi: Kpi, extra: dict[str, str] | None = None) -> dict[str, str]:
    labels = dict(sorted(spec.labels.items()))
    labels.update(sorted(kpi.labels.items()))
    labels.update(identity_labels(spec, kpi))
    labels.update(sorted((extra or {}).items()))
    return labels


def window_name(seconds: float) -> str:
    return format_duration(seconds)


def alert_windows(kpi: Kpi) -> list[float]:
    """Every window some alert or dashboard reads a ratio of, shortest first (the 5m base included)."""
    windows = {float(BASE_RATE_WINDOW)}
    for tier in kpi.alerting.tiers:
        for window in tier.windows:
            windows.update((window.long, window.short))
    if kpi.alerting.strategy == "threshold" and kpi.is_ratio:
        windows.add(kpi.alerting.window)
    return sorted(windows)


def is_telescoped(window: float) -> bool:
    return window >= BASE_RATE_WINDOW and window % BASE_RATE_WINDOW == 0


def _decompose(window: float, levels: Iterable[float]) -> Terms:
    """``window`` as consecutive slices, longest recorded windows first, newest slice at offset 0."""
    terms = []
    offset, remaining = 0.0, window
    for level in sorted(levels, reverse=True):
        while remaining >= level:
            terms.append((level, offset))
            offset += level
            remaining -= level
    return tuple(terms)


class WindowPlan:
    """Which windows a KPI records and the terms each one sums, dependencies first. Windows that are not a
    whole number of 5m are read from raw series (and cost a raw read each)."""

    def __init__(self, kpi: Kpi):
        self.levels = [float(BASE_RATE_WINDOW)]
        self.recorded: dict[float, Terms] = {}  # window -> terms; raw-read windows have no terms
        for window in alert_windows(kpi):
            if window == BASE_RATE_WINDOW:
                continue
            if is_telescoped(window):
                self._record(window)
            else:
                self.recorded[window] = ()
        self.period: Terms = self._terms(kpi.window) if kpi.is_ratio else ()

    def _record(self, window: float) -> None:
        if window in self.levels:
            return
        self.recorded[window] = self._terms(window)
        self.levels.append(window)

    def _terms(self, window: float) -> Terms:
        while True:
            terms = _decompose(window, self.levels)
            if len(terms) <= MAX_TERMS:
                return terms
            top = max(level for level in self.levels if level <= window)
            whole, rest = divmod(window, top)
            # too many slices of the longest window: record a window 12 times longer; too many small slices
            # for the remainder: record the remainder itself
            self._record(top * MAX_TERMS if whole > MAX_TERMS else rest)


def _by(kpi: Kpi) -> str:
    return f" by ({', '.join(kpi.group_by)})" if kpi.group_by else ""


def _on(kpi: Kpi) -> str:
    """Match a recorded series (all labels) with a raw aggregate (group labels only), keeping the former's."""
    return f"on ({', '.join(kpi.group_by)}) group_left ()"


def _raw(kpi: Kpi, source: Source, window: float) -> str:
    """The per-second rate of a side over ``window``, read from raw series."""
    name = window_name(window)
    if source.selector is not None:
        return f"sum{_by(kpi)} (rate({source.selector.text}[{name}]))"
    return str(source.query).replace("{{window}}", name)


def _gauge_raw(kpi: Kpi, function: str, window: float) -> str:
    """Samples per second of a 0/1 gauge: good ones (sum_over_time) or all (count_over_time)."""
    assert kpi.gauge is not None
    return f"sum{_by(kpi)} ({function}({kpi.gauge.text}[{window_name(window)}])) / {_number(window)}"


def _series(side: str, window: float) -> str:
    return f"kpi:{side}:rate{window_name(window)}"


def _raw_sides(spec: ServiceSpec, kpi: Kpi, window: float) -> list[Rule]:
    """The denominator and numerator rates over ``window`` from raw series: the only rules reading them."""
    identity = identity_selector(spec, kpi)
    labels = _rule_labels(spec, kpi)
    denominator = f"{_series('denominator', window)}{identity}"
    if kpi.gauge is not None:
        return [{"record": _series("denominator", window), "expr": _gauge_raw(kpi, "count_over_time", window),
                 "labels": labels},
                {"record": _series("numerator", window), "expr": _gauge_raw(kpi, "sum_over_time", window),
                 "labels": labels}]
    assert kpi.denominator is not None
    if kpi.bad is not None:
        # good = total - bad; no failed-events series at all means nothing failed
        numerator = f"clamp_min({denominator} - {_on(kpi)} ({_raw(kpi, kpi.bad, window)}), 0)\nor\n{denominator}"
    else:
        assert kpi.numerator is not None
        zero = f"sum{_by(kpi)} (0 * {denominator})"
        if kpi.fills_missing_good_events:
            # Where there is traffic but no good-events series, count zero good events (a total outage must
            # page), but only once good events have been seen within the KPI's window: a selector that never
            # matched is a mistake, reported by KPINumeratorAbsent, and must not page.
            fresh = f"(time() - {LAST_SEEN}{identity} < {_number(kpi.window)})"
            zero = f"({zero} and on () {fresh})"
        numerator = f"{_raw(kpi, kpi.numerator, window)}\nor\n{zero}"
    return [
        {"record": _series("denominator", window), "expr": _raw(kpi, kpi.denominator, window), "labels": labels},
        {"record": _series("numerator", window), "expr": numerator, "labels": labels},
    ]


def _sum_of_terms(series: str, identity: str, terms: Terms, window: float) -> str:
    """The rate over ``window`` from recorded rates of shorter windows at consecutive offsets."""
    if len(terms) == 1:
        return f"{_series(series, terms[0][0])}{identity}"
    uniform = len({level for level, _ in terms}) == 1
    parts = []
    for index, (level, offset) in enumerate(terms):
        shifted = f" offset {window_name(offset)}" if offset else ""
        part = f'label_replace({_series(series, level)}{identity}{shifted}, "kpi_term", "{index}", "", "")'
        parts.append(part if uniform else f"{part} * {_number(level)}")
    divisor = len(terms) if uniform else _number(window)
    return "sum without (kpi_term) (\n    " + "\n  or\n    ".join(parts) + f"\n) / {divisor}"


def _sli_rules(spec: ServiceSpec, kpi: Kpi, plan: WindowPlan) -> list[Rule]:
    identity = identity_selector(spec, kpi)
    labels = _rule_labels(spec, kpi)
    rules = _raw_sides(spec, kpi, BASE_RATE_WINDOW)
    if kpi.fills_missing_good_events:
        rules.append({"record": LAST_SEEN,
                      "expr": f"max(timestamp({_series('numerator', BASE_RATE_WINDOW)}{identity} > 0))"
                              f" or on () {LAST_SEEN}{identity}",
                      "labels": labels})
    for window, terms in plan.recorded.items():
        if not terms:
            rules.extend(_raw_sides(spec, kpi, window))
            continue
        for side in ("denominator", "numerator"):
            rules.append({"record": _series(side, window), "expr": _sum_of_terms(side, identity, terms, window),
                          "labels": labels})
    for window in alert_windows(kpi):
        name = window_name(window)
        rules.append({"record": f"kpi:ratio:rate{name}",
                      "expr": f"{_series('numerator', window)}{identity} / ({_series('denominator', window)}"
                              f"{identity} > 0)",
                      "labels": labels})
    for window in alert_windows(kpi):  # every ratio has a budget, whatever alerts it: dashboards show its burn
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


def _period_rules(spec: ServiceSpec, kpi: Kpi, plan: WindowPlan) -> list[Rule]:
    identity = identity_selector(spec, kpi)
    labels = _rule_labels(spec, kpi)
    window = window_name(kpi.window)
    if not kpi.is_ratio:
        return [
            {"record": "kpi:value:period", "expr": f"avg_over_time(kpi:value{identity}[{window}])", "labels": labels},
            {"record": "kpi:meets_target",
             "expr": f"kpi:value:period{identity} {_compare(kpi)} bool {_number(kpi.target)}", "labels": labels},
        ]
    numerator = _sum_of_terms("numerator", identity, plan.period, kpi.window)
    denominator = _sum_of_terms("denominator", identity, plan.period, kpi.window)
    return [
        {"record": "kpi:ratio:period", "expr": f"(\n{numerator}\n)\n/\n(\n{denominator}\n> 0)", "labels": labels},
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


def _annotations(summary: str, description: str, *extra: dict[str, str]) -> dict[str, str]:
    annotations = {"summary": summary, "description": description}
    for more in extra:
        annotations.update(sorted(more.items()))
    return annotations


def _bad_events(spec: ServiceSpec, kpi: Kpi, window: float) -> str:
    identity = identity_selector(spec, kpi)
    numerator = f"{_series('numerator', window)}{identity}"
    per_second = f"({_series('denominator', window)}{identity} - {numerator})" if kpi.higher_is_better else numerator
    return f"{per_second} * {_number(window)}"


def _burn_alert(spec: ServiceSpec, kpi: Kpi, tier: Tier) -> Rule:
    identity = identity_selector(spec, kpi)
    minimum = kpi.alerting.min_bad_events
    clauses = []
    for window in tier.windows:
        long, short = window_name(window.long), window_name(window.short)
        factor = _number(window.factor)
        clause = f"kpi:burn_rate:rate{long}{identity} > {factor} and kpi:burn_rate:rate{short}{identity} > {factor}"
        if minimum:
            clause += f" and {_bad_events(spec, kpi, window.long)} >= {minimum}"
        clauses.append(f"({clause})")
    windows = ", ".join(f"{_number(w.factor)}x over {window_name(w.long)} and {window_name(w.short)}"
                        for w in tier.windows)
    guard = f" Needs at least {minimum} failed events in the long window." if minimum else ""
    period = f"kpi:ratio:period{identity}"
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
    rule["labels"] = _rule_labels(spec, kpi, {**kpi.alerting.labels, **tier.labels, "kpi_severity": tier.severity})
    rule["annotations"] = _annotations(summary, description, kpi.alerting.annotations, tier.annotations)
    return rule


def _escape_template(query: str) -> str:
    return query.replace('"', '\\"')


def _threshold_alert(spec: ServiceSpec, kpi: Kpi) -> Rule:
    identity = identity_selector(spec, kpi)
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
    rule: Rule = {"alert": main_alert_name(kpi), "expr": expr}
    if alerting.for_:
        rule["for"] = window_name(alerting.for_)
    severity = {"kpi_severity": alerting.severity} if alerting.severity else {}
    rule["labels"] = _rule_labels(spec, kpi, {**alerting.labels, **severity})
    rule["annotations"] = _annotations(summary, description, alerting.annotations)
    return rule


def _no_data_alerts(spec: ServiceSpec, kpi: Kpi) -> list[Rule]:
    no_data = kpi.alerting.no_data
    assert no_data is not None
    identity = identity_selector(spec, kpi)
    labels = _rule_labels(spec, kpi, {**no_data.labels, "kpi_severity": "ticket"})
    absent = f"kpi:denominator:rate5m{identity}" if kpi.is_ratio else f"kpi:value{identity}"
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
            "alert": "KPINoTraffic",
            "expr": f"sum(kpi:denominator:rate5m{identity}) == 0",
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
    for_ = no_data.for_ if no_data else 600.0
    selector = kpi.numerator.text.replace("{{window}}", "5m")  # {{ }} would be a template action
    return {
        "alert": NUMERATOR_ABSENT_ALERT,
        "expr": (f"count(kpi:denominator:rate5m{identity} > 0)"
                 f" unless on () count(kpi:numerator:rate5m{identity})"),
        "for": window_name(for_),
        "labels": _rule_labels(spec, kpi, {**(no_data.labels if no_data else {}), "kpi_severity": "ticket"}),
        "annotations": _annotations(
            f"KPI {kpi.name} of {spec.service}: its good events ({selector}) have not been counted in the last "
            f"{window_name(kpi.window)} while its denominator counts traffic",
            "Most likely a mistake in the spec: a typo in the metric or a label, a renamed metric, or a histogram "
            "bound that does not exist. Until good events are counted the ratio is not computed (a mistake must "
            "not page); once they have been, their absence counts as zero good events and pages.",
            {"selector": selector}),
    }


def _alert_rules(spec: ServiceSpec, kpi: Kpi) -> list[Rule]:
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


def compile_groups(spec: ServiceSpec, interval: str | None = None) -> list[dict[str, Any]]:
    """The rule groups of one service: rates, windows and alerts; then the period judgements.
    ``interval`` overrides both groups' evaluation intervals (tests and demos use seconds)."""
    sli: list[Rule] = []
    period: list[Rule] = []
    alerts: list[Rule] = []
    for kpi in sorted(spec.kpis, key=lambda k: k.name):
        plan = WindowPlan(kpi)
        if kpi.is_ratio:
            sli.extend(_sli_rules(spec, kpi, plan))
        else:
            sli.append({"record": "kpi:value", "expr": kpi.value, "labels": _rule_labels(spec, kpi)})
        sli.extend(_constant_rules(spec, kpi))
        period.extend(_period_rules(spec, kpi, plan))
        alerts.extend(_alert_rules(spec, kpi))
    # Alerts share the group of the rates they read: rules in a group run in order, so an alert always sees
    # this evaluation's burn rates, never the previous one's (groups run concurrently, in no set order).
    return [
        {"name": f"kpi-{spec.service}", "interval": interval or SLI_GROUP_INTERVAL, "rules": sli + alerts},
        {"name": f"kpi-{spec.service}-period", "interval": interval or PERIOD_GROUP_INTERVAL, "rules": period},
    ]


def raw_reading_rules(groups: list[dict[str, Any]], metrics: Iterable[str]) -> list[str]:
    """The names of the rules whose expressions read any of ``metrics`` directly (for cost reports)."""
    names = tuple(metrics)
    return [rule.get("record") or rule["alert"] for group in groups for rule in group["rules"]
            if any(name in rule["expr"] for name in names)]


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
