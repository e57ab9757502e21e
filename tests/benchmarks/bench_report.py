"""A 30-day report of the shipped example (rules/shop.yaml) against 30 days of history: its size and build time.

Run: .venv/bin/python -m pytest tests/benchmarks/bench_report.py -s
     (REPORT_SCREENSHOT=docs/report.png also writes the README's picture of the report)

Thirty days cannot be waited for, so they are backfilled the way Prometheus documents: a month of the shop's
raw series (a daily traffic cycle, a two-hour checkout incident on day 18, conversion sliding in the last 12
days, recurring revenue growing) written as OpenMetrics and turned into blocks by `promtool tsdb
create-blocks-from openmetrics`; then the generated recording rules evaluated over that month by `promtool
tsdb create-blocks-from rules` against a real Prometheus, exactly what a team adding kpi-agent to an existing
Prometheus would do to get history for new rules. promtool evaluates each rule file alone, so a rule that reads
another rule's record sees it only once that record's blocks are in Prometheus: the rules are backfilled in
passes, one dependency level at a time (the denominators, then the numerators that fall back on them), each
pass's blocks moved into Prometheus before the next. Only the records the report reads, and what they read, are
backfilled; a record that reads itself (the numerator's last-seen time, which only matters once a numerator
vanishes) cannot be, and reads as absent, as on a fresh Prometheus.
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from PIL import Image

from agent.kpi.render import render_prometheus
from tests.browser import Browser
from tests.helpers import fetch, free_port, wait_until
from tests.kpi.helpers import load_spec
from tests.tools import require_tool

ROOT = Path(__file__).parents[2]
DAYS = 30
SCRAPE = 60  # seconds between backfilled samples
WARMUP = 3600  # seconds of history before the report's period
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# share of requests at or below each bucket bound, normally and during the incident
NORMAL = (0.02, 0.10, 0.40, 0.75, 0.93, 0.985, 0.995, 0.999, 1, 1, 1)
INCIDENT = (0.01, 0.05, 0.20, 0.40, 0.60, 0.75, 0.85, 0.93, 0.985, 0.999, 1)


# the job Prometheus scrapes the agent as in deploy/prometheus, which rules/shop.yaml selects
JOB = 'job="kpi-agent"'


def _shape(t: float, start: float) -> dict[str, float]:
    """Per-second rates and levels of the shop at time t."""
    day = (t - start) / 86400
    hour = (t % 86400) / 3600
    requests = 4 + 3 * math.sin((hour - 9) / 24 * 2 * math.pi)  # busiest mid-afternoon UTC
    incident = 18 + 14 / 24 <= day < 18 + 16 / 24
    errors = 0.08 if incident else 0.02 if 25 + 3 / 24 <= day < 25 + 4 / 24 else 0.0003
    conversion = 0.032 if day < DAYS - 12 else 0.025
    return {"requests": requests, "errors": errors, "incident": float(incident), "conversion": conversion,
            "mrr": 97000 + 8000 * day / DAYS + 400 * math.sin(day * 2 * math.pi / 7)}


def expected_values(start: float, end: float) -> dict[str, float]:
    """What each KPI of rules/shop.yaml is over [start, end], worked out from the shape itself (traffic-weighted
    for ratios, as the report computes them): the report must say the same."""
    times = [start + i * SCRAPE for i in range(int((end - start) // SCRAPE) + 1)]
    shapes = [_shape(t, start) for t in times]
    requests = sum(s["requests"] for s in shapes)
    within = BUCKETS.index(0.25)  # request_latency's le
    return {
        "checkout_availability": 100 * sum(s["requests"] * (1 - s["errors"]) for s in shapes) / requests,
        "request_latency": 100 * sum(s["requests"] * (INCIDENT if s["incident"] else NORMAL)[within]
                                     for s in shapes) / requests,
        "home_page_up": 100 * sum(1 - s["incident"] for s in shapes) / len(shapes),
        "checkout_conversion": 100 * sum(s["requests"] * s["conversion"] for s in shapes) / requests,
        "monthly_recurring_revenue": sum(s["mrr"] for s in shapes) / len(shapes),
    }


def openmetrics(start: float, end: float) -> str:
    """The raw series from WARMUP before start (so every rate window is full when the report's period begins,
    as it is for a service that ran before the period) to end."""
    times = [start - WARMUP + i * SCRAPE for i in range(int((end - start + WARMUP) // SCRAPE) + 1)]
    good = bad = orders = started = 0.0
    buckets = [0.0] * len(BUCKETS)
    total_seconds = 0.0
    requests, histogram, business, mrr, probes = [], [], [], [], []
    for t in times:
        shape = _shape(t, start)
        n = shape["requests"] * SCRAPE
        good += n * (1 - shape["errors"])
        bad += n * shape["errors"]
        profile = INCIDENT if shape["incident"] else NORMAL
        buckets = [b + n * share for b, share in zip(buckets, profile, strict=True)]
        total_seconds += n * (0.9 if shape["incident"] else 0.045)
        started += n * 0.6
        orders += n * 0.6 * shape["conversion"]
        stamp = f"{t:.0f}"
        labels = f'{JOB},path="/api/checkout"'
        requests.append(f'http_requests_total{{{labels},status="200"}} {good:.3f} {stamp}')
        requests.append(f'http_requests_total{{{labels},status="500"}} {bad:.3f} {stamp}')
        for bound, count in zip(BUCKETS, buckets, strict=True):
            histogram.append(f'http_request_duration_seconds_bucket{{{JOB},le="{bound}"}} {count:.3f} {stamp}')
        histogram.append(f'http_request_duration_seconds_bucket{{{JOB},le="+Inf"}} {good + bad:.3f} {stamp}')
        histogram.append(f'http_request_duration_seconds_count{{{JOB}}} {good + bad:.3f} {stamp}')
        histogram.append(f'http_request_duration_seconds_sum{{{JOB}}} {total_seconds:.3f} {stamp}')
        business.append(f"shop_orders_total{{{JOB}}} {orders:.3f} {stamp}")
        business.append(f"shop_checkouts_started_total{{{JOB}}} {started:.3f} {stamp}")
        mrr.append(f'shop_mrr_dollars{{{JOB}}} {shape["mrr"]:.2f} {stamp}')
        probes.append(f'probe_success{{{JOB},target="shop-home"}} {0 if shape["incident"] else 1} {stamp}')
    orders_lines = [line for line in business if line.startswith("shop_orders")]
    started_lines = [line for line in business if line.startswith("shop_checkouts")]
    return "\n".join(["# TYPE http_requests counter", *requests,
                      "# TYPE http_request_duration_seconds histogram", *histogram,
                      "# TYPE shop_orders counter", *orders_lines,
                      "# TYPE shop_checkouts_started counter", *started_lines,
                      "# TYPE shop_mrr_dollars gauge", *mrr, "# TYPE probe_success gauge", *probes, "# EOF", ""])


REPORT_READS = ("kpi:numerator:rate5m", "kpi:denominator:rate5m", "kpi:value", "kpi:target")


def _rule_passes(directory: Path) -> list[Path]:
    """The generated rules the report needs, one file per dependency level, evaluated every minute."""
    spec = load_spec(ROOT / "rules" / "shop.yaml")
    document = yaml.safe_load(render_prometheus(spec, "shop.yaml", interval="1m"))
    reads: dict[str, set[str]] = {}
    for group in document["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                reads.setdefault(rule["record"], set()).update(re.findall(r"kpi:[a-z0-9_:]+", rule["expr"]))
    needed: set[str] = set()
    wanted = [name for name in REPORT_READS if name in reads]
    while wanted:
        name = wanted.pop()
        if name not in needed and name not in reads[name]:
            needed.add(name)
            wanted += [read for read in reads[name] if read in reads]
    levels: dict[str, int] = {}
    while len(levels) < len(needed):
        ready = {name: max((levels[read] + 1 for read in reads[name] & needed), default=0)
                 for name in needed - set(levels) if reads[name] & needed <= set(levels)}
        assert ready, f"a cycle among {needed - set(levels)}"
        levels.update(ready)
    paths = []
    for level in range(max(levels.values()) + 1):
        passed = {**document, "groups": [{**group, "rules": [rule for rule in group["rules"]
                                                             if levels.get(rule.get("record", "")) == level]}
                                         for group in document["groups"]]}
        passed["groups"] = [group for group in passed["groups"] if group["rules"]]
        paths.append(directory / f"pass{level}.rules.yml")
        paths[-1].write_text(yaml.safe_dump(passed, sort_keys=False))
    return paths


def _prometheus(binary: str, data: Path, port: int) -> subprocess.Popen:
    config = data.parent / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1m}\n")
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
                                "--storage.tsdb.retention.time=400d", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: fetch(f"http://127.0.0.1:{port}/-/ready")[0] == 200, 120, what="Prometheus ready")
    return process


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=60)


async def test_report_of_the_shipped_example_over_30_days(tmp_path):
    prometheus, promtool, chromium = require_tool("prometheus"), require_tool("promtool"), require_tool("chromium")
    end = (time.time() // 3600 - 1) * 3600
    start = end - DAYS * 86400
    data = tmp_path / "tsdb"
    (tmp_path / "shop.om").write_text(openmetrics(start, end))
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(tmp_path / "shop.om"), str(data)],
                   check=True, capture_output=True, timeout=1800)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    began = time.monotonic()
    for number, rules in enumerate(_rule_passes(tmp_path)):
        server = _prometheus(prometheus, data, port)
        try:
            out = tmp_path / f"rule-blocks-{number}"
            subprocess.run([promtool, "tsdb", "create-blocks-from", "rules", f"--url={url}",
                            f"--start={start - WARMUP:.0f}", f"--end={end:.0f}", f"--output-dir={out}", "--quiet",
                            str(rules)],
                           check=True, capture_output=True, timeout=3600)
        finally:
            _stop(server)
        for block in out.iterdir():
            shutil.move(str(block), data / block.name)
    print(f"\nbackfilled {DAYS} days of KPI rules in {number + 1} passes in {time.monotonic() - began:.0f}s")
    server = _prometheus(prometheus, data, port)
    try:
        at = datetime.fromtimestamp(end, UTC).isoformat().replace("+00:00", "Z")
        figures = {}
        for name in ("report.html", "report.pdf"):
            out = tmp_path / name
            began = time.monotonic()
            result = subprocess.run([sys.executable, "-m", "agent", "report", str(ROOT / "rules"),
                                     "--prometheus.url", url, "--period", "30d", "--at", at, "--out", str(out)],
                                    capture_output=True, text=True, timeout=600)
            figures[name] = (time.monotonic() - began, out.stat().st_size)
            assert result.returncode == 0, result.stderr
        for name, (seconds, size) in figures.items():
            print(f"{name}: {size / 1024:.0f} KiB, built in {seconds:.1f}s (whole command, 5 KPIs, 30 days)")
        async with Browser(chromium) as browser:
            page = await browser.new_page()
            await page.goto((tmp_path / "report.html").as_uri())
            assert page.errors == []
            rows = await page.evaluate("[...document.querySelectorAll('table.summary tbody tr')]"
                                       ".map(r => [...r.cells].map(c => c.innerText.trim()).join(' | '))")
            print("\n".join(rows))
            png = await page.screenshot()
        expected = expected_values(start, end)
        shown = {cells[2]: float(cells[3].rstrip("%").replace(",", "")) for cells in (row.split(" | ") for row in rows)}
        assert shown.keys() == expected.keys(), shown
        for name, value in expected.items():  # the report says what the month was, to its displayed precision
            tolerance = 0.02 if name != "monthly_recurring_revenue" else 0.001 * value
            assert abs(shown[name] - value) <= tolerance, (name, shown[name], value)
        shot = tmp_path / "report.png"
        shot.write_bytes(png)
        print(f"screenshot: {shot} ({Image.open(io.BytesIO(png)).size})")
        if os.environ.get("REPORT_SCREENSHOT"):
            shutil.copy(shot, os.environ["REPORT_SCREENSHOT"])
    finally:
        _stop(server)
