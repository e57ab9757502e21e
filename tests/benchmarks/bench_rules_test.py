"""`kpi-agent rules test rules/`: wall and CPU time now, against the version before issue 19.10 (f89f8b6).

Run: .venv/bin/python -m pytest tests/benchmarks/bench_rules_test.py -s   (about 15 minutes on a busy machine)

Both versions run the same promtool on the shipped examples, alternating, three times each; the medians and
their ratio are printed with the load average. The old version is taken from git (git archive f89f8b6) into a
temporary directory and run with this interpreter, so only the code differs.
"""

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.tools import require_tool

ROOT = Path(__file__).parents[2]
BEFORE = "f89f8b6"  # main before the generated tests were made cheaper
RUNS = 3


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
    old = tmp_path / "before"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "agent"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    for run in range(RUNS):
        for name, code in (("before", old), ("after", ROOT)):
            times[name].append(_run(code, tmp_path / f"{name}{run}"))
    wall = {name: statistics.median(w for w, _ in runs) for name, runs in times.items()}
    cpu = {name: statistics.median(c for _, c in runs) for name, runs in times.items()}
    print(f"\nrules test rules/, medians of {RUNS} alternating runs, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    for name in times:
        print(f"  {name:6}: wall {wall[name]:6.1f}s  CPU {cpu[name]:6.1f}s   runs: "
              + ", ".join(f"{w:.0f}s" for w, _ in times[name]))
    print(f"  ratio : wall {wall['before'] / wall['after']:.2f}x faster, CPU {cpu['before'] / cpu['after']:.2f}x less")
    assert wall["after"] < wall["before"]
