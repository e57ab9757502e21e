"""How long a log-only agent takes to start, against mtail, in the same run.

Run: .venv/bin/python -m pytest tests/benchmarks/bench_start.py -s   (KPI_BENCH_STARTS=21 for more starts;
KPI_BENCH_BEFORE=<a checkout of the agent as it was, with its own .venv> to measure that one too, alternating)

From exec of `python -m agent run --config.file X` to the first answered GET /metrics, the way every CLI
command, every test that starts an agent and bench_logs.py pay it; mtail's is the same span for `mtail --progs
--logs` on the same empty log. The starts alternate (this checkout, the one before if given, mtail), so all see
the same load; each figure is the median of the starts: wall time, and CPU time (user + system, from wait4 after
SIGTERM, which adds the shutdown) that load does not inflate the way it does wall time. Both agents run from
compiled bytecode (each checkout is byte-compiled first), as an installed agent does.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.helpers import free_port
from tests.tools import require_tool

STARTS = int(os.environ.get("KPI_BENCH_STARTS", "11"))
ROOT = Path(__file__).parents[2]
BEFORE = os.environ.get("KPI_BENCH_BEFORE")
CONFIG = """\
logs:
  - name: app
    paths: ['{log}']
    start_at: beginning
    pattern: '^(?P<method>[A-Z]+) (?P<status>\\d+)'
    metrics: [{{name: requests_total, type: counter, labels: [method, status]}}]
"""
MTAIL_PROG = """\
counter requests_total by method, status
/^(?P<method>[A-Z]+) (?P<status>\\d+)/ {
  requests_total[$method][$status]++
}
"""


def _first_page(command: list[str], port: int, cwd: Path) -> tuple[float, float]:
    """Seconds from exec to the first answered /metrics, and the CPU seconds the process took in all."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    response.read()
                break
            except OSError:
                assert process.poll() is None, f"{command[0]} exited before answering"
                time.sleep(0.002)
        waited = time.monotonic() - started
    finally:
        process.send_signal(signal.SIGTERM)
        _, _, usage = os.wait4(process.pid, 0)
        process.returncode = 0  # reaped above
    return waited, usage.ru_utime + usage.ru_stime


def test_start_of_a_log_only_agent_against_mtail(tmp_path):
    mtail = require_tool("mtail")
    log = tmp_path / "app.log"
    log.touch()
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.format(log=log))
    progs = tmp_path / "progs"
    progs.mkdir()
    (progs / "app.mtail").write_text(MTAIL_PROG)
    checkouts = {"this": ROOT, **({"before": Path(BEFORE)} if BEFORE else {})}
    for checkout in checkouts.values():
        subprocess.run([str(checkout / ".venv/bin/python"), "-m", "compileall", "-q", str(checkout / "agent")],
                       check=True, stdout=subprocess.DEVNULL)

    def agent(checkout: Path, port: int) -> list[str]:
        return [str(checkout / ".venv/bin/python"), "-m", "agent", "run", "--config.file", str(config),
                "--web.listen-address", f"127.0.0.1:{port}"]

    def anchor(port: int) -> list[str]:
        return [mtail, "--progs", str(progs), "--logs", str(log), "--address", "127.0.0.1", "--port", str(port)]

    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in [*checkouts, "mtail"]}
    load = [os.getloadavg()[0]]
    for _ in range(STARTS):
        for name, checkout in checkouts.items():
            port = free_port()
            runs[name].append(_first_page(agent(checkout, port), port, checkout))
        port = free_port()
        runs["mtail"].append(_first_page(anchor(port), port, tmp_path))
    load.append(os.getloadavg()[0])

    medians = {name: (statistics.median(w for w, _ in got), statistics.median(c for _, c in got))
               for name, got in runs.items()}
    print(f"\nexec to first answered /metrics, median of {STARTS} alternating starts, load average "
          f"{load[0]:.1f} -> {load[1]:.1f} on {os.cpu_count()} cores")
    print(f"{'':10}{'wall ms':>9}{'CPU ms':>8}   vs mtail: wall  CPU")
    for name, (wall, cpu) in medians.items():
        print(f"  {name:8}{wall * 1000:9.1f}{cpu * 1000:8.1f}   {wall / medians['mtail'][0]:14.2f}x"
              f"{cpu / medians['mtail'][1]:5.2f}x")
    if BEFORE:
        (wall, cpu), (old_wall, old_cpu) = medians["this"], medians["before"]
        print(f"  this over before: wall {wall / old_wall:.2f}x, CPU {cpu / old_cpu:.2f}x")
