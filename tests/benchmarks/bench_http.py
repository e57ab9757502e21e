"""Per-probe cost: our HttpSource vs blackbox_exporter's http prober, same target, same number of probes.

Run: .venv/bin/python -m pytest tests/benchmarks/bench_http.py -s
(two benchmarks: CPU per probe, and an HTTP-only agent's start-up and memory)
(tests/benchmarks/bench_scale.py measures 10,000 targets on their schedule against blackbox_exporter.)
The target runs in its own process. Our probes run in this process (CPU = this process's CPU time during
the run); blackbox_exporter runs in its own (CPU from /proc), driven through /probe by a client here. Both
open a new connection per probe.
"""

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from agent.config.agent import parse_config
from agent.config.yaml import load_text
from agent.series.store import Store
from agent.sources.base import SourceContext
from agent.sources.probe.source import ProbeSource
from tests.helpers import OK_TARGET, build_source, cpu_seconds, fetch, free_port, wait_until
from tests.tools import require_tool

PROBES = 2000
CONCURRENCY = 20
ROUNDS = 5

async def run_ours(url: str) -> tuple[float, float]:
    text = "http:\n" + "".join(f"  - name: bench-{i}\n    url: {url}\n" for i in range(CONCURRENCY))
    configs = parse_config(load_text(text, "b.yaml"), "b.yaml")[0].of_kind("http")
    store = Store()
    context = SourceContext()
    try:
        sources = [build_source(store, context, config, "http") for config in configs]
        wall, cpu = time.perf_counter(), time.process_time()

        async def worker(source: ProbeSource) -> None:
            for _ in range(PROBES // CONCURRENCY):
                assert await source.probe() == "success"

        await asyncio.gather(*(worker(s) for s in sources))
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await context.close()


async def run_blackbox(probe_url: str, pid: int) -> tuple[float, float]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        wall, cpu = time.perf_counter(), cpu_seconds(pid)

        async def worker() -> None:
            for _ in range(PROBES // CONCURRENCY):
                async with session.get(probe_url) as response:
                    assert "probe_success 1" in await response.text()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return time.perf_counter() - wall, cpu_seconds(pid) - cpu


def test_probe_cost_against_blackbox(tmp_path):
    blackbox = require_tool("prometheus-blackbox-exporter")
    target_port, blackbox_port = free_port(), free_port()
    target = subprocess.Popen([sys.executable, "-c", OK_TARGET, str(target_port)])
    (tmp_path / "blackbox.yml").write_text("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n")
    exporter = subprocess.Popen([blackbox, f"--config.file={tmp_path / 'blackbox.yml'}",
                                 f"--web.listen-address=127.0.0.1:{blackbox_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{target_port}/ok"
    ours, theirs = [], []
    try:
        wait_until(lambda: fetch(url)[0] == 200)
        wait_until(lambda: fetch(f"http://127.0.0.1:{blackbox_port}/-/healthy")[0] == 200)
        probe_url = f"http://127.0.0.1:{blackbox_port}/probe?module=http_2xx&target={url}"
        for _ in range(ROUNDS):  # alternating, so both see the same load on a shared machine
            ours.append(asyncio.run(run_ours(url)))
            theirs.append(asyncio.run(run_blackbox(probe_url, exporter.pid)))
    finally:
        for process in (exporter, target):
            process.terminate()
            process.wait(timeout=10)
    ours_wall, ours_cpu = (statistics.median(run[i] for run in ours) for i in (0, 1))
    bb_wall, bb_cpu = (statistics.median(run[i] for run in theirs) for i in (0, 1))
    print(f"\n{PROBES} probes of a local target, {CONCURRENCY} at a time, new connection per probe; median of "
          f"{ROUNDS} alternating rounds; load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(f"  blackbox_exporter: {PROBES / bb_wall:7.0f} probes/s, {bb_cpu / PROBES * 1e6:6.0f} us CPU per probe "
          f"(its process only; rounds: {[round(run[1] / PROBES * 1e6) for run in theirs]})")
    print(f"  kpi-agent:         {PROBES / ours_wall:7.0f} probes/s, {ours_cpu / PROBES * 1e6:6.0f} us CPU per probe "
          f"(rounds: {[round(run[1] / PROBES * 1e6) for run in ours]})")
    print(f"  ratio: {bb_cpu / ours_cpu:.2f}x blackbox's CPU per probe (above 1 = we use less)")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_an_http_only_agent_starts_and_weighs_against_blackbox(tmp_path):
    """Start-up (process start to the first probe's result) and resident memory after 20 probes, of an agent with
    one HTTP source and of blackbox_exporter asked for the same probe: alternating, medians of 3."""
    blackbox = require_tool("prometheus-blackbox-exporter")
    target_port = free_port()
    target = subprocess.Popen([sys.executable, "-c", OK_TARGET, str(target_port)])
    url = f"http://127.0.0.1:{target_port}/ok"
    (tmp_path / "blackbox.yml").write_text("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n")
    ours, theirs = [], []
    try:
        wait_until(lambda: fetch(url)[0] == 200)
        for _ in range(3):
            port = free_port()
            config = tmp_path / "agent.yaml"
            config.write_text(f"http:\n  - {{name: web, url: '{url}', interval: 100ms}}\n")
            started = time.perf_counter()
            agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config.file", str(config),
                                      "--web.listen-address", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
            metrics = f"http://127.0.0.1:{port}/metrics"
            try:
                wait_until(lambda m=metrics: _probes(fetch(m)[1]) >= 1, interval=0.01)
                first = time.perf_counter() - started
                wait_until(lambda m=metrics: _probes(fetch(m)[1]) >= 20)
                ours.append((first, _rss_mib(agent.pid)))
            finally:
                agent.terminate()
                agent.wait(timeout=10)
            port = free_port()
            started = time.perf_counter()
            exporter = subprocess.Popen([blackbox, f"--config.file={tmp_path / 'blackbox.yml'}",
                                         f"--web.listen-address=127.0.0.1:{port}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            probe = f"http://127.0.0.1:{port}/probe?module=http_2xx&target={url}"
            try:
                wait_until(lambda p=probe: "probe_success 1" in fetch(p)[1], interval=0.01)
                first = time.perf_counter() - started
                for _ in range(19):
                    fetch(probe)
                theirs.append((first, _rss_mib(exporter.pid)))
            finally:
                exporter.terminate()
                exporter.wait(timeout=10)
    finally:
        target.terminate()
        target.wait(timeout=10)
    our_start, our_rss = (statistics.median(run[i] for run in ours) for i in (0, 1))
    bb_start, bb_rss = (statistics.median(run[i] for run in theirs) for i in (0, 1))
    print(f"\nOne HTTP target, process start to first probe result, RSS after 20 probes; median of 3 alternating; "
          f"load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(f"  blackbox_exporter: {bb_start:5.2f} s to the first probe, {bb_rss:5.1f} MiB")
    print(f"  kpi-agent:         {our_start:5.2f} s to the first probe, {our_rss:5.1f} MiB")
    print(f"  ratio: start-up {our_start / bb_start:.2f}x, RSS {our_rss / bb_rss:.2f}x blackbox's (below 1 = less)")


def _probes(page: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith("probes_total{"))
