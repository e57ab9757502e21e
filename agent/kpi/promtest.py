"""Writes promtool unit tests for compiled KPI rules, and runs promtool.

For each ratio KPI whose numerator and denominator are selectors, synthetic counters are made that satisfy
the selectors' matchers, with a constant share of bad events. Per burn window: just above its factor the
tier fires, just below it the tier fires only if another window of the tier has a lower factor. Zero
traffic gives no ratio and no burn alert; missing metrics fire the no-data alert after its `for`.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.kpi.compiler import _labels_selector, render_prometheus, to_yaml, window_name
from agent.kpi.spec import BurnWindow, Kpi, Matcher, Selector, ServiceSpec, Tier

EVAL_MINUTES = 20  # zero-traffic and threshold cases: steady inputs, judged once the 5m rate exists
EVENTS_PER_MINUTE = 6000
ABOVE, BELOW = 1.1, 0.9
STEP = 60.0  # seconds between input samples: the 5m base rate needs several per 5m


class PromtoolMissing(RuntimeError):
    pass


def promtool_path() -> str:
    path = shutil.which("promtool")
    if not path:
        raise PromtoolMissing("promtool not found: install Debian's prometheus package (apt-get install prometheus)")
    return path


def _candidates(matchers: list[Matcher]) -> list[str]:
    """Label values worth trying against these matchers: literals, and simple instances of the regexes."""
    values = ["200", "500", "ok", "x"]
    for matcher in matchers:
        values.append(matcher.value)
        if matcher.op in ("=~", "!~"):
            for alternative in matcher.value.split("|"):
                instance = re.sub(r"\\d|\.", "0", alternative.strip("^$()"))
                values.append(re.sub(r"[+*?]", "", instance))
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
    good: list[tuple[str, dict[str, str]]]  # (metric, labels) incremented by good events
    bad: list[tuple[str, dict[str, str]]]  # incremented by bad events
    total: list[tuple[str, dict[str, str]]]  # incremented by all events (when the denominator is its own metric)


def _synthesize(kpi: Kpi) -> _Series | None:
    numerator, denominator = kpi.numerator, kpi.denominator
    if not isinstance(numerator, Selector) or not isinstance(denominator, Selector):
        return None
    group = {label: "test" for label in kpi.group_by}
    num_m, den_m = list(numerator.matchers), list(denominator.matchers)
    if numerator.metric == denominator.metric:
        good = _satisfy(den_m + num_m, [])
        bad = _satisfy(den_m, num_m)
        if good is None or bad is None:
            return None
        good_labels, bad_labels = {**group, **good}, {**group, **bad}
        if not kpi.higher_is_better:  # the numerator counts the bad events
            good_labels, bad_labels = bad_labels, good_labels
        return _Series([(numerator.metric, good_labels)], [(numerator.metric, bad_labels)], [])
    num_labels, den_labels = _satisfy(num_m, []), _satisfy(den_m, [])
    if num_labels is None or den_labels is None:
        return None
    counted = [(numerator.metric, {**group, **num_labels})]
    total = [(denominator.metric, {**group, **den_labels})]
    return _Series(counted if kpi.higher_is_better else [], [] if kpi.higher_is_better else counted, total)


def _series_text(metric: str, labels: dict[str, str]) -> str:
    return metric + (_labels_selector(dict(sorted(labels.items()))) if labels else "")


def _input(series: _Series, bad_share: float, steps: int, step: float = 60.0) -> list[dict[str, Any]]:
    """Counters from 0 growing by a constant amount per step; ``end`` is each one's last value."""
    per_step_total = EVENTS_PER_MINUTE * step / 60
    bad = round(per_step_total * bad_share)
    good = per_step_total - bad
    values = []
    for items, per_step in ((series.good, good), (series.bad, bad), (series.total, per_step_total)):
        for metric, labels in items:
            values.append({"series": _series_text(metric, labels), "values": f"0+{_exact(per_step)}x{steps}",
                           "end": per_step * steps, "per_step": per_step, "steps": steps})
    return values


def _plain(values: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"series": v["series"], "values": v["values"]} for v in values]


def _alerts_query(spec: ServiceSpec, kpi: Kpi, alertname: str, extra: dict[str, str] | None = None) -> str:
    labels = {"alertname": alertname, "alertstate": "firing", "kpi": kpi.name, "kpi_service": spec.service,
              **(extra or {})}
    return f"count(ALERTS{_labels_selector(labels)})"


def _expect(query: str, fires: bool) -> dict[str, Any]:
    return {"expr": query, "eval_time": f"{EVAL_MINUTES}m", "exp_samples": [{"value": 1}] if fires else []}


def kpi_tests(spec: ServiceSpec, kpi: Kpi) -> tuple[list[dict[str, Any]], str | None]:
    """promtool test cases for one KPI, or a note saying why none could be made."""
    if not kpi.is_ratio:
        return [], f"{kpi.name}: value KPIs have no synthetic traffic to generate; test them with your own series"
    series = _synthesize(kpi)
    if series is None:
        return [], (f"{kpi.name}: no label values satisfy its selectors (or it uses raw queries); "
                    "only `promtool check rules` covers it")
    identity = _labels_selector({"kpi": kpi.name, "kpi_service": spec.service})
    cases: list[dict[str, Any]] = []
    alert = kpi.alerting.name or "KPIErrorBudgetBurn"
    for tier in kpi.alerting.tiers if kpi.alerting.strategy == "burn_rate" else ():
        for window in tier.windows:
            for multiplier in (ABOVE, BELOW):
                case = _burn_case(spec, kpi, tier, window, window.factor * multiplier, series)
                cases.append({**case, "evaluation_interval": _evaluation_interval(tier)})
    if kpi.alerting.strategy == "threshold":
        alert = kpi.alerting.name or ("KPIBelowTarget" if kpi.higher_is_better else "KPIAboveTarget")
        for multiplier in (ABOVE, BELOW):
            share = _threshold_share(kpi, multiplier)
            if share is None:
                continue
            minutes = int((kpi.alerting.window + kpi.alerting.for_) / 60) + 10
            misses = (multiplier == ABOVE) != kpi.higher_is_better
            cases.append({
                "name": f"{kpi.name}: threshold, ratio {multiplier:g}x the target",
                "interval": "1m",
                "input_series": _plain(_input(series, share, minutes)),
                "promql_expr_test": [
                    {**_expect(_alerts_query(spec, kpi, alert), misses), "eval_time": f"{minutes - 1}m"}],
            })
    cases.append({
        "name": f"{kpi.name}: zero traffic gives no ratio and no alert",
        "interval": "1m",
        "input_series": [{"series": s["series"], "values": f"0+0x{EVAL_MINUTES + 5}"} for s in _input(series, 0.5, 1)],
        "promql_expr_test": [
            {"expr": f"kpi:ratio:rate5m{identity}", "eval_time": f"{EVAL_MINUTES}m", "exp_samples": []},
            _expect(_alerts_query(spec, kpi, kpi.alerting.name or "KPIErrorBudgetBurn"), False),
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
                {**_expect(_alerts_query(spec, kpi, no_data.name), False), "eval_time": f"{max(0, minutes - 2)}m"},
                {**_expect(_alerts_query(spec, kpi, no_data.name), True), "eval_time": f"{minutes + 2}m"},
            ],
        })
    return cases, None


def _tier_fires(tier: Tier, burn: float, bad_seconds: float) -> bool:
    """Whether the tier fires after ``bad_seconds`` of burning at ``burn`` following a healthy history."""
    return any(burn * min(1.0, bad_seconds / w.long) > w.factor and burn * min(1.0, bad_seconds / w.short) > w.factor
               for w in tier.windows)


def _burn_case(spec: ServiceSpec, kpi: Kpi, tier: Tier, window: BurnWindow, burn: float,
               series: _Series) -> dict[str, Any]:
    """Healthy traffic for the tier's longest window, then ``burn``; judged one long window (plus the 5m the
    base rate needs to fill) after the burn starts, when this window pair sees exactly ``burn``."""
    step = STEP
    history = max(w.long for w in tier.windows)
    elapsed = window.long + 300
    steps_healthy, steps_bad = int(history // step), int((elapsed + 2 * step) // step)
    share = min(1.0, burn * kpi.error_budget)
    healthy = _input(series, 0.0, steps_healthy, step)
    bad = _input(series, share, steps_bad, step)
    input_series = []
    for before, after in zip(healthy, bad, strict=True):
        end = before["end"]
        input_series.append({"series": before["series"],
                             "values": f"{before['values']} {_shift(after, end, step)}"})
    # The base rate ramps up over its first 5m: count 2.5m of it as healthy.
    fires = _tier_fires(tier, burn, elapsed - 150)
    eval_time = history + elapsed
    return {
        "name": f"{kpi.name}: {tier.severity} tier, burn {burn:g}x for {window_name(elapsed)} against "
                f"{window.factor:g}x over {window_name(window.long)}/{window_name(window.short)}",
        "interval": window_name(step),
        "input_series": input_series,
        "promql_expr_test": [{
            "expr": _alerts_query(spec, kpi, kpi.alerting.name or "KPIErrorBudgetBurn",
                                  {"kpi_severity": tier.severity}),
            "eval_time": window_name(eval_time),
            "exp_samples": [{"value": 1}] if fires else [],
        }],
    }


def _evaluation_interval(tier: Tier) -> str:
    """Rules are evaluated every minute for windows up to hours, every 10m for days-long ones: promtool's
    run time grows with evaluations x window length, and a 10m step is still fine against a 1d window."""
    return "10m" if min(w.short for w in tier.windows) >= 3600 else "1m"


def _shift(after: dict[str, Any], start: float, step: float) -> str:
    per_step = after["per_step"]
    return f"{_exact(start + per_step)}+{_exact(per_step)}x{after['steps'] - 1}"


def _exact(value: float) -> str:
    """A counter value in promtool's notation without losing digits (``:g`` would round 25925993)."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _threshold_share(kpi: Kpi, multiplier: float) -> float | None:
    """The bad-event share that puts the ratio at ``multiplier`` x the target (None if out of range)."""
    ratio = kpi.target * multiplier
    if not 0 < ratio < 1:
        return None
    return 1 - ratio if kpi.higher_is_better else ratio


def generate_tests(spec: ServiceSpec, rule_file: str) -> tuple[dict[str, str], list[str]]:
    """promtool test files (evaluation interval -> YAML text) for the rules in ``rule_file``, and notes on
    KPIs no test could be made for."""
    by_interval: dict[str, list[dict[str, Any]]] = {}
    notes = []
    for kpi in sorted(spec.kpis, key=lambda k: k.name):
        kpi_cases, note = kpi_tests(spec, kpi)
        for case in kpi_cases:
            interval = case.pop("evaluation_interval", "1m")
            by_interval.setdefault(interval, []).append(case)
        if note:
            notes.append(note)
    files = {interval: to_yaml({"rule_files": [rule_file], "evaluation_interval": interval, "tests": cases})
             for interval, cases in sorted(by_interval.items())}
    return files, notes


def write_and_run(spec: ServiceSpec, directory: Path,
                  source_name: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Writes the rules and their tests into ``directory`` and runs ``promtool test rules``."""
    directory.mkdir(parents=True, exist_ok=True)
    rules = directory / f"{spec.service}.rules.yml"
    rules.write_text(render_prometheus(spec, source_name))
    files, notes = generate_tests(spec, rules.name)
    names = []
    for interval, text in files.items():
        names.append(f"{spec.service}.eval{interval}.test.yml")
        (directory / names[-1]).write_text(text)
    if not names:
        return subprocess.CompletedProcess([], 0, "no tests to run\n", ""), notes
    result = subprocess.run([promtool_path(), "test", "rules", *names], cwd=directory, capture_output=True,
                            text=True, timeout=1800)
    return result, notes
