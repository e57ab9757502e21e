"""Fifteen months of a store's KPI history, backfilled into a real Prometheus, whose every value is known.

The recorded series the report reads (``kpi:numerator:rate5m``, ``kpi:denominator:rate5m``, ``kpi:value``,
``kpi:target``, and ``ALERTS``) are written as OpenMetrics every 10 minutes from a synthetic shape and turned
into blocks by ``promtool tsdb create-blocks-from openmetrics``: what the generated rules would have recorded
over that time. The shape has things a monthly review must get right, in Europe/Berlin:

- availability (99.9%): a 10-hour incident in February 2026 (missed); an hour of errors from 00:00 to 01:00
  CEST on 1 April, which is March in UTC; a four-hour maintenance on Sunday 13 September 2026, 02:00-06:00,
  that alone makes September miss;
- checkout errors (at most 1%, lower is better): 0.6%, except 1.5% in November 2026;
- conversion (3%): rising slowly from 2.4% with day-to-day noise, towards a goal of 3% by 2027-03-31;
- revenue (a value KPI, at least 100,000): growing from 90,000.

``expected()`` sums the same samples the way Prometheus does, so a test can compare the report with both.
"""

from __future__ import annotations

import math
import random
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.helpers import fetch, free_port, wait_until

BERLIN = ZoneInfo("Europe/Berlin")
STEP = 600  # seconds between backfilled samples
FIRST = datetime(2025, 8, 31, 0, 0, tzinfo=BERLIN).timestamp()
AT = datetime(2026, 12, 6, 12, 0, tzinfo=BERLIN).timestamp()  # "now" for the tests: a Sunday in December
SERVICE = "store"



def _berlin(*parts: int) -> float:
    return datetime(*parts, tzinfo=BERLIN).timestamp()


INCIDENT = (_berlin(2026, 2, 17, 14), _berlin(2026, 2, 18, 0))
APRIL_FIRST_HOUR = (_berlin(2026, 4, 1, 0), _berlin(2026, 4, 1, 1))
MAINTENANCE = (_berlin(2026, 9, 13, 2), _berlin(2026, 9, 13, 6))
NOVEMBER = (_berlin(2026, 11, 1), _berlin(2026, 12, 1))

SPEC = """\
service: store
labels: {team: shop}
kpis:
  - name: availability
    description: Requests served without a server error
    objective: The shop is always open
    owner: platform
    window: 30d
    target: 99.9%
    ratio:
      numerator: http_requests_total{status!~"5.."}
      denominator: http_requests_total
  - name: checkout_errors
    description: Checkouts that fail
    objective: Failed payments stay rare
    owner: payments
    window: 30d
    target: 1%
    higher_is_better: false
    ratio:
      numerator: checkouts_total{result="error"}
      denominator: checkouts_total
  - name: conversion
    description: Sessions that end in an order
    objective: Grow sales
    owner: growth
    window: 30d
    target: 3%
    alerting: {strategy: none}
    ratio:
      numerator: orders_total
      denominator: sessions_total
  - name: revenue
    description: Monthly recurring revenue
    objective: Grow the subscription business
    owner: finance
    window: 30d
    target: 100000
    value: sum(mrr_dollars)
"""
RATIO_KPIS = ("availability", "checkout_errors", "conversion")
TARGETS = {"availability": 0.999, "checkout_errors": 0.01, "conversion": 0.03, "revenue": 100000}


def _inside(t: float, span: tuple[float, float]) -> bool:
    return span[0] < t <= span[1]


def _day_noise(t: float) -> float:
    """A fixed pseudo-random number in [-1, 1] per day: conversion's day-to-day wobble."""
    return random.Random(f"day {int(t // 86400)}").uniform(-1, 1)  # a str seed is hashed: days do not correlate


def shape(t: float) -> dict[str, tuple[float, float]]:
    """Per KPI at time t: (top, bottom) as recorded: good and all events per second for ratios, (value, 1)
    for the value KPI."""
    hour = (t % 86400) / 3600
    requests = 20 + 10 * math.sin((hour - 9) / 24 * 2 * math.pi)
    errors = 0.0004
    if _inside(t, INCIDENT):
        errors = 0.05
    elif _inside(t, APRIL_FIRST_HOUR):
        errors = 0.30
    elif _inside(t, MAINTENANCE):
        errors = 0.25
    checkouts = requests * 0.1
    failed = 0.015 if _inside(t, NOVEMBER) else 0.006
    months = (t - FIRST) / (30.44 * 86400)
    conversion = 0.024 + 0.0004 * months + 0.0012 * _day_noise(t)
    sessions = requests * 0.5
    return {"availability": (requests * (1 - errors), requests),
            "checkout_errors": (checkouts * failed, checkouts),
            "conversion": (sessions * conversion, sessions),
            "revenue": (90000 + 1500 * months, 1.0)}


def times(start: float = FIRST, end: float = AT) -> list[float]:
    first = math.ceil(start / STEP) * STEP
    return [float(t) for t in range(int(first), int(end) + 1, STEP)]


def expected(kpi: str, start: float, end: float, excluded: tuple[tuple[float, float], ...] = ()) -> float:
    """The KPI over the samples stamped in (start, end], less those an exclusion removes (a ratio's samples
    stamped in the window or the 5 minutes after it), summed as Prometheus sums them."""
    top = bottom = 0.0
    tops, bottoms = [], []
    for t in times(start, end):
        if not start < t <= end:
            continue
        if any(a < t < b + (300 if kpi in RATIO_KPIS else 0.001) for a, b in excluded):
            continue
        value, weight = shape(t)[kpi]
        tops.append(value)
        bottoms.append(weight)
    top, bottom = math.fsum(tops), math.fsum(bottoms)
    return top / bottom


def openmetrics() -> str:
    families: dict[str, list[str]] = {"kpi:numerator:rate5m": [], "kpi:denominator:rate5m": [], "kpi:value": [],
                                      "kpi:target": [], "ALERTS": []}
    labels = {kpi: f'kpi="{kpi}",kpi_service="{SERVICE}",team="shop"' for kpi in TARGETS}
    alert = (f'alertname="KPIErrorBudgetBurn",alertstate="firing",kpi="availability",kpi_service="{SERVICE}",'
             'kpi_severity="page",team="shop"')
    for t in times():
        stamp = f"{t:.0f}"
        values = shape(t)
        for kpi in RATIO_KPIS:
            top, bottom = values[kpi]
            families["kpi:numerator:rate5m"].append(f"kpi:numerator:rate5m{{{labels[kpi]}}} {top!r} {stamp}")
            families["kpi:denominator:rate5m"].append(f"kpi:denominator:rate5m{{{labels[kpi]}}} {bottom!r} {stamp}")
        families["kpi:value"].append(f'kpi:value{{{labels["revenue"]}}} {values["revenue"][0]!r} {stamp}')
        for kpi, target in TARGETS.items():
            families["kpi:target"].append(f"kpi:target{{{labels[kpi]}}} {target!r} {stamp}")
        if INCIDENT[0] + 1800 < t <= INCIDENT[1] + 3600:
            families["ALERTS"].append(f"ALERTS{{{alert}}} 1 {stamp}")
    lines = []
    for name, samples in families.items():
        lines.append(f"# TYPE {name} gauge")
        lines += samples
    return "\n".join([*lines, "# EOF", ""])


@dataclass
class History:
    directory: Path
    url: str = ""
    process: subprocess.Popen | None = None

    @property
    def specs(self) -> Path:
        return self.directory / "specs"

    def start(self, prometheus: str, promtool: str) -> None:
        (self.directory / "history.om").write_text(openmetrics())
        data = self.directory / "tsdb"
        subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", "--max-block-duration=744h",
                        str(self.directory / "history.om"), str(data)], check=True, capture_output=True, timeout=900)
        self.specs.mkdir()
        (self.specs / "store.yaml").write_text(SPEC)
        config = self.directory / "prometheus.yml"
        config.write_text("global: {scrape_interval: 1m}\n")
        port = free_port()
        self.process = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={data}",
             "--storage.tsdb.retention.time=3650d", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"
        wait_until(lambda: fetch(f"{self.url}/-/ready")[0] == 200, 300, interval=0.5, what="Prometheus ready")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
