"""What the dns, icmp and grpc kinds cost an agent that has no source of theirs (issue 20: "start-up and RSS of
an agent with no gRPC source unchanged, within 5%").

Run: .venv/bin/python -m pytest tests/benchmarks/bench_kinds_footprint.py -s

The same code (this checkout), an agent probing one HTTP target (its own /-/healthy), started three ways,
alternating: as it is; with the three kinds' packages replaced by empty stand-ins before anything imports them
(what the agent was before they landed, on today's code: the agent would fail if it asked the kinds table for
one); and with the three packages imported at start, as the kinds table did before it loaded kinds on first
use. Measured per start: the wall time from spawn to /-/ready, the process's CPU time by then (less sensitive to
a busy machine than the wall time) and its resident memory (VmRSS) once the first probe is recorded. Medians of
ROUNDS starts each; the ratios are against the agent without the kinds.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import cpu_seconds, fetch, free_port, scrape

ROUNDS = 15
ABSENT = ("dns", "icmp", "grpc")

# The agent's entry point, behind the same launcher every way (so the launcher costs each the same)
LAUNCHER = """
import sys, types
mode, kinds = sys.argv[1], ("dns", "icmp", "grpc")
if mode == "without":  # stand-ins: the kinds table would get a KIND-less module, and the agent fail
    for name in kinds:
        sys.modules[f"agent.sources.{name}"] = types.ModuleType(f"agent.sources.{name}")
elif mode == "eager":  # what importing the kinds table did before it loaded kinds on first use
    import agent.sources.dns, agent.sources.icmp, agent.sources.grpc
from agent.cli import main
sys.argv = ["kpi-agent", *sys.argv[2:]]
main()
"""
MODES = {"as is": "as-is", "without dns/icmp/grpc": "without", "eager (before)": "eager"}


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def start_once(config: Path, mode: str) -> tuple[float, float, int]:
    """(seconds to /-/ready, CPU seconds by then, RSS bytes after the first probe)."""
    port = int(config.read_text().split("127.0.0.1:")[1].split("/")[0])
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER, mode, "run", "--config.file",
                                str(config), "--web.listen-address", f"127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                if fetch(base + "/-/ready", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, "the agent exited"
            time.sleep(0.002)
        ready = time.perf_counter() - started
        cpu = cpu_seconds(process.pid)
        while not scrape(base + "/metrics").total("probes_total"):
            time.sleep(0.01)
        return ready, cpu, _rss_bytes(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_http_only_agent_with_and_without_the_new_kinds(tmp_path):
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(f"http:\n  - {{name: self, url: 'http://127.0.0.1:{port}/-/healthy', interval: 1s}}\n")
    runs: dict[str, list[tuple[float, float, int]]] = {mode: [] for mode in MODES.values()}
    start_once(config, "as-is")  # warm the page cache and the bytecode: not what we measure
    for _ in range(ROUNDS):
        for mode in MODES.values():
            runs[mode].append(start_once(config, mode))

    def median(mode: str, index: int) -> float:
        return statistics.median(run[index] for run in runs[mode])

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\nHTTP-only agent, {ROUNDS} alternating starts each way; load {load}")
    for what, index, unit, scale in (("start to /-/ready (wall)", 0, "ms", 1e3),
                                     ("CPU time by /-/ready", 1, "ms", 1e3),
                                     ("RSS after the first probe", 2, "MiB", 2**-20)):
        base = median("without", index)
        cells = ", ".join(f"{label} {median(mode, index) * scale:.1f} {unit} ({median(mode, index) / base:.3f}x)"
                          for label, mode in MODES.items())
        print(f"  {what}: {cells}")
    print("  goal: as is within 1.05x of without dns/icmp/grpc")
