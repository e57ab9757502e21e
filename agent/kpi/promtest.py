"""Generates promtool unit tests for compiled KPI rules: `kpi-agent rules test`.

For each ratio KPI whose sides are selectors, synthetic series (agent.kpi.synthetic) satisfy the selectors'
matchers. Each burn-rate window pair gets one history: healthy for as long as the tier's longest window, then
a burn that crosses the pair's factor half way through its long window, then healthy again. The tier must be
quiet just before the crossing and fire just after (the factor and the long window, within 10%), the long
window must read the burn it holds, and the alert must end one short window after the burn does. A threshold
alert gets the same from a ratio that moves from one side of its target to the other. Zero traffic gives no
ratio and no alert; missing metrics fire the no-data alert after its `for`. Where missing good events count as
zero once seen: a numerator that never matched does not page (KPINumeratorAbsent instead), one that vanished
after counting does. With `min_bad_events`, a burst below it does not page and one above it does. What each
alert must do is agent.kpi.expected's, worked out from what the spec says.

promtool evaluates every rule at every evaluation, so a test costs (rules x evaluations). Each test loads only
its KPI's group of rates and alerts (the period group's judgements feed no alert), and a pair's history is
evaluated once per short window where that still counts every window exactly (agent.kpi.expected): the
default tiers' long windows are 12 short ones, so 12 evaluations cover one, and the 5m slices below are proven
by the pair whose short window is 5m. Each case is its own file, so cases run in parallel and report as they
finish.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.kpi.compiler import compile_groups
from agent.kpi.conventions import (
    NUMERATOR_ABSENT_ALERT,
    SEVERITY_LABEL,
    burn_rate,
    identity_labels,
    identity_selector,
    labels_selector,
    main_alert_name,
    ratio_rate,
    window_name,
)
from agent.kpi.expected import MINUTE, Alert, Onset, evaluation_intervals, find_onset, round_up
from agent.kpi.model import BurnWindow, Kpi, ServiceSpec, Tier
from agent.kpi.render import header, to_yaml
from agent.kpi.synthetic import Series, input_series, low_traffic_input, synthesize
from agent.kpi.windows import BASE_RATE_WINDOW, DEFAULT_NO_DATA_FOR, WindowPlan

EVAL_MINUTES = 20  # zero traffic: judged once the 5m rate exists


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


def kpi_cases(spec: ServiceSpec, kpi: Kpi) -> tuple[list[Case], list[str]]:
    """promtool test cases for one KPI, and notes on what could not be tested and why."""
    if not kpi.is_ratio:
        return [], [f"{kpi.name}: value KPIs have no synthetic traffic to generate; test them with your own series"]
    series = synthesize(kpi)
    if series is None:
        return [], [f"{kpi.name}: no label values satisfy its selectors (or it uses raw queries); "
                    "only `promtool check rules` covers it"]
    cases, notes = _main_alert_cases(spec, kpi, series)
    if not series.gauge:
        cases.append(_zero_traffic_case(spec, kpi, series))
    if kpi.alerting.no_data is not None and kpi.alerting.strategy != "none":
        cases.append(_no_data_case(spec, kpi))
    if kpi.fills_missing_good_events and kpi.alerting.strategy != "none":
        cases.extend(_missing_good_events_cases(spec, kpi, series))
    if kpi.alerting.min_bad_events and kpi.alerting.tiers and kpi.alerting.tiers[0].severity == "page":
        cases.extend(_low_traffic_cases(spec, kpi, series))
    return cases, notes


def _main_alert_cases(spec: ServiceSpec, kpi: Kpi, series: Series) -> tuple[list[Case], list[str]]:
    """One case per window pair of each burn-rate tier, or one for the threshold alert."""
    plan = WindowPlan(kpi)
    found: dict[str, Case | None] = {}
    if kpi.alerting.strategy == "burn_rate":
        for tier in kpi.alerting.tiers:
            for pair in tier.windows:
                found[f"the {tier.severity} tier's {_pair_name(pair)} pair"] = \
                    _tier_case(spec, kpi, series, plan, tier, pair)
    elif kpi.alerting.strategy == "threshold":
        found["its threshold alert"] = _threshold_case(spec, kpi, series, plan)
    notes = [f"{kpi.name}: {what} has no history that tells its factor and windows apart at promtool's "
             "evaluation intervals" for what, case in found.items() if case is None]
    return [case for case in found.values() if case is not None], notes


def _pair_name(pair: BurnWindow) -> str:
    return f"{pair.factor:g}x over {window_name(pair.long)}/{window_name(pair.short)}"


def _onset_test(spec: ServiceSpec, kpi: Kpi, series: Series, onset: Onset, window: float,
                query: str) -> dict[str, Any]:
    identity = identity_selector(spec, kpi)
    phases = [(phase.share, phase.minutes) for phase in onset.history.phases if phase.minutes]
    expects = [_expect(query, fires, window_name(at)) for at, fires in onset.checks]
    expects.extend({"expr": f"count(abs({burn_rate(window)}{identity} - {value!r}) <= {tolerance:.6g})",
                    "eval_time": window_name(at), "exp_samples": [{"value": 1}]}
                   for at, value, tolerance in onset.burns)
    return {"interval": "1m", "input_series": input_series(series, phases),
            "promql_expr_test": sorted(expects, key=lambda e: _seconds(e["eval_time"]))}


def _tier_case(spec: ServiceSpec, kpi: Kpi, series: Series, plan: WindowPlan, tier: Tier,
               pair: BurnWindow) -> Case | None:
    """Healthy, then a burn twice the pair's factor (or every event failing, if that is less) until the tier
    must fire, then healthy for one short window: quiet before the crossing, firing after, ended after."""
    alert = Alert(tier.windows, tier.for_, kpi.alerting.min_bad_events)
    share = min(1.0, 2 * pair.factor * kpi.error_budget)
    onset = find_onset(kpi, series, plan, alert, pair, (0.0, share), evaluation_intervals(pair.short), resolve=True)
    if onset is None:
        return None
    interval = onset.history.interval
    burn = onset.history.phases[1].share / kpi.error_budget
    start = onset.healthy
    states = [f"{'' if fires else 'no '}{tier.severity}" for _, fires in onset.checks]
    (quiet, _), (fires, _), (ended, _) = onset.checks
    query = _alerts_query(spec, kpi, main_alert_name(kpi), {SEVERITY_LABEL: tier.severity})
    return Case(f"{kpi.name}: {tier.severity} tier, {_pair_name(pair)}: a {burn:.3g}x burn after "
                f"{window_name(start)} healthy: {states[0]} at {window_name(quiet - start)}, {states[1]} at "
                f"{window_name(fires - start)}, {states[2]} {window_name(ended - fires)} after it ends "
                f"(rules every {window_name(interval)})",
                _onset_test(spec, kpi, series, onset, pair.long, query), interval)


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.4g}%"


def _threshold_case(spec: ServiceSpec, kpi: Kpi, series: Series, plan: WindowPlan) -> Case | None:
    """The ratio 10% of the way from the target to its nearer bound on the good side for a whole window, then
    as far on the bad side: quiet until the window's ratio has been bad for `for`, then firing."""
    budget = kpi.error_budget
    margin = 0.1 * min(budget, 1 - budget)
    if margin <= 0:
        return None
    window = kpi.alerting.window
    alert = Alert((BurnWindow(window, window, 1.0),), kpi.alerting.for_)
    onset = find_onset(kpi, series, plan, alert, alert.windows[0], (budget - margin, budget + margin),
                        evaluation_intervals(), resolve=False)
    if onset is None:
        return None
    name = main_alert_name(kpi)
    ratios = [p.share if not kpi.higher_is_better else 1 - p.share for p in onset.history.phases[:2]]
    start = onset.healthy
    (quiet, quiet_fires), (fires, fires_fires) = onset.checks
    states = [f"{'' if verdict else 'no '}{name}" for verdict in (quiet_fires, fires_fires)]
    kind = "at least" if kpi.higher_is_better else "at most"
    held = f" for {window_name(kpi.alerting.for_)}" if kpi.alerting.for_ else ""
    return Case(f"{kpi.name}: threshold, {kind} {_percent(kpi.target)} over {window_name(window)}{held}: the ratio "
                f"from {_percent(ratios[0])} to {_percent(ratios[1])} "
                f"after {window_name(start)}: {states[0]} at {window_name(quiet - start)}, {states[1]} at "
                f"{window_name(fires - start)} (rules every {window_name(onset.history.interval)})",
                _onset_test(spec, kpi, series, onset, window, _alerts_query(spec, kpi, name)),
                onset.history.interval)


def _zero_traffic_case(spec: ServiceSpec, kpi: Kpi, series: Series) -> Case:
    identity = identity_selector(spec, kpi)
    return Case(f"{kpi.name}: zero traffic gives no ratio and no alert", {
        "interval": "1m",
        "input_series": input_series(series, [(0.5, EVAL_MINUTES + 5)], rate=0),
        "promql_expr_test": [
            {"expr": f"{ratio_rate(BASE_RATE_WINDOW)}{identity}", "eval_time": f"{EVAL_MINUTES}m", "exp_samples": []},
            _expect(_alerts_query(spec, kpi, main_alert_name(kpi)), False),
        ]}, BASE_RATE_WINDOW)


def _no_data_case(spec: ServiceSpec, kpi: Kpi) -> Case:
    no_data = kpi.alerting.no_data
    assert no_data is not None
    minutes = int(no_data.for_ / 60)
    query = _alerts_query(spec, kpi, no_data.name)
    return Case(f"{kpi.name}: missing metrics fire {no_data.name} after {window_name(no_data.for_)}, not before", {
        "interval": "1m",
        "input_series": [],
        "promql_expr_test": [_expect(query, False, f"{max(0, minutes - 2)}m"), _expect(query, True, f"{minutes + 2}m")],
    })


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
        # healthy long enough for good events to be seen, then every request fails and the good-events series
        # disappear (the exporter restarted): missing good events count as zero, so this pages like any total
        # outage. Windows reaching back before the first sample count what there is.
        interval = _evaluation_interval(page)
        healthy = round_up(2 * BASE_RATE_WINDOW, interval) / 60
        failing = round_up(page.windows[0].long * page.windows[0].factor * kpi.error_budget + 720, interval) / 60
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
    """Good events once, a quiet gap longer than the page tier's first long window, then a burst in which every
    event fails: fewer failures than min_bad_events do not page, twice as many do. Failures come one per
    evaluation."""
    minimum = kpi.alerting.min_bad_events
    page = kpi.alerting.tiers[0]
    interval = _evaluation_interval(page)
    spacing = int(interval // 60)
    quiet = int(round_up(page.windows[0].long + 600, interval) // 60)
    cases = []
    for failures, fires in ((minimum // 2, False), (2 * minimum, True)):
        if failures == 0:
            continue
        events = "event" if failures == 1 else "events"
        cases.append(Case(f"{kpi.name}: {failures} failed {events} after a quiet {window_name(quiet * 60)}, "
                          f"min_bad_events {minimum}: {'pages' if fires else 'no page'}", {
                              "interval": "1m",
                              "input_series": low_traffic_input(series, quiet, failures, spacing),
                              "promql_expr_test": [
                                  _expect(_alerts_query(spec, kpi, main_alert_name(kpi), {SEVERITY_LABEL: "page"}),
                                          fires, f"{5 + quiet + failures * spacing}m")],
                          }, interval))
    return cases


def _evaluation_interval(tier: Tier) -> float:
    """Every 5m when the tier's windows and `for` are whole 5m (each evaluation then lands on the 5m offsets
    the telescoped windows read), else every minute. promtool's run time grows with evaluations."""
    durations = [d for w in tier.windows for d in (w.long, w.short)] + [tier.for_]
    return float(BASE_RATE_WINDOW) if all(d % BASE_RATE_WINDOW == 0 for d in durations) else MINUTE


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


def generated_files(spec: ServiceSpec, directory: Path) -> tuple[list[tuple[GeneratedTest, dict[str, Any]]], list[str]]:
    """Every test file of a spec (one per case, loading its KPI's rules: kpi_rule_file), and notes on what
    could not be tested."""
    files = []
    notes = []
    for kpi in sorted(spec.kpis, key=lambda k: k.name):
        cases, kpi_notes = kpi_cases(spec, kpi)
        notes.extend(kpi_notes)
        for index, case in enumerate(cases, 1):
            document = {"rule_files": [kpi_rule_file(spec, kpi)],
                        "evaluation_interval": window_name(case.evaluation_interval),
                        "tests": [{"name": case.name, **case.test}]}
            name = f"{spec.service}.{kpi.name}.{index:02d}.test.yml"
            files.append((GeneratedTest(directory, name, kpi.name, case.name, case.evaluations), document))
    return files, notes


def write_tests(spec: ServiceSpec, directory: Path) -> tuple[list[GeneratedTest], list[str]]:
    """Writes each KPI's rules and test files into ``directory``; the files, and notes on what could not be
    tested."""
    directory.mkdir(parents=True, exist_ok=True)
    for kpi in spec.kpis:
        (directory / kpi_rule_file(spec, kpi)).write_text(kpi_rules(spec, kpi))
    files, notes = generated_files(spec, directory)
    for test, document in files:
        (directory / test.name).write_text(to_yaml(document))
    return [test for test, _ in files], notes
