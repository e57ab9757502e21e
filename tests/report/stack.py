"""A demo shop, the real agent scraping it, and a real Prometheus evaluating the generated rules every second.

The shop's traffic has a known shape so the tests know what a report must say: exactly one checkout in 50
fails (availability 98%, error rate 2%), the cart never fails (100%), and the JSON endpoint reports a monthly
recurring revenue of 123,456.
One spec directory describes the shop; another describes a service that does not exist (a KPI with no data).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from agent.kpi.render import render_prometheus
from tests.helpers import fetch, free_port, stop_processes, wait_until
from tests.kpi.helpers import load_spec

FAIL_EVERY = 50  # request i fails when i % 50 == 0: 2% of checkouts, spread evenly
MRR = 123456
ROUNDS_PER_SECOND = 25  # each round: one checkout and one cart request

SHOP_SPEC = """\
service: demo
labels: {team: report-test}
kpis:
  - name: checkout_availability
    description: Checkouts served without a server error
    objective: Customers can always pay
    owner: payments
    window: 1h
    target: 99%
    ratio:
      numerator: http_requests_total{path="/api/checkout",status!~"5.."}
      denominator: http_requests_total{path="/api/checkout"}
    supporting_metrics:
      - title: p99 checkout latency
        query: histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))
        unit: seconds
      - title: checkouts per second by status
        query: sum by (status) (rate(http_requests_total{path="/api/checkout"}[1m]))
        unit: per_second
  - name: checkout_errors
    description: Checkouts that fail with a server error
    objective: Failed payments stay rare
    owner: payments
    window: 1h
    target: 5%
    higher_is_better: false
    ratio:
      numerator: http_requests_total{path="/api/checkout",status=~"5.."}
      denominator: http_requests_total{path="/api/checkout"}
  - name: availability_by_path
    description: Requests served without a server error, per path
    objective: Every page works
    owner: web
    window: 1h
    target: 99%
    group_by: [path]
    ratio:
      numerator: http_requests_total{status!~"5.."}
      denominator: http_requests_total
  - name: monthly_recurring_revenue
    description: Recurring revenue booked per month
    objective: Grow the subscription business
    owner: finance
    window: 1h
    target: 100000
    value: sum(shop_mrr_dollars)
    supporting_metrics:
      - title: shop health probe
        query: probe_success{target="demo-health"}
        unit: ratio
"""

GHOST_SPEC = """\
service: ghost
kpis:
  - name: login_availability
    description: Logins that succeed
    owner: identity
    window: 1h
    target: 99.9%
    ratio:
      numerator: ghost_logins_total{result="ok"}
      denominator: ghost_logins_total
"""


class Shop(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, access_log: Path):
        super().__init__(("127.0.0.1", 0), _ShopHandler)
        self.log = access_log.open("a", buffering=1)
        self.count = 0
        self.lock = threading.Lock()

    def checkout(self) -> int:
        with self.lock:
            index, self.count = self.count, self.count + 1
            status = 500 if index % FAIL_EVERY == 0 else 200
            self._log("/api/checkout", status, 0.010 + (index % 10) * 0.005)
        return status

    def cart(self) -> int:
        with self.lock:
            self._log("/api/cart", 200, 0.004)
        return 200

    def _log(self, path: str, status: int, seconds: float) -> None:
        self.log.write(f'127.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "GET {path} HTTP/1.1" {status} 17 "-" '
                       f'"report-test" {seconds:.3f}\n')


class _ShopHandler(BaseHTTPRequestHandler):
    server: Shop

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path == "/api/checkout":
            status, body = self.server.checkout(), b"checkout\n"
        elif self.path == "/api/cart":
            status, body = self.server.cart(), b"cart\n"
        elif self.path == "/stats":
            status, body = 200, json.dumps({"mrr": MRR}).encode()
        else:
            status, body = 200, b"ok\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep the test output quiet
        pass


def agent_config(shop_port: int, access_log: Path, positions: Path) -> str:
    pattern = (r'^(?P<ip>\S+) \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) '
               r'(?P<bytes>\d+) .* (?P<rt>[0-9.]+)$')
    return json.dumps({
        "global": {"interval": "1s", "timeout": "900ms"},
        "positions_file": str(positions),
        "http": [
            {"name": "demo-health", "url": f"http://127.0.0.1:{shop_port}/health"},
            {"name": "demo-stats", "url": f"http://127.0.0.1:{shop_port}/stats",
             "json_metrics": [{"name": "shop_mrr_dollars", "type": "gauge", "path": "$.mrr"}]},
        ],
        "logs": [{"name": "demo", "paths": [str(access_log)], "start_at": "beginning", "pattern": pattern,
                  "metrics": [
                      {"name": "http_requests_total", "type": "counter", "labels": ["method", "path", "status"]},
                      {"name": "http_request_duration_seconds", "type": "histogram", "value": "rt"}]}]})


@dataclass
class Stack:
    directory: Path
    prometheus: str = ""
    shop: Shop | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    traffic_started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def shop_specs(self) -> Path:
        return self.directory / "specs" / "shop"

    @property
    def ghost_specs(self) -> Path:
        return self.directory / "specs" / "ghost"

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
        status, body = fetch(f"{self.prometheus}/api/v1/query?{urllib.parse.urlencode(params)}")
        assert status == 200, body
        return json.loads(body)["data"]["result"]

    def value(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None

    def _get(self, path: str) -> None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.shop.server_address[1]}{path}", timeout=5).read()
        except urllib.error.HTTPError as exc:  # the planned 500s
            exc.read()

    def _traffic(self) -> None:
        while not self._stop.is_set():
            self._get("/api/checkout")
            self._get("/api/cart")
            self._stop.wait(1 / ROUNDS_PER_SECOND)

    def start(self, prometheus_bin: str) -> None:
        access_log = self.directory / "access.log"
        access_log.touch()
        self.shop = Shop(access_log)
        threading.Thread(target=self.shop.serve_forever, daemon=True).start()
        shop_port = self.shop.server_address[1]
        agent_port, prometheus_port = free_port(), free_port()
        (self.directory / "agent.yaml").write_text(
            agent_config(shop_port, access_log, self.directory / "positions.json"))
        rules = self.directory / "rules"
        rules.mkdir()
        for name, text in (("shop", SHOP_SPEC), ("ghost", GHOST_SPEC)):
            spec_dir = self.directory / "specs" / name
            spec_dir.mkdir(parents=True)
            (spec_dir / f"{name}.yaml").write_text(text)
            spec = load_spec(spec_dir / f"{name}.yaml")
            (rules / f"{name}.rules.yml").write_text(render_prometheus(spec, f"{name}.yaml", interval="1s"))
        (self.directory / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [rules/*.rules.yml]\n"
            "scrape_configs:\n  - job_name: kpi-agent\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{agent_port}']}}]\n")
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config.file", str(self.directory / "agent.yaml"),
             "--web.listen-address", f"127.0.0.1:{agent_port}"], stderr=subprocess.DEVNULL))
        self.processes.append(subprocess.Popen(
            [prometheus_bin, f"--config.file={self.directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.directory / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.prometheus = f"http://127.0.0.1:{prometheus_port}"
        # rate() cannot see the event that creates a series, so a failed and a good checkout and a cart request
        # create every series before the measured traffic, whose every 50th checkout then fails.
        for path in ("/api/checkout", "/api/checkout", "/api/cart"):
            self._get(path)
        wait_until(lambda: self.value("count(http_requests_total)") == 3, 60,
                   what="every request series scraped by Prometheus")
        self.traffic_started = time.time()
        threading.Thread(target=self._traffic, daemon=True).start()

    def wait_for_history(self, seconds: float) -> float:
        """Wait until every series of the shop's KPIs (4 ratio series, one of them per path, and the value) has
        recorded ``seconds`` of history with traffic; returns that moment."""
        first = ('min_over_time(timestamp(kpi:denominator:rate5m{kpi_service="demo"} > 0)[10m:1s]) '
                 'or min_over_time(timestamp(kpi:value{kpi_service="demo"})[10m:1s])')

        def old_enough() -> float | None:
            now = time.time()
            starts = self.query(first, now)
            if len(starts) == 5 and all(now - float(s["value"][1]) > seconds for s in starts):
                return now
            return None

        return wait_until(old_enough, seconds + 90, interval=0.5, what=f"{seconds:g}s of recorded KPI history")

    def stop(self) -> None:
        self._stop.set()
        stop_processes(self.processes, timeout=15)
        if self.shop is not None:
            self.shop.shutdown()
            self.shop.server_close()
