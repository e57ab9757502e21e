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
from tests.report.test_report import ROWS, blank_share, colour_pixels, percent

pytestmark = pytest.mark.slow  # a real shop, agent and Prometheus with recorded history, and Chromium

AGENT = [sys.executable, "-m", "agent"]
REFRESH = 4.0
GENERATED = "document.querySelector('header time').textContent"
WALL_GREEN, WALL_RED = (0x2E, 0xA0, 0x43), (0xF8, 0x51, 0x49)  # the wallboard's met and missed edges


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


TILES = """[...document.querySelectorAll('a.tile')].map(tile => ({
  href: tile.getAttribute('href'), state: tile.className.replace('tile ', ''),
  name: tile.querySelector('.name').innerText.trim(), value: tile.querySelector('.value').innerText.trim(),
  size: parseFloat(getComputedStyle(tile.querySelector('.value')).fontSize),
  box: tile.getBoundingClientRect().toJSON()}))"""


async def test_the_wallboard_shows_every_kpi_and_reloads_itself(stack: Stack, chromium, scoreboard):
    url = scoreboard(str(stack.shop_specs), "--prometheus.url", stack.prometheus, "--period", "30s",
                     "--refresh", f"{REFRESH:g}s")
    async with Browser(chromium) as browser:
        page = await browser.new_page()
        await page.set_viewport(1920, 1080)
        await page.goto(f"{url}/")
        tiles = {tile["name"]: tile for tile in await page.evaluate(TILES)}
        first = await page.evaluate(GENERATED)
        png = await page.screenshot()
        await page.wait_for_loads(2, timeout=REFRESH * 5)  # the page reloads itself, no script involved
        second = await page.evaluate(GENERATED)
        text = await page.evaluate("document.body.innerText")
        assert page.errors == []
        assert set(page.requests) == {f"{url}/"}  # reloads of the page itself, nothing else
        # a click on a tile opens its KPI's section of the full report, with the same numbers
        await page.goto(f"{url}/{tiles['checkout_errors']['href']}")
        section = await page.evaluate("document.querySelector(':target')?.id")
        rows = {row["cells"][2]: row["cells"] for row in await page.evaluate(ROWS)}
        assert page.errors == []
    assert len(tiles) == 5 and tiles["checkout_availability"]["state"] == "missed"
    assert tiles["availability_by_path path=/api/cart"]["value"] == "100.00%"
    assert abs(percent(tiles["checkout_availability"]["value"]) - 98) < 0.25
    assert tiles["checkout_errors"]["state"] == "met" and abs(percent(tiles["checkout_errors"]["value"]) - 2) < 0.25
    assert tiles["monthly_recurring_revenue"]["value"] == f"{MRR:,}"
    # readable from across a room at 1920x1080: values at least 48 pixels high, every tile on the first screen
    assert all(tile["size"] >= 48 for tile in tiles.values())
    assert all(tile["box"]["bottom"] <= 1080 and tile["box"]["right"] <= 1920 for tile in tiles.values())
    assert second > first  # rebuilt from Prometheus for the reload
    assert f"refreshes every {REFRESH:g}s" in text
    assert section == "demo-checkout_errors"
    assert rows["checkout_errors"][0] == "Met" and abs(percent(rows["checkout_errors"][3]) - 2) < 0.25
    assert blank_share(png) < 0.9 and colour_pixels(png, WALL_GREEN) > 300 and colour_pixels(png, WALL_RED) > 300


async def test_the_wallboard_and_report_work_on_a_phone(stack: Stack, chromium, scoreboard):
    url = scoreboard(str(stack.shop_specs), "--prometheus.url", stack.prometheus, "--period", "30s")
    async with Browser(chromium) as browser:
        page = await browser.new_page()
        await page.set_viewport(390, 844)
        for path in ("/", "/report"):
            await page.goto(f"{url}{path}")
            assert await page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0, path
        await page.goto(f"{url}/")
        tiles = await page.evaluate(TILES)
        assert page.errors == []
        assert set(page.requests) == {f"{url}/", f"{url}/report"}
    assert all(tile["box"]["width"] <= 390 for tile in tiles)


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
    assert f"cannot reach Prometheus at {prometheus}" in body and '<a href="report">see the report</a>' in body
    status, body = fetch(f"{url}/report", timeout=60)
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
            assert "KPIs" in response.read().decode()
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
