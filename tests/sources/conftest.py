"""Shared by the source tests: the context a source runs in, whole agents to SIGKILL, and the race of a TLS
connection lost as its handshake ends."""

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from agent.sources.base import SourceContext
from agent.sources.logs.positions import Positions, SharedPositions
from tests.helpers import fetch, free_port, wait_until


@pytest.fixture
async def context(tmp_path):
    context = SourceContext()
    context.resources["positions"] = SharedPositions(positions=Positions(str(tmp_path / "positions.json")))
    yield context
    await context.close()


@pytest.fixture
def start_agent():
    """Starts `kpi-agent run` on a config and returns the process and its base URL once ready; every agent a
    test started and did not stop is terminated after it, whatever failed."""
    started: list[subprocess.Popen] = []

    def start(config: Path) -> tuple[subprocess.Popen, str]:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config.file", str(config),
                                    "--web.listen-address", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: fetch(base + "/-/ready")[0] == 200)
        return process, base

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def tls_lost_as_it_ends(monkeypatch):
    """Every client's TLS handshake made with the loop's start_tls loses its connection just as it ends: asyncio
    then gives no TLS transport (its SSL protocol dropped it in connection_lost before the caller resumed). The
    race is too narrow to hit on purpose; this makes each handshake land in it."""
    real = asyncio.base_events.BaseEventLoop.start_tls

    async def lost(self, transport, protocol, *args, **kwargs):
        tls = await real(self, transport, protocol, *args, **kwargs)
        if kwargs.get("server_side"):  # a test's own server shakes hands as usual
            return tls
        tls.abort()
        return None

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "start_tls", lost)
