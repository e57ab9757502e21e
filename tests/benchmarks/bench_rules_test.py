"""`kpi-agent rules test rules/`: wall time, CPU time and rule evaluations now, against the version before issue
19.10 (f89f8b6) and its first pass (336c135: one case per file, 5m evaluations, each KPI's rules alone).

Run: .venv/bin/python -m pytest tests/benchmarks/bench_rules_test.py -s   (about 25 minutes on a busy machine,
10 on a quiet one; BENCH_RULES_TEST_RUNS=1 for a quick look)

Every version runs the same promtool on the shipped examples, alternating, three times each; the medians and
their ratios to now are printed with the load average. The old versions are taken from git (git archive) into
temporary directories and run with this interpreter, so only the code differs. Rule evaluations (what promtool
spends its CPU on: every loaded rule at every evaluation up to a test's last check) are counted from the test
files each version wrote.
"""

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.tools import require_tool

ROOT = Path(__file__).parents[2]
BEFORE = {"f89f8b6": "before 19.10", "336c135": "first pass"}
RUNS = int(os.environ.get("BENCH_RULES_TEST_RUNS", "3"))
UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def _seconds(text: str) -> float:
    total, number = 0.0, ""
    for char in str(text):
        if char.isdigit():
            number += char
        elif number:
            total += int(number) * UNITS[char]
            number = ""
    return total


def rule_evaluations(out: Path) -> int:
    """Rules loaded x evaluations, over every test of every test file under ``out``."""
    total = 0
    for path in out.rglob("*.test.yml"):
        document = yaml.safe_load(path.read_text())
        rules = sum(len(group["rules"]) for name in document["rule_files"]
                    for group in yaml.safe_load((path.parent / name).read_text())["groups"])
        interval = _seconds(document.get("evaluation_interval", "1m"))
        for test in document["tests"]:
            checks = test.get("promql_expr_test", []) + test.get("alert_rule_test", [])
            total += int(max(_seconds(check["eval_time"]) for check in checks) // interval) * rules
    return total


def _run(code: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its promtool children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "agent", "rules", "test", str(ROOT / "rules"), "--out", str(out)],
                            cwd=code, env={**os.environ, "PYTHONPATH": str(code)}, capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stdout + result.stderr
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_rules_test_time_before_and_after(tmp_path):
    require_tool("promtool")
    versions = {}
    for commit, label in BEFORE.items():
        code = tmp_path / commit
        code.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "agent"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
        versions[f"{commit} ({label})"] = code
    versions["now"] = ROOT
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
    evaluations = {}
    for run in range(RUNS):
        for name, code in versions.items():
            out = tmp_path / f"{name.split()[0]}-{run}"
            times[name].append(_run(code, out))
            evaluations[name] = rule_evaluations(out)
    wall = {name: statistics.median(w for w, _ in runs) for name, runs in times.items()}
    cpu = {name: statistics.median(c for _, c in runs) for name, runs in times.items()}
    print(f"\nrules test rules/, medians of {RUNS} alternating runs, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    for name in times:
        print(f"  {name:26}: wall {wall[name]:6.1f}s  CPU {cpu[name]:6.1f}s  rule evaluations {evaluations[name]:9,}"
              f"   runs: " + ", ".join(f"{w:.0f}s" for w, _ in times[name]))
    for name in BEFORE:
        full = next(n for n in times if n.startswith(name))
        print(f"  now against {name}: wall {wall[full] / wall['now']:.1f}x faster, CPU {cpu[full] / cpu['now']:.1f}x "
              f"less, {evaluations[full] / evaluations['now']:.1f}x fewer rule evaluations")
    assert all(wall["now"] < wall[name] for name in times if name != "now")
