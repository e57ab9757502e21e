"""Each endpoint's state where a user looks: the status page, /api/v1/remote_write and /metrics, across a
reload that keeps one endpoint and removes another."""

from __future__ import annotations

import html

import aiohttp
from aiohttp import web

from agent.config.agent import load_config
from agent.runtime.agent import Agent
from tests.helpers import ascrape, free_port, serve
from tests.push.prompb import decode


async def _wait(check, timeout: float = 60.0):  # a deadline only: a passing run waits no longer
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_status_page_api_and_metrics_show_each_endpoint_and_follow_a_reload(tmp_path):
    received = []

    async def write(request: web.Request) -> web.Response:
        received.extend(decode(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/v1/write", write)
    runner, port = await serve(app)
    closed = free_port()
    config = tmp_path / "agent.yaml"
    both = (f"remote_write_buffer: {tmp_path / 'buffer'}\nremote_write:\n"
            f"  - {{url: 'http://127.0.0.1:{port}/api/v1/write', name: good, interval: 100ms}}\n"
            f"  - {{url: 'http://127.0.0.1:{closed}/api/v1/write?token=query-secret', name: 'down', interval: 100ms,"
            " queue_config: {min_backoff: 10ms, max_backoff: 50ms}}\n")
    config.write_text(both)
    agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
    await agent.start()
    base = f"http://127.0.0.1:{agent.bound_port}"
    try:
        async with aiohttp.ClientSession() as session:
            async def endpoints():
                async with session.get(f"{base}/api/v1/remote_write") as response:
                    found = {e["name"]: e for e in await response.json()}
                return found if found["down"]["state"] == "failing" and found["good"]["samples_sent"] else None

            found = await _wait(endpoints)
            assert found["good"]["state"] in ("up to date", "behind") and found["good"]["error"] is None
            assert "cannot send" in found["down"]["error"] and found["down"]["pending_samples"] > 0
            assert found["down"]["url"] == f"http://127.0.0.1:{closed}/api/v1/write"
            assert found["down"]["buffer"] == str(tmp_path / "buffer" / "down")
            async with session.get(f"{base}/") as response:
                page = await response.text()
            assert "query-secret" not in page
            row = page[page.index('data-remote="down"'):].split("</tr>")[0]
            assert '<span class="bad">failing</span>' in row and html.escape("cannot send") in row
            assert 'data-remote="good"' in page
        metrics = await ascrape(f"{base}/metrics")
        assert metrics.value("kpi_agent_remote_storage_samples_total", remote_name="good") > 0
        assert metrics.value("kpi_agent_remote_storage_samples_retried_total", remote_name="down") > 0
        assert metrics.value("kpi_agent_remote_storage_buffer_on_disk", remote_name="good") == 1
        sent_before = metrics.value("kpi_agent_remote_storage_samples_total", remote_name="good")
        # the pushed series carry the agent's own labels, and its self-metrics
        assert {s.label_dict()["job"] for s in received} == {"kpi-agent"}
        assert any(s.name == "kpi_agent_remote_storage_samples_in_total" for s in received)

        config.write_text(both.split("  - {url: 'http://127.0.0.1:" + str(closed))[0])  # only "good" is left
        assert await agent.reload() is None
        metrics = await ascrape(f"{base}/metrics")
        assert not metrics.find("kpi_agent_remote_storage_samples_total", remote_name="down")
        # the unchanged endpoint kept running: its counter carries on
        assert metrics.value("kpi_agent_remote_storage_samples_total", remote_name="good") >= sent_before
        assert [e["name"] for e in agent.remote_write_status()] == ["good"]
    finally:
        await agent.stop()
        await runner.cleanup()
