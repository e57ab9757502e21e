"""Writes promtool unit tests for compiled KPI rules, and runs promtool.

For each ratio KPI whose sides are selectors, synthetic series are made that satisfy the selectors' matchers:
counters with a constant share of failed events, or for a 0/1 gauge one series averaging that share of
zeros. Per burn window: just above its factor the tier fires, just below it the tier fires only if another
window of the tier has a lower factor. Zero traffic gives no ratio and no burn alert; missing metrics fire
the no-data alert after its `for`. Where missing good events count as zero once seen: a numerator that never
matched does not page (KPINumeratorAbsent instead), one that vanished after counting does. With
`min_bad_events`, a burst below it does not page and one above it does.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.kpi.conventions import (
    NUMERATOR_ABSENT_ALERT,
    SEVERITY_LABEL,
    identity_labels,
    identity_selector,
    labels_selector,
    main_alert_name,
    ratio_rate,
    window_name,
)
from agent.kpi.model import BurnWindow, Kpi, Matcher, ServiceSpec, Tier
from agent.kpi.promtool import run_unit_tests
from agent.kpi.render import render_prometheus, to_yaml
from agent.kpi.windows import BASE_RATE_WINDOW, DEFAULT_NO_DATA_FOR

EVAL_MINUTES = 20  # zero-traffic and threshold cases: steady inputs, judged once the 5m rate exists
EVENTS_PER_MINUTE = 6000
ABOVE, BELOW = 1.1, 0.9
STEP = 60.0  # seconds between input samples: the 5m base rate needs several per 5m


def _candidates(matchers: list[Matcher]) -> list[str]:
    """Label values worth trying against these matchers: literals, and simple instances of the regexes."""
    values = ["200", "500", "ok", "x"]
    for matcher in matchers:
        values.append(matcher.value)
        if matcher.op in ("=~", "!~"):
            for alternative in matcher.value.split("|"):
                instance = re.sub(r"\\d|\.", "0", alternative.strip("^$()"))
                values.append(re.sub(r"[+*?]", "", instance))
                values.append(alternative.replace("\\", ""))
                values.append(alternative)
    return list(dict.fromkeys(values))


def _satisfy(required: list[Matcher], violated: list[Matcher]) -> dict[str, str] | None:
    """Label values matching every ``required`` matcher and failing at least one of ``violated`` (if any)."""
    labels = sorted({m.label for m in required + violated})
    options = {}
    for label in labels:
        mine = [m for m in required + violated if m.label == label]
        options[label] = _candidates(mine)
    for combo in itertools.product(*(options[label] for label in labels)):
        chosen = dict(zip(labels, combo, strict=True))
        if chosen.get("__name__"):
            continue
        if not all(m.matches(chosen[m.label]) for m in required):
            continue
        if violated and all(m.matches(chosen[m.label]) for m in violated):
            continue
        return {k: v for k, v in chosen.items() if v != "" or any(m.label == k for m in required)}
    return None


@dataclass
class _Series:
    good: list[str] = field(default_factory=list)  # counters incremented by good events
    bad: list[str] = field(default_factory=list)  # counters incremented by failed events
    total: list[str] = field(default_factory=list)  # counters incremented by all events
    gauge: list[str] = field(default_factory=list)  # 0/1 gauges: their mean is the good share


def _series_text(metric: str, labels: dict[str, str]) -> str:
    return metric + (labels_selector(dict(sorted(labels.items()))) if labels else "")


def _synthesize(kpi: Kpi) -> _Series | None:
    """Series that the KPI's selectors count, or None when its sides are raw queries or unsatisfiable."""
    group = {label: "test" for label in kpi.group_by}
    if kpi.gauge is not None:
        labels = _satisfy(list(kpi.gauge.matchers), [])
        return None if labels is None else _Series(gauge=[_series_text(kpi.gauge.metric, {**group, **labels})])
    counted = kpi.bad or kpi.numerator
    if counted is None or counted.selector is None or kpi.denominator is None or kpi.denominator.selector is None:
        return None
    numerator, denominator = counted.selector, kpi.denominator.selector
    counts_bad = kpi.bad is not None or not kpi.higher_is_better
    num_m, den_m = list(numerator.matchers), list(denominator.matchers)
    if numerator.metric == denominator.metric:
        counted_labels = _satisfy(den_m + num_m, [])
        other_labels = _satisfy(den_m, num_m)
        if counted_labels is None or other_labels is None:
            return None
        counted_series = [_series_text(numerator.metric, {**group, **counted_labels})]
        other_series = [_series_text(numerator.metric, {**group, **other_labels})]
        return _Series(bad=counted_series, good=other_series) if counts_bad else \
            _Series(good=counted_series, bad=other_series)
    num_labels, den_labels = _satisfy(num_m, []), _satisfy(den_m, [])
    if num_labels is None or den_labels is None:
        return None
    counted_series = [_series_text(numerator.metric, {**group, **num_labels})]
    total = [_series_text(denominator.metric, {**group, **den_labels})]
    return _Series(bad=counted_series, total=total) if counts_bad else _Series(good=counted_series, total=total)


def _exact(value: float) -> str:
    """A value in promtool's notation without losing digits (``:g`` would round 25925993)."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _input(series: _Series, segments: list[tuple[float, int]], rate: float = EVENTS_PER_MINUTE,
           step: float = STEP, omit: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """input_series for consecutive segments of (failed share, steps) at ``rate`` events per minute: counters
    continue where the previous segment left off; gauges average the good share. ``omit`` lists kinds of
    series (good, bad, total, gauge) left out entirely."""
    per_step = rate * step / 60
    result = []
    for kind, names in (("good", series.good), ("bad", series.bad), ("total", series.total),
                        ("gauge", series.gauge)):
        if kind in omit:
            continue
        for name in names:
            parts = ["1" if kind == "gauge" else "0"]
            current = 0.0
            for share, steps in segments:
                if kind == "gauge":
                    parts.append(f"{_exact(round(1 - share, 9))}x{steps - 1}")
                    continue
                failed = round(per_step * share)
                increment = {"good": per_step - failed, "bad": failed, "total": per_step}[kind]
                parts.append(f"{_exact(current + increment)}+{_exact(increment)}x{steps - 1}")
                current += increment * steps
            result.append({"series": name, "values": " ".join(parts)})
    return result


def _alerts_query(spec: ServiceSpec, kpi: Kpi, alertname: str, extra: dict[str, str] | None = None) -> str:
    labels = {"alertname": alertname, "alertstate": "firing", **identity_labels(spec, kpi), **(extra or {})}
    return f"count(ALERTS{labels_selector(labels)})"


def _expect(query: str, fires: bool, eval_time: str = f"{EVAL_MINUTES}m") -> dict[str, Any]:
    return {"expr": query, "eval_time": eval_time, "exp_samples": [{"value": 1}] if fires else []}


def kpi_tests(spec: ServiceSpec, kpi: Kpi) -> tuple[list[dict[str, Any]], str | None]:
    """promtool test cases for one KPI, or a note saying why none could be made."""
    if not kpi.is_ratio:
        return [], f"{kpi.name}: value KPIs have no synthetic traffic to generate; test them with your own series"
    series = _synthesize(kpi)
    if series is None:
        return [], (f"{kpi.name}: no label values satisfy its selectors (or it uses raw queries); "
                    "only `promtool check rules` covers it")
    cases: list[dict[str, Any]] = []
    if kpi.alerting.strategy == "burn_rate":
        for tier in kpi.alerting.tiers:
            for window in tier.windows:
                for multiplier in (ABOVE, BELOW):
                    case = _burn_case(spec, kpi, tier, window, window.factor * multiplier, series)
                    cases.append({**case, "evaluation_interval": _evaluation_interval(tier)})
    if kpi.alerting.strategy == "threshold":
        cases.extend(_threshold_cases(spec, kpi, series))
    if not series.gauge:
        identity = identity_selector(spec, kpi)
        cases.append({
            "name": f"{kpi.name}: zero traffic gives no ratio and no alert",
            "interval": "1m",
            "input_series": _input(series, [(0.5, EVAL_MINUTES + 5)], rate=0),
            "promql_expr_test": [
                {"expr": f"{ratio_rate(BASE_RATE_WINDOW)}{identity}", "eval_time": f"{EVAL_MINUTES}m",
                 "exp_samples": []},
                _expect(_alerts_query(spec, kpi, main_alert_name(kpi)), False),
            ],
        })
    no_data = kpi.alerting.no_data
    if no_data is not None and kpi.alerting.strategy != "none":
        minutes = int(no_data.for_ / 60)
        cases.append({
            "name": f"{kpi.name}: missing metrics fire {no_data.name} after {window_name(no_data.for_)}, not before",
            "interval": "1m",
            "input_series": [],
            "promql_expr_test": [
                _expect(_alerts_query(spec, kpi, no_data.name), False, f"{max(0, minutes - 2)}m"),
                _expect(_alerts_query(spec, kpi, no_data.name), True, f"{minutes + 2}m"),
            ],
        })
    if kpi.fills_missing_good_events and kpi.alerting.strategy != "none":
        cases.extend(_missing_good_events_cases(spec, kpi, series))
    if kpi.alerting.min_bad_events and kpi.alerting.tiers and kpi.alerting.tiers[0].severity == "page":
        cases.extend(_low_traffic_cases(spec, kpi, series))
    return cases, None


def _threshold_cases(spec: ServiceSpec, kpi: Kpi, series: _Series) -> list[dict[str, Any]]:
    cases = []
    for multiplier in (ABOVE, BELOW):
        share = _threshold_share(kpi, multiplier)
        if share is None:
            continue
        minutes = int((kpi.alerting.window + kpi.alerting.for_) / 60) + 10
        misses = (multiplier == ABOVE) != kpi.higher_is_better
        cases.append({
            "name": f"{kpi.name}: threshold, ratio {multiplier:g}x the target",
            "interval": "1m",
            "input_series": _input(series, [(share, minutes)]),
            "promql_expr_test": [_expect(_alerts_query(spec, kpi, main_alert_name(kpi)), misses, f"{minutes - 1}m")],
        })
    return cases


def _missing_good_events_cases(spec: ServiceSpec, kpi: Kpi, series: _Series) -> list[dict[str, Any]]:
    """A numerator that never matched is a mistake (ticket, no page); one that vanished is an outage."""
    absent_for = int((kpi.alerting.no_data.for_ if kpi.alerting.no_data else DEFAULT_NO_DATA_FOR) / 60)
    minutes = absent_for + 10
    main = main_alert_name(kpi)
    cases: list[dict[str, Any]] = [{
        "name": f"{kpi.name}: good events never counted (a typo in the numerator): no {main}, "
                f"{NUMERATOR_ABSENT_ALERT} after {absent_for}m",
        "interval": "1m",
        "input_series": _input(series, [(1.0, minutes)], omit=("good",)),
        "promql_expr_test": [
            _expect(_alerts_query(spec, kpi, main), False, f"{minutes - 1}m"),
            _expect(_alerts_query(spec, kpi, NUMERATOR_ABSENT_ALERT), False, f"{absent_for - 2}m"),
            _expect(_alerts_query(spec, kpi, NUMERATOR_ABSENT_ALERT), True, f"{absent_for + 3}m"),
        ],
    }]
    page = next((t for t in kpi.alerting.tiers if t.severity == "page"), None)
    if kpi.alerting.strategy == "burn_rate" and page is not None:
        # healthy, then every request fails and the good-events series disappear (the exporter restarted):
        # missing good events count as zero, so this pages like any total outage
        healthy = int(max(w.long for w in page.windows) / 60) + 10
        failing = int(page.windows[0].long * page.windows[0].factor * kpi.error_budget / 60) + 12
        good = series.good[0]
        inputs = [s for s in _input(series, [(0.0, healthy), (1.0, failing)]) if s["series"] != good]
        inputs.append(next(s for s in _input(series, [(0.0, healthy)]) if s["series"] == good))
        cases.append({
            "name": f"{kpi.name}: good-events series vanish during a total outage: still pages",
            "interval": "1m",
            "input_series": inputs,
            "promql_expr_test": [
                _expect(_alerts_query(spec, kpi, main, {SEVERITY_LABEL: "page"}), True, f"{healthy + failing}m"),
                _expect(_alerts_query(spec, kpi, NUMERATOR_ABSENT_ALERT), False, f"{healthy + failing}m"),
            ],
            "evaluation_interval": "1m",
        })
    return cases


def _low_traffic_cases(spec: ServiceSpec, kpi: Kpi, series: _Series) -> list[dict[str, Any]]:
    """Good events once, a quiet gap longer than the page tier's windows, then a burst in which every event
    fails: fewer failures than min_bad_events do not page, twice as many do."""
    minimum = kpi.alerting.min_bad_events
    page = kpi.alerting.tiers[0]
    quiet = int(max(w.long for w in page.windows) / 60) + 10
    cases = []
    for failures, fires in ((minimum // 2, False), (2 * minimum, True)):
        if failures == 0:
            continue
        cases.append({
            "name": f"{kpi.name}: {failures} failed events after a quiet night, min_bad_events {minimum}: "
                    f"{'pages' if fires else 'no page'}",
            "interval": "1m",
            "input_series": _low_traffic_input(series, quiet, failures),
            "promql_expr_test": [_expect(_alerts_query(spec, kpi, main_alert_name(kpi), {SEVERITY_LABEL: "page"}),
                                         fires, f"{5 + quiet + failures}m")],
            "evaluation_interval": "1m",
        })
    return cases


def _low_traffic_input(series: _Series, quiet: int, failures: int) -> list[dict[str, str]]:
    """One good event a minute for 5m, ``quiet`` minutes without traffic, then one failed event a minute."""
    counts = {"good": [min(i, 5) for i in range(6 + quiet + failures)]}
    counts["bad"] = [0] * (6 + quiet) + list(range(1, failures + 1))
    counts["total"] = [g + b for g, b in zip(counts["good"], counts["bad"], strict=True)]
    counts["gauge"] = [1] * (6 + quiet) + [0] * failures
    result = []
    for kind, names in (("good", series.good), ("bad", series.bad), ("total", series.total),
                        ("gauge", series.gauge)):
        for name in names:
            result.append({"series": name, "values": " ".join(str(v) for v in counts[kind])})
    return result


def _tier_fires(tier: Tier, burn: float, bad_seconds: float) -> bool:
    """Whether the tier fires after ``bad_seconds`` of burning at ``burn`` following a healthy history."""
    return any(burn * min(1.0, bad_seconds / w.long) > w.factor and burn * min(1.0, bad_seconds / w.short) > w.factor
               for w in tier.windows)


def _burn_case(spec: ServiceSpec, kpi: Kpi, tier: Tier, window: BurnWindow, burn: float,
               series: _Series) -> dict[str, Any]:
    """Healthy traffic for the tier's longest window, then ``burn``; judged one long window (plus the 5m the
    base rate needs to fill) after the burn starts, when this window pair sees exactly ``burn``."""
    history = max(w.long for w in tier.windows)
    elapsed = window.long + BASE_RATE_WINDOW
    steps_healthy, steps_bad = int(history // STEP), int((elapsed + 2 * STEP) // STEP)
    share = min(1.0, burn * kpi.error_budget)
    fires = _tier_fires(tier, burn, elapsed)
    return {
        "name": f"{kpi.name}: {tier.severity} tier, burn {burn:g}x for {window_name(elapsed)} against "
                f"{window.factor:g}x over {window_name(window.long)}/{window_name(window.short)}",
        "interval": window_name(STEP),
        "input_series": _input(series, [(0.0, steps_healthy), (share, steps_bad)]),
        "promql_expr_test": [_expect(_alerts_query(spec, kpi, main_alert_name(kpi), {SEVERITY_LABEL: tier.severity}),
                                     fires, window_name(history + elapsed))],
    }


def _evaluation_interval(tier: Tier) -> str:
    """Rules are evaluated every minute for windows up to hours, every 5m for days-long ones: promtool's run
    time grows with evaluations x window length. It must divide 5m: windows are sums of recorded 5m rates."""
    return "5m" if min(w.short for w in tier.windows) >= 3600 else "1m"


def _threshold_share(kpi: Kpi, multiplier: float) -> float | None:
    """The bad-event share that puts the ratio at ``multiplier`` x the target (None if out of range)."""
    ratio = kpi.target * multiplier
    if not 0 < ratio < 1:
        return None
    return 1 - ratio if kpi.higher_is_better else ratio


def kpi_rule_file(spec: ServiceSpec, kpi: Kpi) -> str:
    return f"{spec.service}.{kpi.name}.rules.yml"


def generate_tests(spec: ServiceSpec, rule_file: str | None = None) -> tuple[dict[str, str], list[str]]:
    """promtool test files (file name -> YAML text) and notes on KPIs no test could be made for. Each KPI's
    tests load ``rule_file`` if given, else that KPI's own rules (kpi_rule_file): the same rules as in the
    service's file, without the other KPIs' that promtool would otherwise evaluate at every step for nothing."""
    files: dict[str, str] = {}
    notes = []
    for kpi in sorted(spec.kpis, key=lambda k: k.name):
        kpi_cases, note = kpi_tests(spec, kpi)
        if note:
            notes.append(note)
        by_interval: dict[str, list[dict[str, Any]]] = {}
        for case in kpi_cases:
            by_interval.setdefault(case.pop("evaluation_interval", "1m"), []).append(case)
        for interval, cases in sorted(by_interval.items()):
            document = {"rule_files": [rule_file or kpi_rule_file(spec, kpi)], "evaluation_interval": interval,
                        "tests": cases}
            files[f"{spec.service}.{kpi.name}.eval{interval}.test.yml"] = to_yaml(document)
    return files, notes


def write_and_run(spec: ServiceSpec, directory: Path,
                  source_name: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Writes each KPI's rules and tests into ``directory`` and runs ``promtool test rules`` on them."""
    directory.mkdir(parents=True, exist_ok=True)
    for kpi in spec.kpis:
        alone = ServiceSpec(spec.file, spec.service, (kpi,), spec.labels)
        (directory / kpi_rule_file(spec, kpi)).write_text(render_prometheus(alone, source_name))
    files, notes = generate_tests(spec)
    for name, text in files.items():
        (directory / name).write_text(text)
    if not files:
        return subprocess.CompletedProcess([], 0, "no tests to run\n", ""), notes
    return run_unit_tests(directory, list(files)), notes
