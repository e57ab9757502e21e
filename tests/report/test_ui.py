"""`kpi-agent ui`: the live scoreboard, served by a real process, read from a real Prometheus, viewed in a
real browser that must reload it on its own."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import pytest

from tests.browser import Browser
from tests.helpers import fetch, free_port, scrape, stop_processes, wait_until
from tests.report.stack import MRR, Stack
from tests.report.test_report import GREEN, RED, ROWS, blank_share, colour_pixels, percent

pytestmark = pytest.mark.slow  # a real shop, agent and Prometheus with recorded history, and Chromium

AGENT = [sys.executable, "-m", "agent"]
REFRESH = 4.0
GENERATED = "document.querySelector('header time').textContent"


@pytest.fixture
def scoreboard(request):
    """Starts `kpi-agent ui` with the given arguments; returns its base URL."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> str:
        port = free_port()
        process = subprocess.Popen([*AGENT, "ui", *args, "--web.listen-address", f"127.0.0.1:{port}"],
                                   stderr=subprocess.PIPE, text=True)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: fetch(f"{url}/-/healthy")[0] == 200, 30, what="the scoreboard to listen")
        return url

    yield start
    stop_processes(started)


async def test_the_scoreboard_shows_every_kpi_and_reloads_itself(stack: Stack, chromium, scoreboard):
    url = scoreboard(str(stack.shop_specs), "--prometheus.url", stack.prometheus, "--period", "30s",
                     "--refresh", f"{REFRESH:g}s")
    async with Browser(chromium) as browser:
        page = await browser.new_page()
        await page.goto(f"{url}/")
        rows = {row["cells"][2]: row["cells"] for row in await page.evaluate(ROWS)}
        first = await page.evaluate(GENERATED)
        png = await page.screenshot()
        await page.wait_for_loads(2, timeout=REFRESH * 5)  # the page reloads itself, no script involved
        second = await page.evaluate(GENERATED)
        text = await page.evaluate("document.body.innerText")
        assert page.errors == []
        assert set(page.requests) == {f"{url}/"}  # reloads of the page itself, nothing else
    assert len(rows) == 5 and rows["availability_by_path path=/api/cart"][0:4] == [
        "Met", "demo", "availability_by_path path=/api/cart", "100.00%"]
    assert rows["checkout_availability"][0] == "Missed" and abs(percent(rows["checkout_availability"][3]) - 98) < 0.25
    assert rows["checkout_errors"][0] == "Met" and abs(percent(rows["checkout_errors"][3]) - 2) < 0.25
    assert rows["monthly_recurring_revenue"][0:4] == ["Met", "demo", "monthly_recurring_revenue", f"{MRR:,}"]
    assert second > first  # rebuilt from Prometheus for the reload
    assert f"refreshes every {REFRESH:g}s" in text
    assert blank_share(png) < 0.9 and colour_pixels(png, GREEN) > 300 and colour_pixels(png, RED) > 300


def test_viewers_share_one_build(stack: Stack, scoreboard):
    def range_queries() -> float:
        return scrape(f"{stack.prometheus}/metrics", ours=False).total("prometheus_http_requests_total",
                                                                       handler="/api/v1/query_range")

    arguments = (str(stack.shop_specs), "--prometheus.url", stack.prometheus, "--period", "30s", "--refresh", "1m")
    alone = scoreboard(*arguments)
    before = range_queries()
    assert fetch(f"{alone}/", timeout=60)[0] == 200
    one_viewer = range_queries() - before
    crowded = scoreboard(*arguments)
    before = range_queries()
    with ThreadPoolExecutor(8) as pool:
        pages = list(pool.map(lambda _: fetch(f"{crowded}/", timeout=60), range(8)))
    assert all(status == 200 for status, _ in pages)
    assert len({body for _, body in pages}) == 1
    assert one_viewer == 8  # 4 KPIs (1 range query each), 3 supporting metrics and the firing alerts
    assert range_queries() - before == one_viewer  # eight viewers at once cost what one does


def test_an_unreachable_prometheus_is_shown_on_the_page(scoreboard):
    prometheus = f"http://127.0.0.1:{free_port()}"
    url = scoreboard(str(Path(__file__).parents[2] / "rules"), "--prometheus.url", prometheus)
    status, body = fetch(f"{url}/", timeout=60)
    assert status == 200
    assert "This report is incomplete" in body and f"cannot reach Prometheus at {prometheus}" in body


def test_the_scoreboard_takes_the_agents_web_config(tmp_path):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(f"basic_auth_users:\n  alice: {hashed}\n"
                          "http_server_config:\n  headers: {X-Frame-Options: deny}\n")
    rules = str(Path(__file__).parents[2] / "rules")
    port = free_port()
    process = subprocess.Popen([*AGENT, "ui", rules, "--prometheus.url", f"http://127.0.0.1:{free_port()}",
                                "--web.listen-address", f"127.0.0.1:{port}", "--web.config.file", str(web_config)],
                               stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: fetch(url)[0] == 401, 30, what="the scoreboard to ask for credentials")
        request = urllib.request.Request(url, headers={
            "Authorization": "Basic " + base64.b64encode(b"alice:s3cret").decode()})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200 and response.headers["X-Frame-Options"] == "deny"
            assert "KPI report" in response.read().decode()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_busy_address_is_an_error_not_a_traceback():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([*AGENT, "ui", str(Path(__file__).parents[2] / "rules"), "--prometheus.url",
                                 "http://127.0.0.1:9", "--web.listen-address", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("kpi-agent ui: ") and "Traceback" not in result.stderr
