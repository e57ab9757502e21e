"""From zero to paged, on loopback: a demo app, the agent, real Prometheus with the generated rules, real
Alertmanager, and a webhook receiver. Errors in the app page; healing resolves; every dashboard panel's
query returns data."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import aiohttp
from aiohttp import web

from agent.kpi import grafana
from agent.kpi.compiler import render_prometheus
from agent.kpi.spec import load_spec
from tests.helpers import free_port
from tests.tools import require_tool

SPEC = """\
service: demo
labels: {team: e2e}
kpis:
  - name: checkout_availability
    description: Checkouts without a server error
    objective: Customers can pay
    owner: e2e
    window: 1h
    target: 99%
    ratio:
      numerator: http_requests_total{path="/api/checkout",status!~"5.."}
      denominator: http_requests_total{path="/api/checkout"}
    alerting:
      page: {labels: {severity: critical}, annotations: {runbook_url: https://runbooks.example/checkout}}
      no_data: false
    supporting_metrics:
      - title: p99 checkout latency
        query: histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))
      - title: demo probe success
        query: probe_success{target="demo-health"}
"""


def agent_config(app_port: int, access_log: Path, positions: Path) -> str:
    pattern = (r'^(?P<ip>\S+) \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) '
               r'(?P<bytes>\d+) .* (?P<rt>[0-9.]+)$')
    return json.dumps({
        "global": {"interval": "1s", "timeout": "900ms"},
        "positions_file": str(positions),
        "http": [{"name": "demo-health", "url": f"http://127.0.0.1:{app_port}/health"}],
        "logs": [{"name": "demo", "paths": [str(access_log)], "start_at": "beginning", "pattern": pattern,
                  "metrics": [
                      {"name": "http_requests_total", "type": "counter", "labels": ["method", "path", "status"]},
                      {"name": "http_request_duration_seconds", "type": "histogram", "value": "rt"}]}]})


class DemoApp:
    """A shop whose checkout fails on demand, writing an nginx-style access log."""

    def __init__(self, access_log: Path):
        self.failing = False
        self.log = access_log.open("a", buffering=1)

    async def checkout(self, request: web.Request) -> web.Response:
        status = 500 if self.failing else 200
        self.log.write(f'127.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "GET /api/checkout HTTP/1.1" {status} 17 "-" '
                       f'"e2e" 0.012\n')
        return web.Response(status=status, text="checkout\n")

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")


class Webhook:
    def __init__(self):
        self.notifications: list[dict] = []

    async def receive(self, request: web.Request) -> web.Response:
        self.notifications.append(await request.json())
        return web.Response(text="ok")

    def alerts(self, status: str) -> list[dict]:
        return [a for n in self.notifications for a in n["alerts"] if a["status"] == status]


async def serve(routes: list[tuple[str, str, object]], port: int = 0) -> tuple[web.AppRunner, int]:
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, runner.addresses[0][1]


async def until(check, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except (aiohttp.ClientError, KeyError, IndexError, ValueError) as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def test_zero_to_paged_and_back(tmp_path):
    prometheus = require_tool("prometheus")
    alertmanager = require_tool("prometheus-alertmanager")
    access_log = tmp_path / "access.log"
    access_log.touch()
    demo, hook = DemoApp(access_log), Webhook()
    demo_runner, demo_port = await serve([("GET", "/api/checkout", demo.checkout), ("GET", "/health", demo.health)])
    hook_runner, hook_port = await serve([("POST", "/hook", hook.receive)])
    agent_port, prom_port, am_port = free_port(), free_port(), free_port()

    (tmp_path / "agent.yaml").write_text(agent_config(demo_port, access_log, tmp_path / "positions.json"))
    (tmp_path / "demo.yaml").write_text(SPEC)
    spec = load_spec(tmp_path / "demo.yaml")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "demo.rules.yml").write_text(render_prometheus(spec, "demo.yaml", interval="1s"))
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [rules/*.rules.yml]\n"
        f"alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}\n"
        f"scrape_configs:\n  - job_name: kpi-agent\n    static_configs: [{{targets: ['127.0.0.1:{agent_port}']}}]\n")
    (tmp_path / "alertmanager.yml").write_text(
        "route: {receiver: hook, group_by: [alertname, kpi, kpi_severity], group_wait: 1s, group_interval: 1s, "
        "repeat_interval: 1h}\n"
        f"receivers:\n  - name: hook\n    webhook_configs: [{{url: 'http://127.0.0.1:{hook_port}/hook', "
        "send_resolved: true}]\n")

    processes = [
        subprocess.Popen([sys.executable, "-m", "agent", "run", "--config.file", str(tmp_path / "agent.yaml"),
                          "--web.listen-address", f"127.0.0.1:{agent_port}"], stderr=subprocess.DEVNULL),
        subprocess.Popen([alertmanager, f"--config.file={tmp_path / 'alertmanager.yml'}",
                          f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{am_port}",
                          "--cluster.listen-address="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp_path / 'prom'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    prom = f"http://127.0.0.1:{prom_port}"
    try:
        async with aiohttp.ClientSession() as session:
            async def query(expr: str) -> list[dict]:
                async with session.get(f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}") as response:
                    body = await response.json()
                    assert body["status"] == "success", body
                    return body["data"]["result"]

            async def value(expr: str) -> float | None:
                result = await query(expr)
                return float(result[0]["value"][1]) if result else None

            async def traffic(count: int) -> None:
                url = f"http://127.0.0.1:{demo_port}/api/checkout"
                for start in range(0, count, 50):
                    await asyncio.gather(*(session.get(url) for _ in range(min(50, count - start))))

            # rate() cannot see the event that creates a series (its first sample already counts it), so each
            # status gets one request that creates its series before the measured traffic.
            await traffic(1)
            await until(lambda: _equals(value('sum(http_requests_total{path="/api/checkout"})'), 1), 60,
                        "the first request counted by the agent and scraped")
            await traffic(299)
            await until(lambda: _equals(value('sum(http_requests_total{path="/api/checkout"})'), 300), 30,
                        "300 good requests counted")
            await until(lambda: _equals(value('kpi:ratio:rate5m{kpi="checkout_availability"}'), 1.0), 30,
                        "the KPI ratio at 100%")

            demo.failing = True
            await traffic(1)
            await until(lambda: _equals(value('sum(http_requests_total{path="/api/checkout",status="500"})'), 1), 30,
                        "the first failed request counted")
            await traffic(99)
            await until(lambda: _equals(value('sum(http_requests_total{path="/api/checkout",status="500"})'), 100), 30,
                        "100 failed requests counted")
            # 299 good and 99 bad increases; rate() extrapolates each series over its own sampled span, so the
            # ratio is close to, not exactly, 299/398
            expected = 299 / (299 + 99)
            ratio = await until(lambda: _near(value('kpi:ratio:rate5m{kpi="checkout_availability"}'), expected, 0.03),
                                30, f"the KPI ratio near {expected:.4f}")
            burn = await value('kpi:burn_rate:rate5m{kpi="checkout_availability"}')
            assert abs(burn - (1 - ratio) / 0.01) < 0.5  # burn = bad share / budget (1%)

            fired = await until(lambda: _async([a for a in hook.alerts("firing")
                                                if a["labels"].get("kpi_severity") == "page"]), 90,
                                "the page notification at the webhook")
            alert = fired[0]
            assert alert["labels"]["alertname"] == "KPIErrorBudgetBurn"
            assert alert["labels"]["kpi"] == "checkout_availability" and alert["labels"]["kpi_service"] == "demo"
            assert alert["labels"]["severity"] == "critical" and alert["labels"]["team"] == "e2e"
            assert alert["annotations"]["runbook_url"] == "https://runbooks.example/checkout"
            assert "checkout_availability" in alert["annotations"]["summary"]
            assert "x too fast (page)" in alert["annotations"]["summary"]

            demo.failing = False
            await traffic(10_000)  # 100 bad of 10,400: under 1%, below every tier
            await until(lambda: _async([a for a in hook.alerts("resolved")
                                        if a["labels"].get("kpi_severity") == "page"]), 120,
                        "the page to resolve")

            boards = [grafana.overview_dashboard(), grafana.service_dashboard(spec), grafana.agent_dashboard()]
            empty = []
            for board in boards:
                for expr in grafana.panel_queries(board):
                    concrete = expr.replace("$service", ".*")
                    if not await query(concrete):
                        empty.append(concrete)
            assert empty == [], f"panel queries without data: {empty}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        await demo_runner.cleanup()
        await hook_runner.cleanup()


async def _equals(awaitable, expected: float):
    got = await awaitable
    return got if got is not None and abs(got - expected) < 1e-9 else None


async def _near(awaitable, expected: float, tolerance: float):
    got = await awaitable
    return got if got is not None and abs(got - expected) < tolerance else None


async def _async(result):
    return result
