"""When compiled burn-rate alerts fire under a constant error rate, measured with promtool, and the SRE
Workbook's times for the same tiers.

Each scenario: healthy traffic long enough to fill the tier's longest window, then a constant share of failed
requests. ``first_firing`` (the benchmark's) evaluates the rules every 30s, as they run, and reports the first
evaluation that fires. ``late_or_early`` (the tests') asks only what the tests assert, quiet at the last
evaluation before the Workbook's time and firing at the last one within an evaluation after it, and asks it
of evaluations 5m apart: far fewer of them (three days of history are 8,640 at 30s, 864 at 5m). That is
exact because a telescoped window reads only its slices recorded at whole 5m offsets (``offset 5m``, ``1h``,
``1d``...): rules evaluated every 5m record every slice they read, each with the value it has at 30s, so at each
evaluation they compute what they compute at 30s (the one rule that reads its own last value, the numerator's
last-seen time, reads it only once good events have stopped for 5m, after every instant checked here). The
onset is placed so that a 5m evaluation falls on the instant to check, in one history for the quiet one, in
another for the firing one.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from agent.kpi.compiler import compile_groups
from agent.kpi.conventions import rule_group
from agent.kpi.model import ServiceSpec
from agent.kpi.render import header, to_yaml

# One availability KPI at 99.9% over 30d, and the series that count its good and failed requests.
SPEC = """\
service: shop
kpis:
  - name: availability
    window: 30d
    target: 99.9%
    ratio:
      numerator: http_requests_total{job="shop",status!~"5.."}
      denominator: http_requests_total{job="shop"}
"""
GOOD = 'http_requests_total{job="shop",status="200"}'
BAD = 'http_requests_total{job="shop",status="500"}'
REQUESTS_PER_MINUTE = 6000
SCRAPE = 15  # seconds between input samples: the scrape interval deploy/prometheus uses


@dataclass(frozen=True)
class Pair:
    long: float
    short: float
    factor: float


# The Workbook's tiers for a 30d window.
WORKBOOK = {
    "page": (Pair(3600, 300, 14.4), Pair(6 * 3600, 1800, 6)),
    "ticket": (Pair(86400, 7200, 3), Pair(3 * 86400, 6 * 3600, 1)),
}


def workbook_seconds(pairs: tuple[Pair, ...], error_share: float, budget: float) -> float | None:
    """When a constant ``error_share`` starting at 0 after a healthy history first makes both windows of some
    pair burn faster than its factor, with windows computed exactly (a window W sees min(t, W)/W of errors)."""
    times = []
    for pair in pairs:
        threshold = pair.factor * budget
        if error_share <= threshold:
            continue
        times.append(max(window * threshold / error_share for window in (pair.long, pair.short)))
    return min(times) if times else None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60}s" if seconds % 60 else f"{seconds // 60}m"


def _seconds(text: str) -> float:
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|[ywdhms])", text):
        total += float(value) * {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1,
                                 "ms": 0.001}[unit]
    return total


def first_firing(promtool: str, directory: Path, rules_text: str, good: str, bad: str, alert: str,
                 error_share: float, history: float, horizon: float, evaluation_interval: float = 30,
                 scrape: float = SCRAPE) -> float | None:
    """Seconds from the onset of ``error_share`` errors to the first evaluation where ``alert`` (a PromQL
    selector on ALERTS) is firing, or None if it never fires within ``horizon``. ``good`` and ``bad`` are the
    series that count good and failed requests."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.yml").write_text(rules_text)
    healthy_steps = int(history // scrape)
    bad_steps = int((horizon + 2 * evaluation_interval) // scrape) + 1
    per_step = REQUESTS_PER_MINUTE * scrape / 60
    failed = per_step * error_share
    succeeded = per_step - failed
    good_start = per_step * healthy_steps
    good_values = f"0+{per_step:g}x{healthy_steps} {good_start + succeeded:g}+{succeeded:g}x{bad_steps - 1}"
    bad_values = f"0+0x{healthy_steps} {failed:g}+{failed:g}x{bad_steps - 1}"
    onset = healthy_steps * scrape
    steps = []
    at = onset
    while at <= onset + horizon:
        steps.append(at)
        at += evaluation_interval
    query = f"count({alert})"
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": _duration(evaluation_interval),
        "tests": [{
            "interval": _duration(scrape),
            "input_series": [{"series": good, "values": good_values}, {"series": bad, "values": bad_values}],
            "promql_expr_test": [{"expr": query, "eval_time": _duration(t), "exp_samples": []} for t in steps],
        }],
    }
    (directory / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=directory, capture_output=True, text=True,
                            timeout=3600)
    output = result.stdout + result.stderr
    if result.returncode == 0:
        return None
    firing = [_seconds(m) for m in re.findall(r"time: ([0-9a-z.]+),", output)]
    if not firing:
        raise AssertionError(f"promtool failed without listing evaluation times:\n{output[-2000:]}")
    return min(firing) - onset


def rates_and_alerts(spec: ServiceSpec) -> str:
    """The rule file as generated, with the service's group of rates and alerts only: the period group's
    judgements feed no alert, and promtool would evaluate its 30-day sums at every step."""
    groups = [group for group in compile_groups(spec) if group["name"] == rule_group(spec.service)]
    return header("spec.yaml") + to_yaml({"groups": groups})


def coarsest_step(rules_text: str, alert: str, evaluation: float, most: float = 300) -> float:
    """The longest interval, a multiple of ``evaluation`` and at most ``most``, that divides every ``offset`` the
    rules read at: evaluated that often, they record every sample they read and compute at each evaluation what
    they do every ``evaluation``. An alerting rule that ``alert`` selects with a ``for`` would fire at a later
    evaluation; then it is ``evaluation``."""
    matchers = dict(re.findall(r'(\w+)="([^"]*)"', alert))
    matchers.pop("alertstate", None)
    for group in yaml.safe_load(rules_text)["groups"]:
        for rule in group["rules"]:
            labels = {"alertname": rule.get("alert"), **rule.get("labels", {})}
            if "alert" in rule and rule.get("for") and all(labels.get(k) == v for k, v in matchers.items()):
                return evaluation
    offsets = [_seconds(text) for text in re.findall(r"\boffset\s+([0-9a-z.]+)", rules_text)]
    step = evaluation * int(most // evaluation)
    while step > evaluation and any(offset % step for offset in offsets):
        step -= evaluation
    return step


def late_or_early(promtool: str, directory: Path, rules_text: str, good: str, bad: str, alert: str,
                  error_share: float, expected: float, history: float, evaluation: float = 30,
                  scrape: float = SCRAPE) -> list[str]:
    """What keeps ``alert`` (a PromQL selector on ALERTS) from first firing within one evaluation after
    ``expected`` seconds of ``error_share`` errors, with rules evaluated every ``evaluation`` seconds from the
    onset: [] when it is quiet at the last evaluation before ``expected`` (and at every coarser step before it)
    and firing at the last one within ``evaluation`` after it. ``history``: the least healthy seconds."""
    assert evaluation % scrape == 0
    expected = round(expected, 6)
    quiet = math.ceil(expected / evaluation) * evaluation - evaluation  # the last evaluation before expected
    fires = math.floor((expected + evaluation) / evaluation) * evaluation  # the last within one after it
    step = coarsest_step(rules_text, alert, evaluation)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.yml").write_text(rules_text)
    per_step = REQUESTS_PER_MINUTE * scrape / 60
    failed = per_step * error_share
    succeeded = per_step - failed
    groups: list[dict] = []
    checked: dict[float, tuple[float, bool]] = {}  # evaluation time: (seconds after its onset, must fire)
    latest = 0.0
    # one history per instant to check, unless both fall on one history's evaluations
    for last in [fires] if (fires - quiet) % step == 0 else [quiet, fires]:
        # an onset that puts an evaluation `last` after it, later than the previous history's checks: each
        # evaluation time promtool names belongs to one history
        onset = math.ceil((max(history, latest + step) + last) / step) * step - last
        healthy_steps = int(onset // scrape)
        error_steps = int((last + step) // scrape) + 1
        good_start = per_step * healthy_steps
        expects = []
        at = onset + last % step  # the first evaluation from the onset on
        while at <= onset + last:
            if at - onset <= quiet or at - onset == fires:  # between them, firing or not is on time
                checked[at] = (at - onset, at - onset == fires)
                expects.append({"expr": f"count({alert})", "eval_time": _duration(at),
                                "exp_samples": [{"value": 1}] if at - onset == fires else []})
            at += step
        latest = at - step
        groups.append({
            "interval": _duration(scrape),
            "input_series": [
                {"series": good, "values": f"0+{per_step!r}x{healthy_steps} "
                                           f"{good_start + succeeded!r}+{succeeded!r}x{error_steps - 1}"},
                {"series": bad, "values": f"0+0x{healthy_steps} {failed!r}+{failed!r}x{error_steps - 1}"}],
            "promql_expr_test": expects})
    test = {"rule_files": ["rules.yml"], "evaluation_interval": _duration(step), "tests": groups}
    (directory / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=directory, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    if result.returncode == 0:
        return []
    wrong = [checked.get(_seconds(text)) for text in re.findall(r"time: ([0-9a-z.]+),", output)]
    if not wrong or None in wrong:
        raise AssertionError(f"promtool failed on something else than the checks:\n{output[-2000:]}")
    return [f"{'quiet' if must_fire else 'firing'} {after:g}s after the onset (the Workbook: {expected:g}s, "
            f"rules every {evaluation:g}s)" for after, must_fire in sorted(wrong)]
