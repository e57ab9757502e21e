"""The agent pushing into real receivers (Debian's Prometheus with its remote-write receiver, Debian's
VictoriaMetrics), read back by their own query APIs: every exposed sample, exactly, with the agent's and the
external labels; stale markers ending series at once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import fetch, wait_until
from tests.push.agents import AgentProcess, log_source, nginx_lines
from tests.push.receivers import PrometheusReceiver, Receiver, VictoriaMetrics

pytestmark = [pytest.mark.slow, pytest.mark.tools]


@pytest.fixture(params=["prometheus", "victoria-metrics"])
def receiver(request, tmp_path: Path):
    receiver: Receiver = (PrometheusReceiver if request.param == "prometheus" else VictoriaMetrics)(tmp_path)
    receiver.start()
    yield receiver
    receiver.stop()


def _config(tmp_path: Path, receiver: Receiver, sources: str) -> Path:
    config = tmp_path / "agent.yaml"
    config.write_text(
        "global: {labels: {site: eu-1}}\n"
        "external_labels: {cluster: c1, site: external-loses}\n"
        f"remote_write_buffer: {tmp_path / 'buffer'}\n"
        f"remote_write:\n  - {{url: '{receiver.write_url}', name: store, interval: 300ms}}\n"
        f"logs:\n{sources}")
    return config


def test_every_exposed_sample_is_read_back_exactly_with_agent_and_external_labels(tmp_path, receiver):
    log = tmp_path / "access.log"
    log.write_text(nginx_lines(40))
    config = _config(tmp_path, receiver, f"  - {log_source(log)}\n")
    agent = AgentProcess(config).start()
    try:
        page = wait_until(lambda: (p := agent.metrics()).value("http_requests_total", method="GET", status="200")
                          and p, what="the log read")
        exposed = {(s.name, frozenset({**{k: v for k, v in s.labels.items() if v}, "cluster": "c1", "job": "kpi-agent",
                                       "instance": _instance(agent)}.items())): s.value
                   for s in page.series if s.labels.get("source") == "nginx" and s.name.startswith("http_")}
        assert {name for name, _ in exposed} == {
            "http_requests_total", "http_response_bytes_total", "http_request_duration_seconds_bucket",
            "http_request_duration_seconds_count", "http_request_duration_seconds_sum"}

        def stored():
            found = receiver.latest('{source="nginx", __name__=~"http_.*"}')
            return found if found.keys() == exposed.keys() and all(
                receiver.same(found[key], value) for key, value in exposed.items()) else None

        assert wait_until(stored, timeout=20, what=f"{receiver.name} to hold what /metrics shows")
        # the agent's own series arrive too, with the labels a scrape would add
        assert receiver.latest('{__name__="kpi_agent_build_info"}')
    finally:
        agent.stop()


def _instance(agent: AgentProcess) -> str:
    import socket

    return f"{socket.gethostname()}:{agent.port}"


def test_a_removed_source_ends_its_series_at_once_with_stale_markers(tmp_path):
    receiver = PrometheusReceiver(tmp_path).start()
    log = tmp_path / "access.log"
    log.write_text(nginx_lines(10))
    config = _config(tmp_path, receiver, f"  - {log_source(log)}\n  - {log_source(log, 'other')}\n")
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: receiver.instant('{source="other"}'), timeout=20, what="the series of source other")
        config.write_text(config.read_text().replace(f"  - {log_source(log, 'other')}\n", ""))
        agent.reload()
        # without stale markers the series would stay visible for Prometheus's 5-minute lookback
        wait_until(lambda: not receiver.instant('{source="other"}'), timeout=20, what="stale markers")
        assert receiver.instant('{source="nginx"}')
        for samples in receiver.samples('{source="nginx"}').values():
            assert not any(math.isnan(value) for _, value in samples)
    finally:
        agent.stop()
        receiver.stop()


def test_basic_auth_from_a_file_follows_a_rotated_password_and_never_shows_it(tmp_path):
    import bcrypt

    def users(password: str) -> str:
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
        return f"basic_auth_users:\n  pusher: {hashed}\n"

    web = tmp_path / "web.yml"
    web.write_text(users("first-secret"))
    receiver = PrometheusReceiver(tmp_path)
    receiver.extra_args = [f"--web.config.file={web}"]
    receiver.auth = ("pusher", "first-secret")
    receiver.start()
    password = tmp_path / "password"
    password.write_text("first-secret\n")
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"remote_write:\n  - url: 'http://127.0.0.1:{receiver.port}/api/v1/write?key=query-secret'\n"
        f"    name: store\n    interval: 200ms\n    basic_auth: {{username: pusher, password_file: '{password}'}}\n")
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: receiver.latest('{__name__="kpi_agent_build_info"}'), timeout=20, what="pushed samples")
        web.write_text(users("second-secret"))  # the receiver's password changes: 401, refused and counted
        receiver.auth = ("pusher", "second-secret")
        wait_until(lambda: agent.metrics().value("kpi_agent_remote_storage_samples_failed_total"), timeout=20,
                   what="the refusals")
        assert "status 401" in agent.remote_write()[0]["error"]
        password.write_text("second-secret\n")  # the agent follows without a reload
        sent = agent.metrics().value("kpi_agent_remote_storage_samples_total")
        wait_until(lambda: agent.metrics().value("kpi_agent_remote_storage_samples_total") > sent + 10, timeout=20,
                   what="sending with the new password")
        shown = agent.metrics().text + json.dumps(agent.remote_write()) + fetch(agent.url + "/")[1]
        assert "/api/v1/write" in shown
        for secret in ("first-secret", "second-secret", "query-secret"):
            assert secret not in shown and secret not in agent.log_text()
    finally:
        agent.stop()
        receiver.stop()
