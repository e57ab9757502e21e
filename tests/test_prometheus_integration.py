"""A real Prometheus (Debian's package) scrapes a real agent on loopback; we read probe_success back."""

import json
import subprocess
import sys
import urllib.parse

import pytest

from tests.helpers import fetch, free_port, stop_processes, wait_until
from tests.tools import require_tool

pytestmark = pytest.mark.slow  # a real Prometheus scraping a real agent


@pytest.fixture
def processes():
    started = []
    yield started
    stop_processes(started)


def query(prom: str, expr: str) -> list[dict]:
    status, body = fetch(f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}")
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def test_prometheus_scrapes_probe_results(tmp_path, processes):
    prometheus = require_tool("prometheus")
    agent_port, prom_port, dead_port = free_port(), free_port(), free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        "global: {interval: 1s, timeout: 500ms, labels: {site: ci}}\n"
        "http:\n"
        f"  - name: alive\n    url: http://127.0.0.1:{agent_port}/-/healthy\n"
        f"  - name: dead\n    url: http://127.0.0.1:{dead_port}/\n")
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config.file", str(config),
         "--web.listen-address", f"127.0.0.1:{agent_port}"], stderr=subprocess.DEVNULL))
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: kpi-agent\n    static_configs: [{{targets: ['127.0.0.1:{agent_port}']}}]\n")
    processes.append(subprocess.Popen(
        [prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    prom = f"http://127.0.0.1:{prom_port}"

    def results():
        found = {r["metric"]["target"]: r for r in query(prom, "probe_success")}
        return found if set(found) == {"alive", "dead"} else None

    found = wait_until(results, timeout=60, interval=0.5, what="probe_success in Prometheus")
    assert found["alive"]["value"][1] == "1"
    assert found["dead"]["value"][1] == "0"
    assert found["alive"]["metric"]["site"] == "ci" and found["alive"]["metric"]["job"] == "kpi-agent"
    refused = wait_until(lambda: query(prom, 'probes_total{target="dead",result="connection_refused"} > 0'),
                         timeout=30, what="failure reason counter in Prometheus")
    assert refused[0]["metric"]["site"] == "ci"
    assert query(prom, 'up{job="kpi-agent"}')[0]["value"][1] == "1"
