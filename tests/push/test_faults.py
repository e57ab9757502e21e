"""Faults as a user meets them, each injected for real: the receiver down while the agent is restarted and
SIGKILLed, 500 and 429 bursts, a receiver that never answers, one batch refused, a buffer directory that is
full or read-only. Intervals are scaled down (a round every 200 ms), so an outage of "minutes" is dozens of
rounds and takes seconds.

What must arrive is known exactly, whatever the machine's load: the rounds in the buffer on disk (read here
from its files, decoded by protobuf) when the receiver comes back; every round the receiver was ever offered
(the proxy's record); and the agent's own accounting, samples queued = acknowledged + refused + dropped +
pending, which holds only if no sample went missing in between."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from tests.helpers import Exposition, wait_until
from tests.push.agents import AgentProcess, log_source, nginx_lines
from tests.push.faults import Fault, FaultProxy
from tests.push.prompb import decode
from tests.push.receivers import PrometheusReceiver, VictoriaMetrics

pytestmark = [pytest.mark.slow, pytest.mark.tools]

SERIES = "kpi_agent_build_info"  # one series per agent, in every round


def write_config(path: Path, url: str, buffer: Path, queue: str = "", sources: str = "") -> Path:
    path.write_text(
        f"remote_write_buffer: {buffer}\n"
        f"remote_write:\n  - {{url: '{url}', name: store, interval: 200ms, remote_timeout: 1s,\n"
        f"     queue_config: {{min_backoff: 50ms, max_backoff: 400ms{queue}}}}}\n" + sources)
    return path


def stored_timestamps(receiver, agent: AgentProcess) -> list[int]:
    found = receiver.samples(f'{{__name__="{SERIES}", instance=~".*:{agent.port}"}}')
    assert len(found) <= 1, found.keys()
    return [t for t, _ in next(iter(found.values()), [])]


def buffered_rounds(directory: Path) -> set[int]:
    """The timestamps of SERIES in the records of the buffer's segment files (header: length, CRC, samples,
    timestamp; then a request body), read without the agent's code."""
    rounds = set()
    for segment in sorted(directory.glob("*.seg")):
        data, offset = segment.read_bytes(), 0
        while offset + 20 <= len(data):
            length = struct.unpack_from("<I", data, offset)[0]
            body = data[offset + 20:offset + 20 + length]
            rounds |= {sample.timestamp_ms for sample in decode(body) if sample.name == SERIES}
            offset += 20 + length
    return rounds


def offered_rounds(proxy: FaultProxy) -> set[int]:
    return {sample.timestamp_ms for seen in list(proxy.seen) for sample in seen.samples if sample.name == SERIES}


def accounted(agent: AgentProcess) -> Exposition | None:
    """The page, once every sample queued by this process is acknowledged, refused or dropped (pending 0)."""
    page = agent.metrics()
    queued = page.value("kpi_agent_remote_storage_samples_in_total")
    settled = (page.value("kpi_agent_remote_storage_samples_total") +
               page.value("kpi_agent_remote_storage_samples_failed_total") +
               page.total("kpi_agent_remote_storage_samples_dropped_total"))
    pending = page.value("kpi_agent_remote_storage_samples_pending")
    return page if pending == 0 and queued == settled else None


def test_outage_with_restart_and_sigkill_loses_nothing_and_nothing_is_out_of_order(tmp_path):
    receiver = PrometheusReceiver(tmp_path).start()
    buffer = tmp_path / "buffer"
    config = write_config(tmp_path / "agent.yaml", receiver.write_url, buffer)
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: len(stored_timestamps(receiver, agent)) >= 3, timeout=30, what="first rounds stored")
        receiver.stop()  # the outage begins
        wait_until(lambda: agent.remote_write()[0]["state"] == "failing", what="the endpoint to see the outage")
        time.sleep(2)
        agent.stop()  # a clean restart during the outage
        agent.start()
        time.sleep(2)
        agent.kill()  # SIGKILL during the outage
        agent.start()
        time.sleep(2)
        status = agent.remote_write()[0]
        assert status["state"] == "failing" and status["pending_samples"] > 0
        assert "cannot send" in status["error"]
        waiting = buffered_rounds(buffer / "store")  # what the three processes queued during the outage
        assert len(waiting) >= 10
        receiver.start()  # back, on the same port and data
        wait_until(lambda: agent.remote_write()[0]["pending_samples"] == 0, timeout=60, what="the catch-up")
        stored = stored_timestamps(receiver, agent)
        missing = sorted(waiting - set(stored))
        assert not missing, f"{len(missing)} of {len(waiting)} buffered rounds missing: {missing[:5]}"
        assert stored == sorted(set(stored))  # in order, each round once
        page = agent.metrics()
        assert page.value("kpi_agent_remote_storage_samples_failed_total") == 0  # nothing refused as out of order
        assert page.value("kpi_agent_remote_storage_samples_dropped_total", reason="buffer_full") == 0
        assert "out of order" not in receiver.log.read_text()
        # logged once per process when the failure started, never once per attempt
        assert agent.log_text().count("remote_write endpoint failing") <= 3
    finally:
        agent.stop()
        receiver.stop()


def _proxied(tmp_path: Path, plan, sources: str = "", buffer: Path | None = None):
    receiver = VictoriaMetrics(tmp_path).start()
    proxy = FaultProxy(receiver.write_url, plan).start()
    config = write_config(tmp_path / "agent.yaml", proxy.write_url, buffer or tmp_path / "buffer", sources=sources)
    return receiver, proxy, config


def _all_offered_arrived(receiver, proxy: FaultProxy, agent: AgentProcess, refused: set[int] = frozenset()) -> None:
    page = wait_until(lambda: accounted(agent), timeout=60, what="every queued sample settled")
    assert page.value("kpi_agent_remote_storage_samples_total") > 0
    offered = offered_rounds(proxy) - refused  # rounds sent since may still be on their way: not these

    def missing() -> list[int]:
        return sorted(offered - set(stored_timestamps(receiver, agent)))

    try:
        wait_until(lambda: not missing(), timeout=15, what="every round offered to be stored")
    except AssertionError:
        raise AssertionError(f"rounds offered and never stored: {missing()[:5]}") from None


def test_500_and_429_bursts_are_retried_with_backoff_and_retry_after(tmp_path):
    def plan(n: int) -> Fault | None:
        if 2 <= n < 8:
            return Fault(500)
        if 8 <= n < 10:
            return Fault(429, {"Retry-After": "1"})
        return None

    receiver, proxy, config = _proxied(tmp_path, plan)
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: len(proxy.answered(204)) >= 10, timeout=30, what="sending to resume")
        seen = proxy.seen
        assert seen[9].at - seen[8].at >= 0.95 and seen[10].at - seen[9].at >= 0.95  # Retry-After: 1
        backoffs = [later.at - earlier.at for earlier, later in zip(seen[2:7], seen[3:8], strict=True)]
        assert backoffs[-1] > backoffs[0]  # 50 ms doubling up to 400 ms
        _all_offered_arrived(receiver, proxy, agent)
        page = agent.metrics()
        assert page.value("kpi_agent_remote_storage_samples_retried_total") > 0
        assert page.value("kpi_agent_remote_storage_samples_failed_total") == 0
    finally:
        agent.stop()
        proxy.stop()
        receiver.stop()


def test_one_refused_batch_is_dropped_and_counted_and_the_rest_flows(tmp_path):
    receiver, proxy, config = _proxied(tmp_path, lambda n: Fault(400) if n == 3 else None)
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: len(proxy.answered(204)) >= 8, timeout=30, what="rounds after the refusal")
        (refused,) = proxy.answered(400)  # never retried
        page = agent.metrics()
        assert page.value("kpi_agent_remote_storage_samples_failed_total") == len(refused.samples)
        lost = {sample.timestamp_ms for sample in refused.samples if sample.name == SERIES}
        _all_offered_arrived(receiver, proxy, agent, refused=lost)
        stored = stored_timestamps(receiver, agent)
        assert not lost & set(stored) and [ts for ts in stored if ts > max(lost | {0})]
        assert agent.log_text().count("remote_write batch refused") == 1
    finally:
        agent.stop()
        proxy.stop()
        receiver.stop()


def test_a_receiver_that_never_answers_times_out_and_the_agent_keeps_serving(tmp_path):
    receiver, proxy, config = _proxied(tmp_path, lambda n: Fault(stall=True) if 2 <= n < 6 else None)
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: len(proxy.answered("stalled")) >= 2, timeout=20, what="a stalled request")
        started = time.monotonic()
        page = agent.metrics()  # /metrics answers while the endpoint waits
        assert time.monotonic() - started < 1.0 and page.find(SERIES)
        wait_until(lambda: "no answer within remote_timeout" in (agent.remote_write()[0]["error"] or ""),
                   timeout=10, what="the timeout on the status page")
        _all_offered_arrived(receiver, proxy, agent)
        assert agent.metrics().value("kpi_agent_remote_storage_samples_failed_total") == 0
    finally:
        agent.stop()
        proxy.stop()
        receiver.stop()


def test_a_full_buffer_disk_keeps_samples_in_memory_logs_once_and_loses_nothing(tmp_path, small_disk):
    log = tmp_path / "access.log"
    log.write_text(nginx_lines(2000))
    receiver, proxy, config = _proxied(tmp_path, lambda n: Fault(503) if n >= 1 else None,
                                       sources=f"logs:\n  - {log_source(log)}\n", buffer=small_disk)
    (small_disk / "filler").write_bytes(b"x" * (1 << 20))  # leave under 1 MiB of the 2 MiB
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: agent.remote_write()[0]["buffer_problem"], timeout=60, what="the disk to fill")
        assert "No space left" in agent.remote_write()[0]["buffer_problem"]
        assert agent.metrics().value("kpi_agent_remote_storage_buffer_on_disk") == 0
        time.sleep(1)
        proxy.plan = lambda n: None  # the receiver is back
        _all_offered_arrived(receiver, proxy, agent)
        page = agent.metrics()
        assert page.value("kpi_agent_remote_storage_samples_dropped_total", reason="buffer_full") == 0
        assert page.value("kpi_agent_remote_storage_buffer_errors_total", reason="disk") >= 1
        assert agent.log_text().count("remote_write buffer cannot use the disk") == 1
    finally:
        agent.stop()
        proxy.stop()
        receiver.stop()


def test_a_read_only_buffer_directory_is_said_once_and_pushing_goes_on(tmp_path, read_only_dir):
    receiver, proxy, config = _proxied(tmp_path, lambda n: None, buffer=read_only_dir / "buffer")
    agent = AgentProcess(config).start()
    try:
        wait_until(lambda: len(stored_timestamps(receiver, agent)) >= 5, timeout=30, what="rounds stored")
        assert "Read-only file system" in agent.remote_write()[0]["buffer_problem"]
        _all_offered_arrived(receiver, proxy, agent)
        assert agent.log_text().count("remote_write buffer cannot use the disk") == 1
    finally:
        agent.stop()
        proxy.stop()
        receiver.stop()
