"""When burn-rate alerts first fire, against the SRE Workbook's times, before and after issue 10.

Run: .venv/bin/python -m pytest tests/benchmarks/bench_kpi_firing.py -s   (about 10 minutes)

One KPI, 99.9% over 30d; healthy traffic (6000 requests a minute, scraped every 15s) long enough to fill each
tier's longest window, then a constant share of failed requests; rules evaluated every 30s by promtool. "Before"
is the rule file the compiler generated for this KPI before issue 10 (tests/benchmarks/data), which built every
window from sums of overlapping 5m rates; "after" is today's compiler, which telescopes exact windows from
recorded rates. Also printed: the rules reading raw series, and the recorded samples read per evaluation.
"""

import re
from pathlib import Path

import yaml

from agent.config import values
from agent.config.yaml import load_text
from agent.kpi.compiler import compile_groups
from agent.kpi.render import render_prometheus
from agent.kpi.spec.document import parse_spec
from tests.kpi.firing import BAD, GOOD, SPEC, WORKBOOK, first_firing, workbook_seconds
from tests.kpi.helpers import raw_reading_rules
from tests.tools import require_tool

BEFORE = Path(__file__).parent / "data" / "kpi-rules-before.yml"
SHARES = (0.01, 0.02, 0.05, 1.0)
EVALUATION = 30


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _recorded_samples_per_minute(groups: list[dict]) -> float:
    """Samples of recorded kpi:* series the rules read per minute: a range [W] over a series recorded every 30s
    reads W/30s samples, an instant lookup (a telescoped term) one; each group at its own interval."""
    total = 0.0
    for group in groups:
        per_evaluation = 0
        for rule in group["rules"]:
            for window in re.findall(r"kpi:[a-z_:0-9]+\{[^}]*\}\[([0-9a-z]+)\]", rule["expr"]):
                per_evaluation += int(values.duration(window) // EVALUATION)
            per_evaluation += len(re.findall(r"kpi:[a-z_:0-9]+\{[^}]*\}(?!\[)", rule["expr"]))
        total += per_evaluation * 60 / values.duration(group["interval"])
    return total


def test_first_firing_times_against_the_workbook(tmp_path):
    promtool = require_tool("promtool")
    spec, _ = parse_spec(load_text(SPEC, "s.yaml"), "s.yaml")
    assert spec is not None
    versions = {"before": BEFORE.read_text(), "after": render_prometheus(spec, "s.yaml")}
    rows = []
    for tier in ("page", "ticket"):
        history = max(pair.long for pair in WORKBOOK[tier]) + 600
        alert = f'ALERTS{{alertname="KPIErrorBudgetBurn",alertstate="firing",kpi_severity="{tier}"}}'
        for share in SHARES:
            expected = workbook_seconds(WORKBOOK[tier], share, 0.001)
            assert expected is not None
            fired = {name: first_firing(promtool, tmp_path / f"{name}-{tier}-{share}", rules, GOOD, BAD, alert, share,
                                        history, expected + 900, EVALUATION)
                     for name, rules in versions.items()}
            rows.append((tier, share, expected, fired["before"], fired["after"]))
    print("\nFirst firing after the onset of errors, 99.9% over 30d (min:s), rules evaluated every 30s")
    print(f"{'tier':<7}{'errors':>7}{'Workbook':>10}{'before':>9}{'late by':>9}{'after':>9}{'late by':>9}")
    for tier, share, expected, before, after in rows:
        late = [("" if t is None else f"{t - expected:+.0f}s") for t in (before, after)]
        print(f"{tier:<7}{share:>7.0%}{_clock(expected):>10}{_clock(before):>9}{late[0]:>9}{_clock(after):>9}"
              f"{late[1]:>9}")
    groups = {"before": yaml.safe_load(versions["before"])["groups"], "after": compile_groups(spec)}
    raw = {name: len(raw_reading_rules(g, ["http_requests_total"])) for name, g in groups.items()}
    print(f"\nRules reading raw series per KPI: before {raw['before']}, after {raw['after']} (Sloth 0.16: 7, with "
          "ranges up to 3d); the rates over 5m, and after, every 5m, the selector check's instant count")
    print(f"Recorded samples read per minute: before {_recorded_samples_per_minute(groups['before']):,.0f}, "
          f"after {_recorded_samples_per_minute(groups['after']):,.0f}")
    for _, _, expected, _, after in rows:
        assert after is not None and 0 <= after - expected <= EVALUATION
