"""Pushing 10,000 targets' series (about 400,000) into VictoriaMetrics every 15 s, three ways, side by side in
one run, and a 10-minute outage of the store at that load.

Run: .venv/bin/python -m pytest tests/benchmarks/bench_push.py -s
(KPI_BENCH_TARGETS=2000 for a shorter run; KPI_BENCH_RUNS=3 rounds of the three ways, alternating;
KPI_BENCH_OUTAGE=600 seconds of outage.)

The three ways, each a real process tree: kpi-agent with built-in push (``remote_write``); kpi-agent scraped
every 15 s by Prometheus in agent mode (``prometheus --enable-feature=agent``), which pushes; kpi-agent scraped
by vmagent, which pushes. Each run starts a fresh VictoriaMetrics and the same 10,000 targets (paths of one
small HTTP server, as in bench_scale.py), waits until every target is probed and the first samples are stored,
then measures CPU (user + system from /proc, every process of the way: the agent and, for the two others, the
shipper) over three intervals and the resident memory (sampled every second, the peak of the sum). The store
must then hold the same thing for each way: one ``probe_success`` series per target, and a sample per series
per interval. VictoriaMetrics' own CPU is the same work for every way and is not counted. The machine's load
average is printed: on a shared machine, read the CPU seconds, not the wall times.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.benchmarks.bench_scale import TARGET, load, rss_mib
from tests.helpers import Exposition, cpu_seconds, fetch, free_port, stop_processes, wait_until
from tests.push.receivers import VictoriaMetrics
from tests.tools import require_tool

INTERVAL = 15.0
TARGETS = int(os.environ.get("KPI_BENCH_TARGETS", "10000"))
RUNS = int(os.environ.get("KPI_BENCH_RUNS", "3"))
OUTAGE = float(os.environ.get("KPI_BENCH_OUTAGE", "600"))
MEASURED_INTERVALS = 3
WAYS = ("kpi-agent push", "Prometheus agent", "vmagent")


@pytest.fixture(scope="module")
def target():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", TARGET, str(port)])
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: fetch(f"{base}/__arrivals")[0] == 200, what="the target server")
    yield base
    process.terminate()
    process.wait(timeout=10)


def agent_config(directory: Path, base: str, store: VictoriaMetrics | None, buffer: Path | None = None) -> Path:
    """TARGETS targets in a file_sd file, every 15 s; pushing to ``store`` if given."""
    (directory / "targets.json").write_text(json.dumps([{"targets": [f"{base}/fleet/{i}" for i in range(TARGETS)],
                                                         "labels": {"team": "bench"}}]))
    text = f"global: {{interval: {INTERVAL:g}s, timeout: 5s}}\n"
    if store is not None:
        text += (f"remote_write_buffer: {buffer or directory / 'buffer'}\n"
                 f"remote_write: [{{url: '{store.write_url}', name: vm}}]\n")
    text += "http:\n  - name: fleet\n    file_sd_configs: [{files: [targets.json]}]\n"
    config = directory / "agent.yaml"
    config.write_text(text)
    return config


def scrape_config(directory: Path, agent_port: int, remote_write: str | None = None) -> Path:
    """Scraping the agent as deploy/prometheus does (job kpi-agent), every 15 s, with the longest timeout
    allowed (a 400,000-series page takes seconds to write on a busy machine); pushing for Prometheus."""
    config = directory / "scrape.yml"
    config.write_text(f"global: {{scrape_interval: {INTERVAL:g}s, scrape_timeout: {INTERVAL:g}s}}\n"
                      "scrape_configs:\n  - job_name: kpi-agent\n"
                      f"    static_configs: [{{targets: ['127.0.0.1:{agent_port}']}}]\n"
                      + (f"remote_write: [{{url: '{remote_write}'}}]\n" if remote_write else ""))
    return config


@dataclass
class Way:
    name: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)  # role -> process
    peak_rss: float = 0.0
    _sampling: bool = False

    def cpu(self) -> dict[str, float]:
        return {role: cpu_seconds(process.pid) for role, process in self.processes.items()}

    def rss(self) -> float:
        return sum(rss_mib(process.pid) for process in self.processes.values())

    def sample_rss(self) -> None:
        self._sampling = True

        def loop() -> None:
            while self._sampling:
                self.peak_rss = max(self.peak_rss, self.rss())
                time.sleep(1)

        threading.Thread(target=loop, daemon=True).start()

    def stop(self) -> None:
        self._sampling = False
        stop_processes(list(self.processes.values()), timeout=60)


def start_way(name: str, directory: Path, base: str, store: VictoriaMetrics) -> Way:
    directory.mkdir(parents=True)
    way = Way(name)
    port = free_port()
    config = agent_config(directory, base, store if name == "kpi-agent push" else None)
    way.processes["agent"] = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config.file", str(config), "--web.listen-address",
         f"127.0.0.1:{port}"], stderr=(directory / "agent.log").open("w"))
    wait_until(lambda: fetch(f"http://127.0.0.1:{port}/-/ready")[0] == 200, timeout=120, what="the agent")
    log = (directory / "shipper.log").open("w")
    if name == "Prometheus agent":
        config = scrape_config(directory, port, store.write_url)
        way.processes["prometheus"] = subprocess.Popen(
            [require_tool("prometheus"), "--enable-feature=agent", f"--config.file={config}",
             f"--storage.agent.path={directory / 'wal'}", f"--web.listen-address=127.0.0.1:{free_port()}"],
            stdout=log, stderr=subprocess.STDOUT)
    elif name == "vmagent":
        way.processes["vmagent"] = subprocess.Popen(
            [require_tool("vmagent"), f"-promscrape.config={scrape_config(directory, port)}",
             f"-remoteWrite.url={store.write_url}", f"-remoteWrite.tmpDataPath={directory / 'vmagent'}",
             f"-httpListenAddr=127.0.0.1:{free_port()}", "-promscrape.maxScrapeSize=1GB", "-loggerLevel=WARN"],
            stdout=log, stderr=subprocess.STDOUT)
    return way


def stored(store: VictoriaMetrics, window: float, at: float | None = None) -> tuple[int, int]:
    """Series of probe_success for the fleet, and their samples over the ``window`` seconds before ``at``."""
    store.flush()

    def query(expr: str) -> float:
        body = json.loads(store.get("/api/v1/query", query=expr, time=f"{at or time.time():.3f}"))
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    series = query('count(last_over_time(probe_success{source="fleet"}[1m]))')
    samples = query(f'sum(count_over_time(probe_success{{source="fleet"}}[{int(window)}s]))')
    return int(series), int(samples)


def run_way(name: str, directory: Path, base: str) -> dict:
    store = VictoriaMetrics(directory / "store")
    (directory / "store").mkdir(parents=True)
    store.start()
    way = start_way(name, directory / "way", base, store)
    try:
        # every target probed and its first sample stored
        wait_until(lambda: stored(store, 60)[0] >= TARGETS, timeout=180, interval=2,
                   what=f"{name}: every target's series in the store")
        time.sleep(INTERVAL)
        way.sample_rss()
        before, started = way.cpu(), time.monotonic()
        time.sleep(MEASURED_INTERVALS * INTERVAL)
        after, elapsed, ended = way.cpu(), time.monotonic() - started, time.time()
        time.sleep(INTERVAL)  # the last interval's samples reach the store, however each way sends them
        series, samples = stored(store, MEASURED_INTERVALS * INTERVAL, ended)
    finally:
        way.stop()
        store.stop()
    cpu = {role: after[role] - before[role] for role in after}
    return {"cpu": cpu, "total_cpu": sum(cpu.values()), "peak_rss": way.peak_rss, "series": series,
            "samples_per_series": samples / max(series, 1), "elapsed": elapsed}


def test_push_against_prometheus_agent_and_vmagent(tmp_path, target):
    require_tool("victoria-metrics")
    print(f"\n{TARGETS} targets every {INTERVAL:g} s pushed into VictoriaMetrics; {RUNS} runs of each way, "
          f"alternating; load at start {load()}")
    results: dict[str, list[dict]] = {name: [] for name in WAYS}
    for run in range(RUNS):
        for name in (WAYS if run % 2 == 0 else WAYS[::-1]):
            result = run_way(name, tmp_path / f"{run}-{name.replace(' ', '-')}", target)
            results[name].append(result)
            print(f"  run {run + 1} {name}: CPU {result['total_cpu']:.1f} s over {result['elapsed']:.0f} s "
                  f"({', '.join(f'{role} {seconds:.1f}' for role, seconds in result['cpu'].items())}); peak RSS "
                  f"{result['peak_rss']:.0f} MiB; stored {result['series']} series, "
                  f"{result['samples_per_series']:.2f} samples per series; load {load()}")
    medians = {name: {key: statistics.median(r[key] for r in runs) for key in ("total_cpu", "peak_rss")}
               for name, runs in results.items()}
    ours = medians["kpi-agent push"]
    for name in WAYS[1:]:
        theirs = medians[name]
        print(f"  kpi-agent scraped by {name}: {theirs['total_cpu'] / ours['total_cpu']:.2f}x the CPU and "
              f"{theirs['peak_rss'] / ours['peak_rss']:.2f}x the memory of kpi-agent pushing itself "
              f"({theirs['total_cpu']:.1f} s against {ours['total_cpu']:.1f} s of CPU per "
              f"{MEASURED_INTERVALS} intervals, {theirs['peak_rss']:.0f} MiB against {ours['peak_rss']:.0f} MiB)")
    for name, runs in results.items():  # the store holds the same for every way
        for result in runs:
            assert result["series"] == TARGETS, (name, result)
            assert abs(result["samples_per_series"] - MEASURED_INTERVALS) < 0.1, (name, result)


def skipped(port: int) -> float:
    page = Exposition(fetch(f"http://127.0.0.1:{port}/metrics", timeout=120)[1].encode())
    return page.value("kpi_agent_remote_storage_rounds_skipped_total") or 0.0


def test_ten_minute_outage_at_that_load_loses_nothing(tmp_path, target):
    """The store goes down for OUTAGE seconds while the agent pushes TARGETS targets; when it is back, every
    round of the outage arrives: catch-up time and the buffer's peak size are printed."""
    require_tool("victoria-metrics")
    store = VictoriaMetrics(tmp_path / "store")
    (tmp_path / "store").mkdir()
    store.start()
    directory = tmp_path / "agent"
    directory.mkdir()
    port = free_port()
    config = agent_config(directory, target, store)
    agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config.file", str(config),
                              "--web.listen-address", f"127.0.0.1:{port}"], stderr=(directory / "agent.log").open("w"))
    status = f"http://127.0.0.1:{port}/api/v1/remote_write"
    peak = {"buffer": 0, "pending": 0, "rss": 0.0}
    sampling = True

    def sample() -> None:
        while sampling:
            try:
                (endpoint,) = json.loads(fetch(status)[1])
                peak["buffer"] = max(peak["buffer"], endpoint["buffer_bytes"])
                peak["pending"] = max(peak["pending"], endpoint["pending_samples"])
                peak["rss"] = max(peak["rss"], rss_mib(agent.pid))
            except (OSError, ValueError):
                pass
            time.sleep(1)

    try:
        wait_until(lambda: stored(store, 60)[0] >= TARGETS, timeout=180, interval=2, what="every target stored")
        threading.Thread(target=sample, daemon=True).start()
        print(f"\n{TARGETS} targets every {INTERVAL:g} s; the store goes down for {OUTAGE:g} s; load {load()}")
        skipped_before = skipped(port)
        down = time.time()
        store.stop()
        time.sleep(OUTAGE)
        store.start()
        back = time.time()
        skipped_during = skipped(port) - skipped_before
        wait_until(lambda: json.loads(fetch(status, timeout=30)[1])[0]["pending_samples"] == 0,
                   timeout=OUTAGE + 600, interval=1, what="the catch-up")
        caught_up = time.time()
        time.sleep(2)
        store.flush()
        # every round during the outage is in the store: one sample per target per interval, none missing
        body = json.loads(store.get("/api/v1/query", query=(
            f'count_over_time(probe_success{{source="fleet"}}[{int(back - down)}s])'), time=f"{back:.3f}"))
        per_series = [float(series["value"][1]) for series in body["data"]["result"]]
        page = fetch(f"http://127.0.0.1:{port}/metrics", timeout=120)[1]
    finally:
        sampling = False
        stop_processes([agent], timeout=60)
        store.stop()
    rounds = (back - down) / INTERVAL - skipped_during  # the rounds the agent took during the outage
    exposition = Exposition(page.encode())
    queued = exposition.value("kpi_agent_remote_storage_samples_in_total")
    settled = (exposition.value("kpi_agent_remote_storage_samples_total") +
               exposition.value("kpi_agent_remote_storage_samples_failed_total") +
               exposition.total("kpi_agent_remote_storage_samples_dropped_total"))
    print(f"  catch-up: {caught_up - back:.1f} s after the store came back; peak buffer "
          f"{peak['buffer'] / 2**20:.0f} MiB on disk ({peak['pending']:,} samples pending); peak RSS "
          f"{peak['rss']:.0f} MiB; load {load()}")
    print(f"  per series {min(per_series):.0f} to {max(per_series):.0f} samples stored over the {back - down:.0f} s "
          f"of the outage: the {rounds:.1f} rounds taken ({skipped_during:.0f} skipped: a round still running at the "
          f"next one's time); samples queued {queued:,.0f}, acknowledged {settled:,.0f}, refused "
          f"{exposition.value('kpi_agent_remote_storage_samples_failed_total'):,.0f}, dropped "
          f"{exposition.total('kpi_agent_remote_storage_samples_dropped_total'):,.0f}")
    assert len(per_series) == TARGETS
    assert min(per_series) >= int(rounds) - 1  # every round of the outage (the edges may fall either side)
    assert queued == settled and exposition.value("kpi_agent_remote_storage_samples_failed_total") == 0
    assert exposition.total("kpi_agent_remote_storage_samples_dropped_total") == 0
