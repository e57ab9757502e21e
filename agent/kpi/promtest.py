"""Generates promtool unit tests for compiled KPI rules: `kpi-agent rules test`.

For each ratio KPI whose sides are selectors, synthetic series (agent.kpi.synthetic) satisfy the selectors'
matchers. Per burn window: just above its factor the tier fires, just below it the tier fires only if another
window of the tier has a lower factor. Zero traffic gives no ratio and no burn alert; missing metrics fire
the no-data alert after its `for`. Where missing good events count as zero once seen: a numerator that never
matched does not page (KPINumeratorAbsent instead), one that vanished after counting does. With
`min_bad_events`, a burst below it does not page and one above it does.

promtool evaluates every rule at every step, so a test costs (rules x steps). Each test loads only its KPI's
rule group of rates and alerts (the period group's judgements feed no alert), rules are evaluated every 5m
where every window and `for` of the tier is whole 5m (the telescoped windows read 5m offsets; 1m otherwise),
and the healthy history before a burn is only as long as the tier's longest window needs. Each case is its
own file, so cases run in parallel and report as they finish.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.kpi.compiler import compile_groups
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
from agent.kpi.model import BurnWindow, Kpi, ServiceSpec, Tier
from agent.kpi.render import header, to_yaml
from agent.kpi.synthetic import STEP, Series, input_series, low_traffic_input, synthesize
from agent.kpi.windows import BASE_RATE_WINDOW, DEFAULT_NO_DATA_FOR

EVAL_MINUTES = 20  # zero-traffic and threshold cases: steady inputs, judged once the 5m rate exists
ABOVE, BELOW = 1.1, 0.9
MINUTE = 60.0


@dataclass
class Case:
    """One promtool test case and the evaluation interval it runs at."""

    name: str
    test: dict[str, Any]
    evaluation_interval: float = MINUTE

    @property
    def evaluations(self) -> int:
        """How many times promtool evaluates the rules for it: what it costs."""
        last = max(_seconds(expect["eval_time"]) for expect in self.test["promql_expr_test"])
        return int(last // self.evaluation_interval)


def _seconds(text: str) -> float:
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    total, number = 0.0, ""
    for char in text:
        if char.isdigit():
            number += char
        else:
            total += int(number) * units[char]
            number = ""
    return total


def _alerts_query(spec: ServiceSpec, kpi: Kpi, alertname: str, extra: dict[str, str] | None = None) -> str:
    labels = {"alertname": alertname, "alertstate": "firing", **identity_labels(spec, kpi), **(extra or {})}
    return f"count(ALERTS{labels_selector(labels)})"


def _expect(query: str, fires: bool, eval_time: str = f"{EVAL_MINUTES}m") -> dict[str, Any]:
    return {"expr": query, "eval_time": eval_time, "exp_samples": [{"value": 1}] if fires else []}


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m"


def kpi_cases(spec: ServiceSpec, kpi: Kpi) -> tuple[list[Case], str | None]:
    """promtool test cases for one KPI, or a note saying why none could be made."""
    if not kpi.is_ratio:
        return [], f"{kpi.name}: value KPIs have no synthetic traffic to generate; test them with your own series"
    series = synthesize(kpi)
    if series is None:
        return [], (f"{kpi.name}: no label values satisfy its selectors (or it uses raw queries); "
                    "only `promtool check rules` covers it")
    cases: list[Case] = []
    if kpi.alerting.strategy == "burn_rate":
        for tier in kpi.alerting.tiers:
            for window in tier.windows:
                cases.extend(_burn_case(spec, kpi, tier, window, window.factor * m, series) for m in (ABOVE, BELOW))
    if kpi.alerting.strategy == "threshold":
        cases.extend(_threshold_cases(spec, kpi, series))
    if not series.gauge:
        cases.append(_zero_traffic_case(spec, kpi, series))
    no_data = kpi.alerting.no_data
    if no_data is not None and kpi.alerting.strategy != "none":
        minutes = int(no_data.for_ / 60)
        cases.append(Case(f"{kpi.name}: missing metrics fire {no_data.name} after {window_name(no_data.for_)}, "
                          "not before", {
                              "interval": "1m",
                              "input_series": [],
                              "promql_expr_test": [
                                  _expect(_alerts_query(spec, kpi, no_data.name), False, f"{max(0, minutes - 2)}m"),
                                  _expect(_alerts_query(spec, kpi, no_data.name), True, f"{minutes + 2}m"),
                              ]}))
    if kpi.fills_missing_good_events and kpi.alerting.strategy != "none":
        cases.extend(_missing_good_events_cases(spec, kpi, series))
    if kpi.alerting.min_bad_events and kpi.alerting.tiers and kpi.alerting.tiers[0].severity == "page":
        cases.extend(_low_traffic_cases(spec, kpi, series))
    return cases, None


def _zero_traffic_case(spec: ServiceSpec, kpi: Kpi, series: Series) -> Case:
    identity = identity_selector(spec, kpi)
    return Case(f"{kpi.name}: zero traffic gives no ratio and no alert", {
        "interval": "1m",
        "input_series": input_series(series, [(0.5, EVAL_MINUTES + 5)], rate=0),
        "promql_expr_test": [
            {"expr": f"{ratio_rate(BASE_RATE_WINDOW)}{identity}", "eval_time": f"{EVAL_MINUTES}m", "exp_samples": []},
            _expect(_alerts_query(spec, kpi, main_alert_name(kpi)), False),
        ]})


def _threshold_cases(spec: ServiceSpec, kpi: Kpi, series: Series) -> list[Case]:
    cases = []
    for multiplier in (ABOVE, BELOW):
        share = _threshold_share(kpi, multiplier)
        if share is None:
            continue
        minutes = int((kpi.alerting.window + kpi.alerting.for_) / 60) + 10
        misses = (multiplier == ABOVE) != kpi.higher_is_better
        cases.append(Case(f"{kpi.name}: threshold, ratio {multiplier:g}x the target", {
            "interval": "1m",
            "input_series": input_series(series, [(share, minutes)]),
            "promql_expr_test": [_expect(_alerts_query(spec, kpi, main_alert_name(kpi)), misses, f"{minutes - 1}m")],
        }))
    return cases


def _missing_good_events_cases(spec: ServiceSpec, kpi: Kpi, series: Series) -> list[Case]:
    """A numerator that never matched is a mistake (ticket, no page); one that vanished is an outage."""
    absent_for = int((kpi.alerting.no_data.for_ if kpi.alerting.no_data else DEFAULT_NO_DATA_FOR) / 60)
    minutes = absent_for + 10
    main = main_alert_name(kpi)
    cases = [Case(f"{kpi.name}: good events never counted (a typo in the numerator): no {main}, "
                  f"{NUMERATOR_ABSENT_ALERT} after {absent_for}m", {
                      "interval": "1m",
                      "input_series": input_series(series, [(1.0, minutes)], omit=("good",)),
                      "promql_expr_test": [
                          _expect(_alerts_query(spec, kpi, main), False, f"{minutes - 1}m"),
                          _expect(_alerts_query(spec, kpi, NUMERATOR_ABSENT_ALERT), False, f"{absent_for - 2}m"),
                          _expect(_alerts_query(spec, kpi, NUMERATOR_ABSENT_ALERT), True, f"{absent_for + 3}m"),
                      ]})]
    page = next((t for t in kpi.alerting.tiers if t.severity == "page"), None)
    if kpi.alerting.strategy == "burn_rate" and page is not None:
        # healthy, then every request fails and the good-events series disappear (the exporter restarted):
        # missing good events count as zero, so this pages like any total outage
        interval = _evaluation_interval(page)
        healthy = _round_up(max(w.long for w in page.windows) + 600, interval) / 60
        failing = _round_up(page.windows[0].long * page.windows[0].factor * kpi.error_budget + 720, interval) / 60
        minutes_healthy, minutes_failing = int(healthy), int(failing)
        good = series.good[0]
        inputs = [s for s in input_series(series, [(0.0, minutes_healthy), (1.0, minutes_failing)])
                  if s["series"] != good]
        inputs.append(next(s for s in input_series(series, [(0.0, minutes_healthy)]) if s["series"] == good))
        judged = f"{minutes_healthy + minutes_failing}m"
        cases.append(Case(f"{kpi.name}: good-events series vanish during a total outage: still pages", {
            "interval": "1m",
            "input_series": inputs,
            "promql_expr_test": [
                _expect(_alerts_query(spec, kpi, main, {SEVERITY_LABEL: "page"}), True, judged),
                _expect(_alerts_query(spec, kpi, NUMERATOR_ABSENT_ALERT), False, judged),
            ]}, interval))
    return cases


def _low_traffic_cases(spec: ServiceSpec, kpi: Kpi, series: Series) -> list[Case]:
    """Good events once, a quiet gap longer than the page tier's windows, then a burst in which every event
    fails: fewer failures than min_bad_events do not page, twice as many do. Failures come one per evaluation."""
    minimum = kpi.alerting.min_bad_events
    page = kpi.alerting.tiers[0]
    interval = _evaluation_interval(page)
    spacing = int(interval // 60)
    quiet = int(_round_up(max(w.long for w in page.windows) + 600, interval) // 60)
    cases = []
    for failures, fires in ((minimum // 2, False), (2 * minimum, True)):
        if failures == 0:
            continue
        cases.append(Case(f"{kpi.name}: {failures} failed events after a quiet night, min_bad_events {minimum}: "
                          f"{'pages' if fires else 'no page'}", {
                              "interval": "1m",
                              "input_series": low_traffic_input(series, quiet, failures, spacing),
                              "promql_expr_test": [
                                  _expect(_alerts_query(spec, kpi, main_alert_name(kpi), {SEVERITY_LABEL: "page"}),
                                          fires, f"{5 + quiet + failures * spacing}m")],
                          }, interval))
    return cases


def _tier_fires(tier: Tier, burn: float, bad_seconds: float) -> bool:
    """Whether the tier fires after ``bad_seconds`` of burning at ``burn`` following a healthy history."""
    return any(burn * min(1.0, bad_seconds / w.long) > w.factor and burn * min(1.0, bad_seconds / w.short) > w.factor
               for w in tier.windows)


def _round_up(seconds: float, interval: float) -> float:
    return -(-seconds // interval) * interval


def _burn_case(spec: ServiceSpec, kpi: Kpi, tier: Tier, window: BurnWindow, burn: float, series: Series) -> Case:
    """Healthy traffic, then ``burn``; judged one long window (plus the 5m the base rate needs to fill) after
    the burn starts, when this window pair sees exactly ``burn``. The healthy history is what the tier's
    longest window needs to be full of healthy traffic at that time (plus one 5m), no more."""
    interval = _evaluation_interval(tier)
    elapsed = window.long + BASE_RATE_WINDOW
    history = _round_up(max(0.0, max(w.long for w in tier.windows) - elapsed) + BASE_RATE_WINDOW, interval)
    steps_healthy, steps_bad = int(history // STEP), int((elapsed + 2 * STEP) // STEP)
    share = min(1.0, burn * kpi.error_budget)
    fires = _tier_fires(tier, burn, elapsed)
    return Case(f"{kpi.name}: {tier.severity} tier, burn {burn:g}x for {window_name(elapsed)} against "
                f"{window.factor:g}x over {window_name(window.long)}/{window_name(window.short)}", {
                    "interval": window_name(STEP),
                    "input_series": input_series(series, [(0.0, steps_healthy), (share, steps_bad)]),
                    "promql_expr_test": [_expect(_alerts_query(spec, kpi, main_alert_name(kpi),
                                                               {SEVERITY_LABEL: tier.severity}),
                                                 fires, window_name(history + elapsed))],
                }, interval)


def _evaluation_interval(tier: Tier) -> float:
    """Every 5m when the tier's windows and `for` are whole 5m (each evaluation then lands on the 5m offsets
    the telescoped windows read), else every minute. promtool's run time grows with evaluations."""
    durations = [d for w in tier.windows for d in (w.long, w.short)] + [tier.for_]
    return float(BASE_RATE_WINDOW) if all(d % BASE_RATE_WINDOW == 0 for d in durations) else MINUTE


def _threshold_share(kpi: Kpi, multiplier: float) -> float | None:
    """The bad-event share that puts the ratio at ``multiplier`` x the target (None if out of range)."""
    ratio = kpi.target * multiplier
    if not 0 < ratio < 1:
        return None
    return 1 - ratio if kpi.higher_is_better else ratio


def kpi_rule_file(spec: ServiceSpec, kpi: Kpi) -> str:
    return f"{spec.service}.{kpi.name}.rules.yml"


def kpi_rules(spec: ServiceSpec, kpi: Kpi) -> str:
    """The rules the tests of one KPI load: its group of rates and alerts, as in the service's file (the other
    KPIs' rules and the period judgements, which no alert reads, would only cost evaluations)."""
    alone = ServiceSpec(spec.file, spec.service, (kpi,), spec.labels)
    rates_and_alerts = compile_groups(alone)[0]
    return header(spec.file) + to_yaml({"groups": [rates_and_alerts]})


@dataclass
class GeneratedTest:
    """A generated promtool test file: one case of one KPI."""

    directory: Path
    name: str
    kpi: str
    case: str
    evaluations: int


def _test_files(spec: ServiceSpec, directory: Path,
                rule_file: str | None) -> tuple[list[tuple[GeneratedTest, str]], list[str]]:
    files = []
    notes = []
    for kpi in sorted(spec.kpis, key=lambda k: k.name):
        cases, note = kpi_cases(spec, kpi)
        if note:
            notes.append(note)
        for index, case in enumerate(cases, 1):
            document = {"rule_files": [rule_file or kpi_rule_file(spec, kpi)],
                        "evaluation_interval": window_name(case.evaluation_interval),
                        "tests": [{"name": case.name, **case.test}]}
            name = f"{spec.service}.{kpi.name}.{index:02d}.test.yml"
            files.append((GeneratedTest(directory, name, kpi.name, case.name, case.evaluations), to_yaml(document)))
    return files, notes


def generate_tests(spec: ServiceSpec, rule_file: str | None = None) -> tuple[dict[str, str], list[str]]:
    """promtool test files (file name -> YAML text), one per case, and notes on KPIs no test could be made
    for. Each loads ``rule_file`` if given, else its KPI's rules (kpi_rule_file, kpi_rules)."""
    files, notes = _test_files(spec, Path("."), rule_file)
    return {test.name: text for test, text in files}, notes


def write_tests(spec: ServiceSpec, directory: Path) -> tuple[list[GeneratedTest], list[str]]:
    """Writes each KPI's rules and test files into ``directory``; the files, and notes on KPIs without tests."""
    directory.mkdir(parents=True, exist_ok=True)
    for kpi in spec.kpis:
        (directory / kpi_rule_file(spec, kpi)).write_text(kpi_rules(spec, kpi))
    files, notes = _test_files(spec, directory, None)
    for test, text in files:
        (directory / test.name).write_text(text)
    return [test for test, _ in files], notes
