"""From zero to paged, on loopback, with the files we ship: deploy/agent.yaml, rules/, deploy/prometheus and
deploy/alertmanager, changed only where a test must (addresses, paths, and intervals shortened to seconds).
A demo shop writes an access log and serves its stats; the agent probes and counts it; Prometheus scrapes the
agent with the rules `kpi-agent rules generate rules/` makes; Alertmanager notifies a webhook. Failing checkouts
page the page receiver with the KPI's labels and runbook; healing resolves the page, and the slower burn that
remains reaches the ticket receiver; every dashboard panel's query returns data."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from agent.kpi import grafana
from tests.helpers import free_port, serve, stop_processes
from tests.kpi.helpers import load_spec, panel_queries
from tests.tools import require_tool

pytestmark = pytest.mark.slow  # the shipped files through a real Prometheus and Alertmanager to a page

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"


def agent_config(app_port: int, access_log: Path, positions: Path) -> str:
    """deploy/agent.yaml pointed at the demo shop and a temporary log, probing every second."""
    config = yaml.safe_load((DEPLOY / "agent.yaml").read_text())
    config["global"].update(interval="1s", timeout="900ms")
    config["positions_file"] = str(positions)
    for source in config["http"]:
        source["url"] = re.sub(r"^http://[^/]+", f"http://127.0.0.1:{app_port}", source["url"])
    for source in config["logs"]:
        source["paths"] = [str(access_log)]
        source["start_at"] = "beginning"  # the demo may write before the agent opens the file
    return yaml.safe_dump(config, sort_keys=False)


def prometheus_config(agent_port: int, alertmanager_port: int) -> str:
    """deploy/prometheus/prometheus.yml scraping and evaluating every second, on this test's ports."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{alertmanager_port}"]
    (job,) = config["scrape_configs"]
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{agent_port}"]
    return yaml.safe_dump(config, sort_keys=False)


def alertmanager_config(hook_port: int) -> str:
    """deploy/alertmanager/alertmanager.yml with its webhooks on this test's receiver and waits of a second."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = re.sub(r"^http://[^/]+", f"http://127.0.0.1:{hook_port}", webhook["url"])
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "1s"
    return yaml.safe_dump(config, sort_keys=False)


class DemoApp:
    """A shop whose checkout fails on demand, writing an nginx-style access log and counting its orders."""

    def __init__(self, access_log: Path):
        self.failing = False
        self.started = self.placed = 0
        self.log = access_log.open("a", buffering=1)

    async def checkout(self, request: web.Request) -> web.Response:
        status = 500 if self.failing else 200
        self.started += 1
        self.placed += status == 200
        self.log.write(f'127.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "GET /api/checkout HTTP/1.1" {status} 17 "-" '
                       f'"e2e" 0.012\n')
        return web.Response(status=status, text="checkout\n")

    async def home(self, request: web.Request) -> web.Response:
        return web.Response(text="shop\n")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"orders": {"placed": self.placed}, "checkouts": {"started": self.started},
                                  "mrr": 120000})


class Webhook:
    """Alertmanager's webhook receivers, by path (/page, /ticket, /default)."""

    def __init__(self):
        self.notifications: list[tuple[str, dict]] = []

    async def receive(self, request: web.Request) -> web.Response:
        self.notifications.append((request.path, await request.json()))
        return web.Response(text="ok")

    def alerts(self, path: str, status: str, **labels: str) -> list[dict]:
        return [a for p, n in self.notifications if p == path for a in n["alerts"] if a["status"] == status
                and all(a["labels"].get(k) == v for k, v in labels.items())]


async def serve_routes(routes: list[tuple[str, str, object]], port: int = 0) -> tuple[web.AppRunner, int]:
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return await serve(app, port=port)


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
    demo_runner, demo_port = await serve_routes([("GET", "/", demo.home), ("GET", "/api/checkout", demo.checkout),
                                                 ("GET", "/api/stats", demo.stats)])
    hook_runner, hook_port = await serve_routes([("POST", path, hook.receive)
                                                 for path in ("/page", "/ticket", "/default")])
    agent_port, prom_port, am_port = free_port(), free_port(), free_port()

    (tmp_path / "agent.yaml").write_text(agent_config(demo_port, access_log, tmp_path / "positions.json"))
    (tmp_path / "prometheus.yml").write_text(prometheus_config(agent_port, am_port))
    (tmp_path / "alertmanager.yml").write_text(alertmanager_config(hook_port))
    # the shipped specs, compiled as a user does, evaluated every second instead of every 30s
    generated = subprocess.run([sys.executable, "-m", "agent", "rules", "generate", str(ROOT / "rules"), "--out",
                                str(tmp_path / "rules"), "--interval", "1s"], capture_output=True, text=True)
    assert generated.returncode == 0, generated.stderr
    specs = [load_spec(path) for path in sorted((ROOT / "rules").glob("*.yaml"))]

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
    checkout = 'kpi="checkout_availability"'
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
            total = 'sum(http_requests_total{job="kpi-agent",path="/api/checkout"})'
            await until(lambda: _equals(value(total), 1), 60, "the first request counted by the agent and scraped")
            await traffic(299)
            await until(lambda: _equals(value(total), 300), 30, "300 good requests counted")
            await until(lambda: _equals(value(f"kpi:ratio:rate5m{{{checkout}}}"), 1.0), 30, "the KPI ratio at 100%")

            demo.failing = True
            failed = 'sum(http_requests_total{job="kpi-agent",path="/api/checkout",status="500"})'
            await traffic(1)
            await until(lambda: _equals(value(failed), 1), 30, "the first failed request counted")
            await traffic(99)
            await until(lambda: _equals(value(failed), 100), 30, "100 failed requests counted")
            # 299 good and 99 bad increases; rate() extrapolates each series over its own sampled span, so the
            # ratio is close to, not exactly, 299/398
            expected = 299 / (299 + 99)
            await until(lambda: _near(value(f"kpi:ratio:rate5m{{{checkout}}}"), expected, 0.03), 30,
                        f"the KPI ratio near {expected:.4f}")
            # burn = bad share / budget (0.1%)
            assert await value(f"abs(kpi:burn_rate:rate5m{{{checkout}}} - (1 - kpi:ratio:rate5m{{{checkout}}}) / 0.001)"
                               ) < 1e-6

            fired = await until(lambda: _async(hook.alerts("/page", "firing", kpi="checkout_availability")), 90,
                                "the page notification at the page receiver")
            alert = fired[0]
            assert alert["labels"]["alertname"] == "KPIErrorBudgetBurn" and alert["labels"]["kpi_severity"] == "page"
            assert alert["labels"]["kpi_service"] == "shop" and alert["labels"]["team"] == "payments"
            assert alert["labels"]["severity"] == "critical"
            assert alert["annotations"]["runbook_url"] == "https://runbooks.example.com/shop/checkout"
            assert "checkout_availability" in alert["annotations"]["summary"]
            assert "x too fast (page)" in alert["annotations"]["summary"]

            demo.failing = False
            # 100 bad of 20,400 (0.49%): below both page pairs (1.44% over 1h, 0.6% over 6h and 30m), above the
            # ticket tier's 0.3% over 1d and 2h
            await traffic(20_000)
            await until(lambda: _async(hook.alerts("/page", "resolved", kpi="checkout_availability")), 120,
                        "the page to resolve")
            ticket = await until(lambda: _async(hook.alerts("/ticket", "firing", kpi="checkout_availability",
                                                            alertname="KPIErrorBudgetBurn")), 60,
                                 "the slower burn at the ticket receiver once the page no longer inhibits it")
            assert ticket[0]["labels"]["kpi_severity"] == "ticket" and ticket[0]["labels"]["severity"] == "warning"

            # the other shipped KPIs see their data: latency, the probe, conversion, revenue
            for kpi, low, high in (("request_latency", 1, 1), ("home_page_up", 1, 1),
                                   ("checkout_conversion", 0.95, 1)):
                await until(lambda k=kpi, lo=low, hi=high: _between(value(f'kpi:ratio:rate5m{{kpi="{k}"}}'), lo, hi),
                            30, f"{kpi}'s ratio")
            assert await value('kpi:value{kpi="monthly_recurring_revenue"}') == 120000
            # nothing is blind or misconfigured
            blind = await query('ALERTS{alertname=~"KPINoData|KPINumeratorAbsent",alertstate="firing"}')
            assert blind == [], blind

            boards = [grafana.overview_dashboard(), grafana.agent_dashboard(),
                      *(grafana.service_dashboard(spec) for spec in specs)]
            empty = []
            for board in boards:
                for expr in panel_queries(board):
                    concrete = expr.replace("$service", ".*")
                    for variable in re.findall(r"\$(\w+)", concrete):
                        concrete = concrete.replace(f"${variable}", ".*")
                    if not await query(concrete):
                        empty.append(concrete)
            assert empty == [], f"panel queries without data: {empty}"
    finally:
        stop_processes(processes, timeout=15)
        await demo_runner.cleanup()
        await hook_runner.cleanup()
        demo.log.close()


async def _equals(awaitable, expected: float):
    got = await awaitable
    return got if got is not None and abs(got - expected) < 1e-9 else None


async def _near(awaitable, expected: float, tolerance: float):
    got = await awaitable
    return got if got is not None and abs(got - expected) < tolerance else None


async def _between(awaitable, low: float, high: float):
    got = await awaitable
    return got if got is not None and low - 1e-9 <= got <= high + 1e-9 else None


async def _async(result):
    return result


def test_the_shipped_files_are_what_this_test_runs():
    """The end-to-end test changes only addresses, paths and intervals of the shipped files."""
    agent = yaml.safe_load(agent_config(1, Path("/tmp/a.log"), Path("/tmp/p.json")))
    shipped = yaml.safe_load((DEPLOY / "agent.yaml").read_text())
    assert [m for s in agent["logs"] for m in s["metrics"]] == [m for s in shipped["logs"] for m in s["metrics"]]
    assert [s["pattern"] for s in agent["logs"]] == [s["pattern"] for s in shipped["logs"]]
    assert [s.get("json_metrics") for s in agent["http"]] == [s.get("json_metrics") for s in shipped["http"]]
    prometheus = yaml.safe_load(prometheus_config(1, 2))
    shipped_prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["job_name"] == shipped_prometheus["scrape_configs"][0]["job_name"]
    assert prometheus["rule_files"] == shipped_prometheus["rule_files"]
    alertmanager = yaml.safe_load(alertmanager_config(1))
    shipped_alertmanager = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    assert json.dumps(alertmanager["inhibit_rules"]) == json.dumps(shipped_alertmanager["inhibit_rules"])
    assert [r.get("matchers") for r in alertmanager["route"]["routes"]] == \
        [r.get("matchers") for r in shipped_alertmanager["route"]["routes"]]
