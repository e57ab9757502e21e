"""First firing times of compiled burn-rate alerts under a constant error rate, measured with promtool, and the
SRE Workbook's times for the same tiers.

One promtool run per scenario: healthy traffic long enough to fill the tier's longest window, then a constant
share of failed requests. Every evaluation step after the onset expects "not firing"; promtool lists the steps
where that failed, so the first of them is the first firing time.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

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
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|[dhms])", text):
        total += float(value) * {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
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
