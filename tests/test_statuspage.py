"""The status page at / and /api/v1/sources: the per-source debug view, from a real agent on loopback."""

import asyncio
import html
import json
import socket

import aiohttp
from aiohttp import web

from agent.config.agent import load_config
from agent.runtime.agent import Agent
from tests.browser import Browser
from tests.helpers import serve
from tests.report.test_report import blank_share, colour_pixels


async def test_every_source_shows_its_result_times_error_series_and_files(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    log = tmp_path / "app.log"
    log.write_text('{"m": "GET"}\n' * 3)
    config = tmp_path / "agent.yaml"
    config.write_text(
        "global: {interval: 200ms, timeout: 150ms}\n"
        "http:\n"
        "  - {name: self, url: 'http://127.0.0.1:PORT/-/healthy'}\n"
        f"  - {{name: 'down<script>', url: 'http://bob:hunter2@127.0.0.1:{closed_port}/'}}\n"
        "  - {name: wrong-status, url: 'http://127.0.0.1:PORT/nope'}\n"
        f"logs:\n  - {{name: app, paths: ['{log}', '{tmp_path}/none-*.log'], format: json, start_at: beginning,"
        " metrics: [{name: req_total, type: counter, labels: [m]}]}\n")
    text = config.read_text()
    config.write_text(text.replace("PORT", str(closed_port)))  # the agent's own port is known once it listens
    agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
    await agent.start()
    base = f"http://127.0.0.1:{agent.bound_port}"
    config.write_text(text.replace("PORT", str(agent.bound_port)))
    assert await agent.reload() is None
    try:
        async with aiohttp.ClientSession() as session:
            rows: dict = {}
            for _ in range(60):
                async with session.get(base + "/api/v1/sources") as response:
                    rows = {row["name"]: row for row in await response.json()}
                if all(row["last_result"] for row in rows.values()):
                    break
                await asyncio.sleep(0.05)
            async with session.get(base + "/") as response:
                assert response.status == 200 and response.content_type == "text/html"
                page = await response.text()
        assert rows["self"]["last_result"] == "success" and rows["self"]["last_success"] is not None
        assert rows["self"]["series"] > 10 and rows["self"]["last_error_text"] is None
        down = rows["down<script>"]
        assert down["last_result"] == "connection_refused" and down["last_success"] is None
        assert down["last_error_text"] == f"cannot connect to 127.0.0.1:{closed_port}: Connection refused"
        assert down["url"] == f"http://127.0.0.1:{closed_port}/"
        assert rows["wrong-status"]["last_error_text"] == "status 404, expected 2xx"
        (file,) = rows["app"]["files"]
        assert file["path"] == str(log) and file["offset"] == file["size"] == log.stat().st_size
        assert file["lag_bytes"] == 0 and rows["app"]["series"] == 1
        for row in rows.values():
            assert f'data-source="{html.escape(row["name"])}"' in page
        assert "<script>" not in page and "down&lt;script&gt;" in page  # names are escaped
        assert "hunter2" not in page and "hunter2" not in json.dumps(rows)
        assert "cannot connect to 127.0.0.1" in page and "status 404, expected 2xx" in page
        assert f"read {log.stat().st_size:,} of {log.stat().st_size:,} bytes" in page
        assert "2 failing" in page
    finally:
        await agent.stop()


async def test_a_failed_reload_is_shown_on_the_page(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("global: {}\n")
    agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
    await agent.start()
    try:
        config.write_text("global: {interval: soon}\n")
        assert await agent.reload() is not None
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{agent.bound_port}/") as r:
            page = await r.text()
        assert "The last reload failed" in page and "global.interval: &#x27;soon&#x27; is not a duration" in page
        assert "No source is configured" in page
    finally:
        await agent.stop()


async def test_the_page_in_a_browser_shows_every_source_without_a_console_error(tmp_path, chromium):
    config = tmp_path / "agent.yaml"
    log = tmp_path / "app.log"
    log.write_text("level=info\n")
    config.write_text("global: {interval: 200ms, timeout: 150ms}\nhttp:\n"
                      "  - {name: unreachable, url: 'http://127.0.0.1:9/'}\n"
                      f"logs:\n  - {{name: app, paths: ['{log}'], format: logfmt, start_at: beginning,"
                      " metrics: [{name: lines_total, type: counter}]}\n")
    agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
    await agent.start()
    try:
        await asyncio.sleep(0.5)
        async with Browser(chromium) as browser:
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{agent.bound_port}/")
            rows = await page.evaluate("[...document.querySelectorAll('tr[data-source]')].map(row => "
                                       "[...row.cells].map(cell => cell.innerText))")
            screenshot = await page.screenshot()
        assert page.errors == []
        assert page.requests == [f"http://127.0.0.1:{agent.bound_port}/"]  # self-contained: nothing else loaded
        by_name = {row[0].split("\n")[0]: row for row in rows}
        assert set(by_name) == {"unreachable", "app"}
        assert by_name["unreachable"][2] == "connection_refused" and "Connection refused" in by_name["unreachable"][5]
        assert by_name["app"][2] == "success"
        assert blank_share(screenshot) < 0.97 and colour_pixels(screenshot, (0xB3, 0x26, 0x1E)) > 50  # red failure
    finally:
        await agent.stop()


async def test_a_discovering_source_shows_its_targets_and_each_failing_one(tmp_path):
    """The per-target debug view at scale: counts by state, and every failing target with its own error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    targets = tmp_path / "targets.yml"
    targets.write_text(f"- targets: ['127.0.0.1:{closed_port}', 'http://127.0.0.1:{closed_port}/x', 'ftp://a/']\n")
    config = tmp_path / "agent.yaml"
    config.write_text("global: {interval: 200ms, timeout: 150ms}\nhttp:\n"
                      "  - {name: fleet, file_sd_configs: [{files: [targets.yml]}],\n"
                      "     relabel_configs: [{source_labels: [__address__], regex: '.*/x', action: drop}]}\n")
    agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
    await agent.start()
    try:
        async with aiohttp.ClientSession() as session:
            row: dict = {}
            for _ in range(60):
                async with session.get(f"http://127.0.0.1:{agent.bound_port}/api/v1/sources") as response:
                    (row,) = await response.json()
                if row["failing_targets"]:
                    break
                await asyncio.sleep(0.05)
            async with session.get(f"http://127.0.0.1:{agent.bound_port}/") as response:
                page = await response.text()
        assert row["targets"] == {"probed": 1, "other_shard": 0, "dropped": 1, "refused": 1}
        (failing,) = row["failing_targets"]
        assert failing == {"target": f"127.0.0.1:{closed_port}", "url": f"http://127.0.0.1:{closed_port}/",
                           "result": "connection_refused",
                           "error": f"cannot connect to 127.0.0.1:{closed_port}: Connection refused"}
        assert row["series"] > 10 and len(row["refusals"]) == 1 and "ftp://a/" in row["refusals"][0]
        assert "1 target probed (1 dropped, 1 refused)" in page
        assert f'data-target="127.0.0.1:{closed_port}"' in page and "refused: " in page
    finally:
        await agent.stop()


async def test_a_page_too_big_for_a_scrape_is_said_in_the_log_and_on_the_status_page(tmp_path, caplog):
    """Issue 18.7: 100,000 targets were accepted silently, then no Prometheus with its default 10 s scrape
    timeout could ever scrape the agent. The agent now says so, right after start and while it lasts: here a
    Prometheus that gives a scrape 1 ms (global.scrape_timeout), and the same agent with the default."""
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}" for port in range(1, 201)]}]))
    pages = {}
    for scrape_timeout in ("1ms", "10s"):
        config = tmp_path / f"agent-{scrape_timeout}.yaml"
        config.write_text(f"global: {{interval: 1h, scrape_timeout: {scrape_timeout}}}\nhttp:\n  - name: fleet\n"
                          f"    file_sd_configs: [{{files: ['{targets}']}}]\n")
        agent = Agent(lambda config=config: load_config(config)[0], "127.0.0.1:0")
        await agent.start()
        base = f"http://127.0.0.1:{agent.bound_port}"
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(100):
                    async with session.get(base + "/api/v1/status") as response:
                        status = await response.json()
                    if status["page_warning"] or scrape_timeout == "10s" and agent.page_cost.seconds_per_sample:
                        break
                    async with session.get(base + "/metrics") as response:  # a page measured, as a scrape would
                        await response.read()
                    await asyncio.sleep(0.2)
                async with session.get(base + "/") as response:
                    pages[scrape_timeout] = (status, await response.text())
        finally:
            await agent.stop()
    status, page = pages["1ms"]
    assert status["page_warning"].startswith("/metrics holds ")
    assert "more than half of the 0.001 s a scrape may take (global.scrape_timeout)" in status["page_warning"]
    assert "Shard the targets (--shard.count) or leave out series (omit_series)" in status["page_warning"]
    assert f'<div class="banner" id="page-warning">{html.escape(status["page_warning"])}</div>' in page
    assert any(r.getMessage() == "the /metrics page is too big for a scrape" for r in caplog.records)
    status, page = pages["10s"]
    assert status["page_warning"] is None and 'id="page-warning"' not in page


async def test_the_page_carries_a_content_security_policy_a_browser_enforces(tmp_path, chromium):
    """If an escaping bug ever let markup into the page, the browser would run no script and fetch nothing:
    markup with an inline handler and requests to another server are tried in the page, in Chromium."""
    requests: list[str] = []

    async def record(request: web.Request) -> web.Response:
        requests.append(request.path_qs)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    runner, other = await serve(app)
    config = tmp_path / "agent.yaml"
    config.write_text("global: {}\n")
    agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
    await agent.start()
    url = f"http://127.0.0.1:{agent.bound_port}/"
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            policy = response.headers.get("Content-Security-Policy", "")
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, policy
        async with Browser(chromium) as browser:
            page = await browser.new_page()
            await page.goto(url)
            await page.evaluate(
                "document.body.insertAdjacentHTML('beforeend', '<img src=\"x\" onerror=\"window.ran = 1\">"
                f"<img src=\"http://127.0.0.1:{other}/image\">');"
                f"fetch('http://127.0.0.1:{other}/fetch').catch(() => null); 1")
            await asyncio.sleep(1)
            ran = await page.evaluate("window.ran === undefined ? 'no' : 'yes'")
        assert ran == "no"
        assert requests == []
        assert any("Content Security Policy" in error for error in page.errors), page.errors
    finally:
        await agent.stop()
        await runner.cleanup()
