"""A Prometheus answer of any size (issue 18.8): `report`, `ui` and `rules check --prometheus.url` read at most
16 MiB of one answer and say so, instead of reading 200 MB into 490 MB of memory (and more without end).

The server here is what the commands must survive: an endpoint that answers every query with 200 MB of
well-formed Prometheus JSON, streamed (a wrong --prometheus.url, a proxy, a query gone wild); with and without
a Content-Length.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from aiohttp import web

from tests.helpers import fetch, free_port, stop_processes, wait_until

pytestmark = pytest.mark.slow  # three commands against a server streaming 200 MB

AGENT = [sys.executable, "-m", "agent"]
SPEC = str(Path(__file__).resolve().parent.parent / "rules" / "shop.yaml")
HUGE = 200 * 2**20
LIMIT_TEXT = "answered with more than 16 MiB, the most kpi-agent reads of one answer"


def _series(index: int) -> bytes:
    values = ",".join(f'[{1700000000 + i * 60},"0.999"]' for i in range(1000))
    return json.dumps({"metric": {"__name__": "kpi:ratio", "kpi": f"k{index}"}}).encode()[:-1] + \
        b',"values":[' + values.encode() + b"]}"


class HugePrometheus:
    """Buildinfo as Prometheus answers it; every query answered with HUGE bytes of a matrix."""

    def __init__(self, content_length: bool):
        self.content_length = content_length
        self.largest = 0  # the most of one answer written before the client hung up
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/api/v1/status/buildinfo", self._buildinfo)
        app.router.add_route("*", "/api/v1/{what:query.*}", self._query)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _buildinfo(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"version": "2.45.0"}})

    async def _query(self, request: web.Request) -> web.StreamResponse:
        head, tail = b'{"status":"success","data":{"resultType":"matrix","result":[', b"]}}"
        one = _series(0)
        count = (HUGE - len(head) - len(tail)) // (len(one) + 1)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if self.content_length:
            response.content_length = len(head) + count * (len(one) + 1) - 1 + len(tail)
        await response.prepare(request)
        sent = 0
        try:
            await response.write(head)
            chunk = b",".join([one] * 256)
            for start in range(0, count, 256):
                piece = chunk if start + 256 <= count else b",".join([one] * (count - start))
                await response.write((b"," if start else b"") + piece)
                sent += len(piece)
                self.largest = max(self.largest, sent)
            await response.write(tail)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client stopped reading: what we want
        return response

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


# Runs a command as the child of a fresh, small Python and writes the child's peak resident memory (KiB) to a
# file. Measured straight from the test, the figure would be the test process's: a child started by vfork
# (subprocess's way) keeps, across its exec, the high-water mark of the memory it shared with its parent, and
# pytest is 480 MB deep into the suite.
_MEASURED = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured(command: list[str], tmp_path: Path) -> tuple[list[str], Path]:
    """The command wrapped so that its peak memory is written to the returned file when it ends."""
    peak = tmp_path / f"peak-{len(list(tmp_path.glob('peak-*')))}"
    return [sys.executable, "-c", _MEASURED, str(peak), *command], peak


def peak_rss_mib(peak: Path) -> float:
    return int(peak.read_text()) / 1024


@pytest.fixture(params=[True, False], ids=["with Content-Length", "chunked"])
def huge(request):
    server = HugePrometheus(content_length=request.param)
    yield server
    server.close()


def test_report_and_rules_check_refuse_an_answer_past_the_limit(huge, tmp_path):
    url = f"http://127.0.0.1:{huge.port}"
    out = tmp_path / "report.html"
    command, peak = measured([*AGENT, "report", SPEC, "--prometheus.url", url, "--out", str(out)], tmp_path)
    stderr = subprocess.run(command, capture_output=True, text=True, timeout=300).stderr
    assert peak_rss_mib(peak) < 300, "the report read the whole answer"
    assert LIMIT_TEXT in stderr, stderr
    assert "Traceback" not in stderr and out.exists() and LIMIT_TEXT in out.read_text()
    command, peak = measured([*AGENT, "rules", "check", SPEC, "--prometheus.url", url], tmp_path)
    stderr = subprocess.run(command, capture_output=True, text=True, timeout=300).stderr
    assert peak_rss_mib(peak) < 300
    assert LIMIT_TEXT in stderr and "Traceback" not in stderr, stderr
    assert huge.largest < HUGE / 2  # the commands hung up early


def test_ui_shows_the_limit_on_its_page_and_stays_small(huge):
    port = free_port()
    process = subprocess.Popen([*AGENT, "ui", SPEC, "--prometheus.url", f"http://127.0.0.1:{huge.port}",
                                "--web.listen-address", f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: fetch(f"http://127.0.0.1:{port}/-/healthy")[0] == 200, 30, what="the scoreboard")
        page = fetch(f"http://127.0.0.1:{port}/report", timeout=120)[1]
        assert LIMIT_TEXT in page
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
        assert peak < 300, peak
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        assert process.returncode == 0
    finally:
        stop_processes([process])
