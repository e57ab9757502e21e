"""Compiles a ServiceSpec into Prometheus rule groups. Pure: the same spec gives the same rules.

Raw series are read once per KPI and evaluation, as 5m rates; every longer window is telescoped from
recorded rates (agent.kpi.windows decides which windows and which terms). Terms are summed with ``or`` over
distinct ``kpi_term`` labels, so a gap in the past (Prometheus down) leaves the rest of the window counted
instead of blanking it. Alerts are agent.kpi.alerts; names are agent.kpi.conventions; files are
agent.kpi.render.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.config.values import duration
from agent.kpi import conventions as names
from agent.kpi.alerts import alert_rules, selector_alert
from agent.kpi.conventions import DENOMINATOR, NUMERATOR, identity_selector, rule_labels, side_rate, window_name
from agent.kpi.model import Events, Kpi, ServiceSpec
from agent.kpi.promql import number
from agent.kpi.windows import BASE_RATE_WINDOW, Terms, WindowPlan, alert_windows

SLI_GROUP_INTERVAL = "30s"
PERIOD_GROUP_INTERVAL = "5m"  # the period judgements change slowly: no need to evaluate them often

Rule = dict[str, Any]
Reach = Callable[[float], float | None]  # a term's offset -> how far back from it a sample may be, None: no limit


def _by(kpi: Kpi) -> str:
    return f" by ({', '.join(kpi.group_by)})" if kpi.group_by else ""


def _on(kpi: Kpi) -> str:
    """Match a recorded series (all labels) with a raw aggregate (group labels only), keeping the former's."""
    return f"on ({', '.join(kpi.group_by)}) group_left ()"


def _raw(kpi: Kpi, events: Events, window: float) -> str:
    """The per-second rate of a side's events over ``window``, read from raw series."""
    name = window_name(window)
    if events.selector is not None:
        return f"sum{_by(kpi)} (rate({events.selector.text}[{name}]))"
    return str(events.query).replace("{{window}}", name)


def _gauge_raw(kpi: Kpi, function: str, window: float) -> str:
    """Samples per second of a 0/1 gauge: good ones (sum_over_time) or all (count_over_time)."""
    assert kpi.gauge is not None
    return f"sum{_by(kpi)} ({function}({kpi.gauge.text}[{window_name(window)}])) / {number(window)}"


def _raw_sides(spec: ServiceSpec, kpi: Kpi, window: float) -> list[Rule]:
    """The denominator and numerator rates over ``window`` from raw series: the only rules reading them."""
    identity = identity_selector(spec, kpi)
    labels = rule_labels(spec, kpi)
    numerator_name, denominator_name = side_rate(NUMERATOR, window), side_rate(DENOMINATOR, window)
    if kpi.gauge is not None:
        return [{"record": denominator_name, "expr": _gauge_raw(kpi, "count_over_time", window), "labels": labels},
                {"record": numerator_name, "expr": _gauge_raw(kpi, "sum_over_time", window), "labels": labels}]
    assert kpi.denominator is not None
    denominator = f"{denominator_name}{identity}"
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
            fresh = f"(time() - {names.NUMERATOR_LAST_SEEN}{identity} < {number(kpi.window)})"
            zero = f"({zero} and on () {fresh})"
        numerator = f"{_raw(kpi, kpi.numerator, window)}\nor\n{zero}"
    return [
        {"record": denominator_name, "expr": _raw(kpi, kpi.denominator, window), "labels": labels},
        {"record": numerator_name, "expr": numerator, "labels": labels},
    ]


def _term(side: str, level: float, identity: str, offset: float, reach: float | None) -> str:
    """One slice of a telescoped window: the rate over ``level`` recorded ``offset`` ago. With ``reach``, only a
    sample recorded within ``reach`` before that instant counts: Prometheus' 5m lookback would otherwise take an
    older one when the evaluation at the slot was missed (Prometheus down, a group too slow), and count a
    slice outside the window (a shifted slice) instead of leaving the slot out."""
    series = f"{side_rate(side, level)}{identity}"
    shifted = f" offset {window_name(offset)}" if offset else ""
    if reach is None:
        return f"{series}{shifted}"
    return f"last_over_time({series}[{window_name(reach)}]{shifted})"


def _sum_of_terms(side: str, identity: str, terms: Terms, window: float, reach: Reach) -> str:
    """The rate over ``window`` from recorded rates of shorter windows at consecutive offsets."""
    if len(terms) == 1:
        return _term(side, terms[0][0], identity, terms[0][1], reach(terms[0][1]))
    uniform = len({level for level, _ in terms}) == 1
    parts = []
    for index, (level, offset) in enumerate(terms):
        part = f'label_replace({_term(side, level, identity, offset, reach(offset))}, "{names.TERM_LABEL}", ' \
               f'"{index}", "", "")'
        parts.append(part if uniform else f"{part} * {number(level)}")
    divisor = len(terms) if uniform else number(window)
    return f"sum without ({names.TERM_LABEL}) (\n    " + "\n  or\n    ".join(parts) + f"\n) / {divisor}"


def _same_group_reach(interval: float) -> Reach:
    """Terms read by the group that records them: its evaluations share one grid, so the one at ``offset``
    (a whole number of intervals) ago is the only sample less than an interval old; the current term was
    recorded earlier in this very evaluation."""
    return lambda offset: interval - 0.001 if offset else None


def _other_group_reach(interval: float) -> Reach:
    """Terms read by the period group, whose evaluations fall between the other group's: the latest sample
    within one of its intervals. The current term takes the latest sample, as any lookup does: the other
    group's evaluation of this very moment may still be running (or, in promtool, come after)."""
    return lambda offset: interval if offset else None


def _sli_rules(spec: ServiceSpec, kpi: Kpi, plan: WindowPlan, interval: float) -> list[Rule]:
    identity = identity_selector(spec, kpi)
    labels = rule_labels(spec, kpi)
    rules = _raw_sides(spec, kpi, BASE_RATE_WINDOW)
    if kpi.fills_missing_good_events:
        rules.append({"record": names.NUMERATOR_LAST_SEEN,
                      "expr": f"max(timestamp({side_rate(NUMERATOR, BASE_RATE_WINDOW)}{identity} > 0))"
                              f" or on () {names.NUMERATOR_LAST_SEEN}{identity}",
                      "labels": labels})
    for window, terms in plan.recorded.items():
        if not terms:
            rules.extend(_raw_sides(spec, kpi, window))
            continue
        for side in (DENOMINATOR, NUMERATOR):
            rules.append({"record": side_rate(side, window),
                          "expr": _sum_of_terms(side, identity, terms, window, _same_group_reach(interval)),
                          "labels": labels})
    for window in alert_windows(kpi):
        rules.append({"record": names.ratio_rate(window),
                      "expr": f"{side_rate(NUMERATOR, window)}{identity} / ({side_rate(DENOMINATOR, window)}"
                              f"{identity} > 0)",
                      "labels": labels})
    for window in alert_windows(kpi):  # every ratio has a budget, whatever alerts it: dashboards show its burn
        rules.append({"record": names.burn_rate(window),
                      "expr": f"{_bad(f'{names.ratio_rate(window)}{identity}', kpi)} / {number(kpi.error_budget)}",
                      "labels": labels})
    return rules


def _bad(ratio: str, kpi: Kpi) -> str:
    return f"(1 - {ratio})" if kpi.higher_is_better else ratio


def _constant_rules(spec: ServiceSpec, kpi: Kpi) -> list[Rule]:
    labels = rule_labels(spec, kpi)
    # an empty field leaves a label of the same name alone: the service's owner label when the KPI names none
    described = {"description": kpi.description, "objective": kpi.objective, "owner": kpi.owner}
    info = rule_labels(spec, kpi, {**{k: v for k, v in described.items() if v},
                                   "higher_is_better": str(kpi.higher_is_better).lower()})
    rules = [
        {"record": names.TARGET, "expr": f"vector({number(kpi.target)})", "labels": labels},
        {"record": names.WINDOW_SECONDS, "expr": f"vector({number(kpi.window)})", "labels": labels},
    ]
    if kpi.is_ratio:
        rules.append({"record": names.ERROR_BUDGET, "expr": f"vector({number(kpi.error_budget)})", "labels": labels})
    rules.append({"record": names.INFO, "expr": "vector(1)", "labels": info})
    return rules


def _compare(kpi: Kpi) -> str:
    return ">=" if kpi.higher_is_better else "<="


def _period_rules(spec: ServiceSpec, kpi: Kpi, plan: WindowPlan, interval: float) -> list[Rule]:
    identity = identity_selector(spec, kpi)
    labels = rule_labels(spec, kpi)
    if not kpi.is_ratio:
        return [
            {"record": names.VALUE_PERIOD, "expr": f"avg_over_time({names.VALUE}{identity}[{window_name(kpi.window)}])",
             "labels": labels},
            {"record": names.MEETS_TARGET,
             "expr": f"{names.VALUE_PERIOD}{identity} {_compare(kpi)} bool {number(kpi.target)}", "labels": labels},
        ]
    reach = _other_group_reach(interval)
    numerator = _sum_of_terms(NUMERATOR, identity, plan.period, kpi.window, reach)
    denominator = _sum_of_terms(DENOMINATOR, identity, plan.period, kpi.window, reach)
    return [
        {"record": names.RATIO_PERIOD, "expr": f"(\n{numerator}\n)\n/\n(\n{denominator}\n> 0)", "labels": labels},
        {"record": names.MEETS_TARGET,
         "expr": f"{names.RATIO_PERIOD}{identity} {_compare(kpi)} bool {number(kpi.target)}", "labels": labels},
        {"record": names.BUDGET_REMAINING,
         "expr": f"1 - {_bad(f'{names.RATIO_PERIOD}{identity}', kpi)} / {number(kpi.error_budget)}",
         "labels": labels},
    ]


def compile_groups(spec: ServiceSpec, interval: str | None = None) -> list[dict[str, Any]]:
    """The rule groups of one service: rates, windows and alerts; then the period judgements.
    ``interval`` overrides both groups' evaluation intervals (tests and demos use seconds)."""
    sli: list[Rule] = []
    period: list[Rule] = []
    alerts: list[Rule] = []
    checks: list[Rule] = []  # judged as rarely as the period: they count every series of a metric
    every = duration(interval or SLI_GROUP_INTERVAL)  # how often the rates are recorded
    for kpi in sorted(spec.kpis, key=lambda k: k.name):
        plan = WindowPlan(kpi)
        if kpi.is_ratio:
            sli.extend(_sli_rules(spec, kpi, plan, every))
        else:
            sli.append({"record": names.VALUE, "expr": kpi.value, "labels": rule_labels(spec, kpi)})
        sli.extend(_constant_rules(spec, kpi))
        period.extend(_period_rules(spec, kpi, plan, every))
        alerts.extend(alert_rules(spec, kpi))
        checks.extend(rule for rule in (selector_alert(spec, kpi),) if rule)
    # Alerts share the group of the rates they read: rules in a group run in order, so an alert always sees
    # this evaluation's burn rates, never the previous one's (groups run concurrently, in no set order).
    return [
        {"name": names.rule_group(spec.service), "interval": interval or SLI_GROUP_INTERVAL, "rules": sli + alerts},
        {"name": names.period_rule_group(spec.service), "interval": interval or PERIOD_GROUP_INTERVAL,
         "rules": period + checks},
    ]
