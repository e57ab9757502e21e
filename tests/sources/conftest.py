"""Shared by the log and journal source tests: the context a source runs in, and whole agents to SIGKILL."""

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
