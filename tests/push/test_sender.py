"""What a receiver's answer means (the spec's retry rules), against a real HTTP server on loopback."""

from __future__ import annotations

import email.utils

from aiohttp import web

from agent.push.config import QueueConfig, RemoteWriteConfig, Secret
from agent.push.sender import Sender, retry_after
from tests.helpers import serve


def test_retry_after_in_seconds_or_as_an_http_date_and_capped():
    assert retry_after("7") == 7.0
    assert retry_after(email.utils.formatdate(1_000_030, usegmt=True), now=1_000_000) == 30.0
    assert retry_after("86400") == 600.0  # a receiver asking for a day is asked again in ten minutes
    assert retry_after("soon") is None and retry_after(None) is None


async def test_each_status_gets_the_verdict_the_spec_gives_it(tmp_path):
    answers = iter([(204, {}), (503, {}), (429, {"Retry-After": "2"}), (400, {}), (401, {}), (413, {}), (429, {}),
                    (204, {})])
    seen: list[dict] = []

    async def write(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        status, headers = next(answers)
        return web.Response(status=status, text="out of order sample" if status == 400 else "", headers=headers)

    app = web.Application()
    app.router.add_post("/api/v1/write", write)
    runner, port = await serve(app)
    token = tmp_path / "token"
    token.write_text("first\n")
    url = f"http://127.0.0.1:{port}/api/v1/write"
    sender = Sender(RemoteWriteConfig(url, "r", (None, ""), 15.0, authorization=("Bearer", Secret(file=str(token)))),
                    None)
    strict = Sender(RemoteWriteConfig(url, "s", (None, ""), 15.0, queue=QueueConfig(retry_on_http_429=False)), None)
    try:
        verdicts = [await sender.post(b"x") for _ in range(6)]
        token.write_text("second\n")  # rotated: the next request carries it, no reload
        assert (await strict.post(b"x")).verdict == "refused"  # 429 without retry_on_http_429
        assert (await sender.post(b"x")).verdict == "sent"
        assert seen[-1]["Authorization"] == "Bearer second"
        assert [v.verdict for v in verdicts] == ["sent", "retry", "retry", "refused", "refused", "refused"]
        assert verdicts[2].retry_after == 2.0
        assert verdicts[3].message == "status 400: out of order sample"
        headers = seen[0]
        assert headers["Content-Encoding"] == "snappy" and headers["Content-Type"] == "application/x-protobuf"
        assert headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
        assert headers["Authorization"] == "Bearer first" and headers["User-Agent"].startswith("kpi-agent/")
        closed = Sender(RemoteWriteConfig("http://127.0.0.1:9/api/v1/write", "c", (None, ""), 15.0), None)
        outcome = await closed.post(b"x")
        assert outcome.verdict == "retry" and outcome.message.startswith("cannot send")
        await closed.close()
    finally:
        await sender.close()
        await strict.close()
        await runner.cleanup()
