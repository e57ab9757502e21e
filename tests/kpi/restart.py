"""A Prometheus that stops and resumes on the same data, evaluating generated KPI rules every second, and an
exporter whose share of failed requests the test sets: shared by the restart test and its benchmark."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.helpers import free_port, stop_processes, wait_until

RATE = 100.0  # requests per second the exporter counts
SPEC = """\
service: shop
kpis:
  - name: availability
    window: 1h
    target: 99%
    ratio:
      numerator: app_requests_total{job="app",code="200"}
      denominator: app_requests_total{job="app"}
    alerting:
      page: {windows: [{long: 10m, short: 5m, factor: 14.4}]}   # 10m: two 5m slices, now and 5m ago
      ticket: false
"""


class Exporter:
    """Counts RATE requests a second, ``failing`` of them failed, from the moment it starts."""

    def __init__(self) -> None:
        self.good = self.bad = 0.0
        self.failing = 0.0
        self.since = time.time()
        self.lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                good, bad = exporter.counts()
                body = ("# TYPE app_requests_total counter\n"
                        f'app_requests_total{{code="200"}} {good}\napp_requests_total{{code="500"}} {bad}\n').encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def counts(self) -> tuple[float, float]:
        with self.lock:
            now = time.time()
            events = RATE * (now - self.since)
            self.good += events * (1 - self.failing)
            self.bad += events * self.failing
            self.since = now
            return self.good, self.bad

    def fail(self, share: float) -> None:
        self.counts()
        with self.lock:
            self.failing = share

    def stop(self) -> None:
        self.server.shutdown()


class Prometheus:
    """A Prometheus on ``directory`` scraping the exporter every second and loading ``rule_files``."""

    def __init__(self, binary: str, directory: Path, exporter_port: int, rule_files: list[Path]):
        self.binary, self.directory = binary, directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (directory / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: {json.dumps([str(f) for f in rule_files])}\n"
            f"scrape_configs:\n  - job_name: app\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.directory / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.ready(), timeout=60, interval=0.2, what="Prometheus to start")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_processes([self.process], timeout=30)
            self.process = None

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        parameters = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode(parameters)}",
                                    timeout=10) as response:
            return json.load(response)["data"]["result"]

    def value(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None
