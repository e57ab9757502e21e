"""The CPU a running agent spends per scrape of /metrics, on three pages, read from /proc over many scrapes.

Run: .venv/bin/python -m pytest tests/benchmarks/bench_scrape.py -s
(KPI_BENCH_BEFORE=<a checkout of the agent as it was> measures that one too, alternating with this one, in the
same run, and prints the ratio; KPI_BENCH_RUNS=3 runs of each, KPI_BENCH_SCRAPES=1000 scrapes a run,
KPI_BENCH_PAGES=logs,paths,targets the pages, KPI_BENCH_GZIP=1 to ask for gzip as Prometheus does.)

Each agent is a real `kpi-agent run` process, scraped by a client here over a new connection each time, as
bench_logs polls it (Prometheus keeps its connection: slightly less per scrape). The pages:

- logs: bench_logs' features-off agent (requests by method and status, bytes by method, an 11-bucket latency
  histogram by method) over 20,000 lines of its access log: the page bench_logs reads every 20 ms, about 300
  lines, most of them the agent's own histograms;
- paths: one log counter by path, 10,000 paths: 10,000 series of one family;
- targets: 250 HTTP targets of a file_sd source (41 series each, in the source's table), probed every 10 s; the
  CPU the agent spends while not scraped is measured over as long a time just before and taken out.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.benchmarks.bench_logs import OURS, write_access_logs
from tests.helpers import free_port

RUNS = int(os.environ.get("KPI_BENCH_RUNS", "3"))
SCRAPES = int(os.environ.get("KPI_BENCH_SCRAPES", "1000"))
BEFORE = os.environ.get("KPI_BENCH_BEFORE")  # `python -m agent` run in that directory imports its agent/
PAGES = os.environ.get("KPI_BENCH_PAGES", "logs,paths,targets").split(",")
HEADERS = {"Accept-Encoding": "gzip"} if os.environ.get("KPI_BENCH_GZIP") == "1" else {}
TICKS = os.sysconf("SC_CLK_TCK")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def page(url: str) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, headers=HEADERS), timeout=30) as response:
        body = response.read()
    return (gzip.decompress(body) if response.headers.get("Content-Encoding") == "gzip" else body).decode()


def pages(directory: Path) -> dict[str, tuple[Path, re.Pattern[str], int]]:
    """Each page's config, and the sample (and the count of its lines) that says the page is complete."""
    plain, as_json = directory / "access.log", directory / "access.json.log"
    write_access_logs(plain, as_json, 20_000)
    paths = directory / "paths.log"
    paths.write_text("".join(f'10.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "GET /p/{i % 10_000} HTTP/1.1" 200 512 "-" '
                             f'"bench/1.0" 0.010\n' for i in range(20_000)))
    logs = directory / "logs.yaml"
    logs.write_text(json.dumps({"logs": [{"name": "bench", "paths": [str(plain)], "start_at": "beginning",
                                          **OURS["off"]}]}))
    by_path = directory / "paths.yaml"
    by_path.write_text(json.dumps({"logs": [{"name": "bench", "paths": [str(paths)], "start_at": "beginning",
                                             "pattern": OURS["off"]["pattern"], "metrics": [
                                                 {"name": "http_requests_total", "type": "counter",
                                                  "labels": ["path"]}]}]}))
    (directory / "targets.json").write_text(json.dumps([{"targets": [f"http://127.0.0.1:9/t/{i}" for i in range(250)],
                                                         "labels": {"team": "bench"}}]))
    targets = directory / "targets.yaml"
    targets.write_text("global: {interval: 10s, timeout: 1s}\nhttp:\n  - name: fleet\n"
                       f"    file_sd_configs: [{{files: [{directory / 'targets.json'}]}}]\n")
    lines = re.compile(r'^kpi_agent_log_lines_total\{source="bench"\} 20000\.0$', re.M)
    return {"logs": (logs, lines, 1), "paths": (by_path, lines, 1),
            "targets": (targets, re.compile(r"^probe_success\{", re.M), 250)}


def per_scrape(config: Path, complete: re.Pattern[str], count: int, checkout: str | None) -> tuple[float, int]:
    """Milliseconds of the agent's CPU per scrape, and the page's size in bytes."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config.file", str(config),
                                "--web.listen-address", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL, cwd=checkout)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the agent exited or never completed"
            try:
                text = page(url)
            except OSError:
                text = ""
            if len(complete.findall(text)) >= count:
                break
            time.sleep(0.05)
        time.sleep(0.5)
        idle_from, idle_cpu = time.monotonic(), cpu(process.pid)
        time.sleep(1.0)
        idle_rate = (cpu(process.pid) - idle_cpu) / (time.monotonic() - idle_from)
        started, before = time.monotonic(), cpu(process.pid)
        for _ in range(SCRAPES):
            text = page(url)
        spent = cpu(process.pid) - before - idle_rate * (time.monotonic() - started)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    return spent / SCRAPES * 1000, len(text.encode())


def test_cpu_per_scrape(tmp_path):
    checkouts = {"this": None, **({"before": BEFORE} if BEFORE else {})}
    print(f"\n{SCRAPES} scrapes per run{', gzip' if HEADERS else ''}, {RUNS} runs alternating; load {load()}")
    for name, (config, complete, count) in pages(tmp_path).items():
        if name not in PAGES:
            continue
        runs: dict[str, list[float]] = {checkout: [] for checkout in checkouts}
        size = 0
        for _ in range(RUNS):
            for checkout, directory in checkouts.items():  # alternating: the machine's load weighs on both alike
                milliseconds, size = per_scrape(config, complete, count, directory)
                runs[checkout].append(milliseconds)
        ours = statistics.median(runs["this"])
        line = f"  {name:8s} page {size / 1024:7.1f} KiB: this {ours:6.3f} ms per scrape {runs['this']}"
        if BEFORE:
            theirs = statistics.median(runs["before"])
            line += f"; before {theirs:6.3f} ms {runs['before']}: {theirs / ours:.2f}x less CPU per scrape"
        print(f"{line}; load {load()}")
        assert ours > 0
