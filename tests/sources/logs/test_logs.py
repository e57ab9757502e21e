"""Log sources on real files: appends, partial lines, every rotation kind, restarts, bad lines, limits."""

import asyncio
import json
import os
import shutil
import signal
import time

import pytest

from agent.config.agent import load_config
from agent.config.problems import ConfigError
from agent.runtime.agent import Agent
from agent.series.store import Store
from tests.helpers import (
    Exposition,
    LoopWatch,
    ascrape,
    build_source,
    render_store,
    scrape,
    use_positions,
    wait_until,
)
from tests.sources.logs.conftest import log_config, nginx_line, parse


class Running:
    """A log source running on the test's loop; every read goes through the rendered exposition."""

    def __init__(self, config_text: str, context, store: Store | None = None):
        self.store = store or Store()
        self.source = build_source(self.store, context, parse(config_text).of_kind("logs")[0], "logs")
        self.task = asyncio.create_task(self.source.run())

    def page(self) -> Exposition:
        return render_store(self.store)

    def series(self, name: str, *labels: str) -> dict[tuple, float]:
        """Values of ``name`` keyed by the values of ``labels``; every series carries source="nginx"."""
        found = self.page().find(name)
        assert all(s.labels.get("source") == "nginx" for s in found), found
        return {tuple(s.labels.get(label, "") for label in labels): s.value for s in found}

    def count(self, name: str) -> float:
        return self.page().value(name, source="nginx") or 0

    def requests(self) -> float:
        return self.page().total("http_requests_total")

    def buckets(self, name: str, **labels: str) -> list[float]:
        return list(self.page().by(f"{name}_bucket", "le", **labels).values())

    async def wait(self, check, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)

    async def settle(self) -> None:
        await asyncio.sleep(0.4)  # several polls, and longer than the drain grace

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def append(path, *lines: str) -> None:
    with open(path, "a") as handle:
        handle.write("".join(lines))


async def test_appends_are_counted_and_partial_lines_wait(tmp_path, context):
    log = tmp_path / "access.log"
    append(log, nginx_line(), nginx_line(status=503))
    run = Running(log_config([str(log)]), context)
    await run.wait(lambda: run.requests() == 2)
    assert run.series("http_requests_total", "method", "status") == {("GET", "200"): 1, ("GET", "503"): 1}
    assert run.count("http_server_errors_total") == 1
    assert run.series("http_response_bytes_total", "method") == {("GET",): 1024}
    assert run.buckets("http_request_duration_seconds", method="GET") == [0, 2, 2, 2]
    assert abs(run.page().value("http_request_duration_seconds_sum", method="GET") - 0.084) < 1e-9
    line = nginx_line(method="POST")
    append(log, line[:30])
    await run.settle()
    assert run.requests() == 2  # no newline yet
    append(log, line[30:])
    await run.wait(lambda: run.requests() == 3)
    assert run.series("http_requests_total", "method", "status")[("POST", "200")] == 1
    assert run.count("kpi_agent_log_lines_unmatched_total") == 0
    await run.stop()


async def test_start_at_end_skips_history_but_not_new_files(tmp_path, context):
    old = tmp_path / "a.log"
    append(old, nginx_line(), nginx_line())
    run = Running(log_config([str(tmp_path / "*.log")], start_at="end"), context)
    await run.settle()
    assert run.requests() == 0
    append(old, nginx_line())
    (tmp_path / "b.log").write_text(nginx_line() * 4)  # appears later: read from its beginning
    await run.wait(lambda: run.requests() == 5)
    assert run.count("kpi_agent_log_files_watched") == 2
    await run.stop()


@pytest.mark.parametrize("kind", ["rename_create", "copytruncate", "truncate", "delete_recreate"])
async def test_rotation_loses_nothing_and_counts_nothing_twice(tmp_path, context, kind):
    log = tmp_path / "access.log"
    append(log, *[nginx_line()] * 10)
    run = Running(log_config([str(log)]), context)
    await run.wait(lambda: run.requests() == 10)
    if kind == "rename_create":
        append(log, *[nginx_line()] * 5)  # written just before the rename: must be drained from the old file
        os.rename(log, tmp_path / "access.log.1")
        append(tmp_path / "access.log.1", nginx_line())  # the writer has not reopened yet
        append(log, *[nginx_line(status=500)] * 7)
        expected = 10 + 5 + 1 + 7
    elif kind == "copytruncate":
        await run.settle()
        shutil.copy(log, tmp_path / "access.log.1")
        os.truncate(log, 0)
        append(log, *[nginx_line(status=500)] * 7)
        expected = 17
    elif kind == "truncate":
        os.truncate(log, 0)
        await run.settle()
        append(log, *[nginx_line(status=500)] * 3)
        expected = 13
    else:
        append(log, *[nginx_line()] * 2)
        os.unlink(log)
        await run.settle()
        append(log, *[nginx_line(status=500)] * 4)
        expected = 16
    await run.wait(lambda: run.requests() >= expected)
    await run.settle()
    assert run.requests() == expected
    assert run.count("kpi_agent_log_rotations_total") >= 1
    assert run.count("kpi_agent_log_lines_total") == expected
    await run.stop()


async def test_restart_resumes_from_saved_offsets(tmp_path, context):
    log = tmp_path / "access.log"
    positions_file = tmp_path / "positions.json"
    append(log, *[nginx_line()] * 100)
    positions = use_positions(context, str(positions_file))
    run = Running(log_config([str(log)]), context)
    await run.wait(lambda: run.requests() == 100)
    await run.stop()
    positions.flush()
    saved = json.loads(positions_file.read_text())["sources"]["nginx"][str(log)]
    assert saved["offset"] == log.stat().st_size and saved["ino"] == log.stat().st_ino

    append(log, *[nginx_line(status=500)] * 30)  # written while the agent is down
    positions = use_positions(context, str(positions_file))  # a new process reads the file
    again = Running(log_config([str(log)], start_at="end"), context)
    await again.wait(lambda: again.requests() == 30)
    await again.settle()
    assert again.series("http_requests_total", "method", "status") == {("GET", "500"): 30}
    await again.stop()


async def test_rotation_while_down_drains_the_old_file_first(tmp_path, context):
    log = tmp_path / "access.log"
    append(log, *[nginx_line()] * 10)
    positions = use_positions(context, str(tmp_path / "positions.json"))
    run = Running(log_config([str(log)]), context)
    await run.wait(lambda: run.requests() == 10)
    await run.stop()
    positions.flush()
    append(log, *[nginx_line()] * 3)
    os.rename(log, tmp_path / "access.log.1")
    append(log, *[nginx_line(status=500)] * 4)
    positions = use_positions(context, str(tmp_path / "positions.json"))
    again = Running(log_config([str(log)]), context)
    await again.wait(lambda: again.requests() == 7)
    await again.settle()
    assert again.series("http_requests_total", "method", "status") == {("GET", "200"): 3, ("GET", "500"): 4}
    await again.stop()


async def test_corrupt_positions_and_offsets_past_the_end_are_warnings(tmp_path, context, caplog):
    log = tmp_path / "access.log"
    append(log, *[nginx_line()] * 3)
    positions_file = tmp_path / "positions.json"
    positions_file.write_text('{"version": 1, "sources": {"nginx": ')  # truncated mid-write
    use_positions(context, str(positions_file))
    assert "positions file unreadable or corrupt" in caplog.text
    stat = log.stat()
    positions_file.write_text(json.dumps({"version": 1, "sources": {"nginx": {
        str(log): {"dev": stat.st_dev, "ino": stat.st_ino, "offset": 10**9}}}}))
    use_positions(context, str(positions_file))
    run = Running(log_config([str(log)], start_at="end"), context)
    await run.wait(lambda: run.requests() == 3)
    assert "past the end" in caplog.text
    await run.stop()


async def test_unmatched_and_malformed_lines_are_counted_and_skipped(tmp_path, context):
    log = tmp_path / "access.log"
    bad_number = nginx_line().replace(" 0.042\n", " 0.0.4\n")
    with open(log, "wb") as handle:
        handle.write(nginx_line().encode() + b"not an access log line\n" + b"\xff\xfe broken utf-8\n" +
                     bad_number.encode() + nginx_line(status=404).encode())
    run = Running(log_config([str(log)]), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 5)
    assert run.requests() == 3  # the line with a bad response time still counts as a request
    assert run.count("kpi_agent_log_lines_unmatched_total") == 1
    assert run.count("kpi_agent_log_lines_malformed_total") == 1
    assert run.page().by("kpi_agent_log_lines_skipped_total", "reason", metric="http_request_duration_seconds") == {
        "missing": 0, "not_a_number": 1, "not_finite": 0}
    assert run.page().value("http_request_duration_seconds_count", method="GET") == 2
    await run.stop()


async def test_json_and_logfmt_formats(tmp_path, context):
    metrics = ("      - {name: jobs_total, type: counter, labels: [queue]}\n"
               "      - {name: job_seconds, type: histogram, value: took, buckets: [1, 10]}\n"
               "      - {name: queue_depth, type: gauge, value: depth, labels: [queue]}\n")
    for fmt, lines in (("json", ['{"queue": "a", "took": 0.5, "depth": 3}\n',
                                 '{"queue": "a", "took": 20, "depth": 1}\n',
                                 "{oops\n", '{"queue": "b", "took": "x", "depth": 2}\n']),
                       ("logfmt", ['queue=a took=0.5 depth=3\n', 'level=info queue="a" took=20 depth=1\n', "\n",
                                   'queue=b took=x depth=2\n'])):
        log = tmp_path / f"{fmt}.log"
        append(log, *lines)
        store = Store()
        text = log_config([str(log)], metrics=metrics, fmt=fmt)
        run = Running(text, context, store)
        await run.wait(lambda run=run: run.count("kpi_agent_log_lines_total") == 4)
        assert run.series("jobs_total", "queue") == {("a",): 2, ("b",): 1}, fmt
        assert run.series("queue_depth", "queue") == {("a",): 1, ("b",): 2}, fmt
        assert run.buckets("job_seconds") == [1, 1, 2], fmt
        assert run.page().value("kpi_agent_log_lines_skipped_total", metric="job_seconds",
                                reason="not_a_number") == 1, fmt
        assert run.count("kpi_agent_log_lines_malformed_total") + run.count("kpi_agent_log_lines_unmatched_total") == 1
        await run.stop()


async def test_match_takes_a_number_as_its_text(tmp_path, context):
    """match: {status: 500} (a number in YAML) matches the text 500, as it did before regexes went to RE2."""
    log = tmp_path / "app.log"
    append(log, '{"status": 500}\n', '{"status": 200}\n', '{"status": 5000}\n')
    metrics = "      - {name: errors_total, type: counter, match: {status: 500}}\n"
    run = Running(log_config([str(log)], metrics=metrics, fmt="json"), context, Store())
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 3)
    assert run.page().value("errors_total", source="nginx") == 1
    await run.stop()


async def test_series_limit_drops_and_counts_new_label_sets(tmp_path, context):
    log = tmp_path / "access.log"
    append(log, *[nginx_line(status=code) for code in (200, 201, 202, 203, 200)])
    run = Running(log_config([str(log)], extra="    max_series_per_metric: 2\n"), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 5)
    assert run.series("http_requests_total", "method", "status") == {("GET", "200"): 2, ("GET", "201"): 1}
    assert run.page().value("kpi_agent_series_dropped_total", metric="http_requests") == 2
    await run.stop()


async def test_a_flood_of_lines_does_not_starve_the_event_loop(tmp_path, context):
    log = tmp_path / "access.log"
    append(log, *[nginx_line()] * 200_000)
    async with LoopWatch() as loop:
        run = Running(log_config([str(log)]), context)
        while run.requests() < 200_000:
            await asyncio.sleep(0.01)
    await run.stop()
    assert loop.longest < 0.25, f"event loop held for {loop.longest * 1000:.0f} ms of CPU"


def test_config_errors_name_file_line_and_field():
    with pytest.raises(ConfigError) as info:
        parse("logs:\n"
              "  - name: app\n"
              "    paths: [relative.log]\n"
              "    pattern: '(?P<status>\\d+'\n"
              "    metrics: []\n"
              "  - name: web\n"
              "    paths: [/var/log/x.log]\n"
              "    pattern: '(?P<status>\\d+) (?P<rt>\\S+)'\n"
              "    metrics:\n"
              "      - {name: requests, type: counter, labels: [method]}\n"
              "      - {name: latency, type: histogram}\n"
              "      - {name: sizes, type: histogram, value: rt, buckets: [1, 0.5]}\n"
              "      - {name: depth, type: gauge}\n")
    problems = [str(p) for p in info.value.problems]
    expected = [
        "agent.yaml:3: logs[0].paths: item 0: 'relative.log' is not an absolute path",
        "agent.yaml:4: logs[0].pattern: regular expression",
        "agent.yaml:10: logs[1].metrics[0].name: counter names end in _total: requests_total",
        "agent.yaml:10: logs[1].metrics[0].labels: 'method' is not a named group of the pattern (groups: rt, status)",
        "agent.yaml:11: logs[1].metrics[1].value: a histogram needs value",
        "agent.yaml:12: logs[1].metrics[2].buckets: buckets must be sorted and distinct",
        "agent.yaml:13: logs[1].metrics[3].value: a gauge needs value",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)


async def test_reload_keeps_offsets_and_counters_of_unchanged_log_sources(tmp_path):
    log = tmp_path / "access.log"
    append(log, *[nginx_line()] * 5)
    config_file = tmp_path / "agent.yaml"
    text = log_config([str(log)]) + f"positions_file: {tmp_path / 'positions.json'}\n"
    config_file.write_text(text)
    agent = Agent(lambda: load_config(config_file)[0], "127.0.0.1:0")
    await agent.start()
    base = f"http://127.0.0.1:{agent.bound_port}/metrics"

    async def requests() -> dict[str, float]:
        return (await ascrape(base)).by("http_requests_total", "status")

    async def until(check) -> None:
        deadline = time.monotonic() + 5
        while not await check():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)

    try:
        await until(lambda: _equals(requests(), {"200": 5}))
        source = agent.sources[("logs", "nginx")].source
        config_file.write_text(text + "global: {labels: {site: x}}\n")  # the log source itself is unchanged
        assert await agent.reload() is None
        assert agent.sources[("logs", "nginx")].source is source
        append(log, nginx_line())
        await until(lambda: _equals(requests(), {"200": 6}))
        assert (await ascrape(base)).find("http_requests_total")[0].labels["site"] == "x"
        changed = text.replace("http_server_errors_total", "http_errors_total")
        config_file.write_text(changed)
        assert await agent.reload() is None
        assert agent.sources[("logs", "nginx")].source is not source
        append(log, nginx_line(status=500))
        await until(lambda: _equals(requests(), {"500": 1}))
        await asyncio.sleep(0.3)
        # a changed source starts its counters afresh but continues from the saved offset: only the new line
        assert await requests() == {"500": 1}
    finally:
        await agent.stop()


async def _equals(result, expected) -> bool:
    return await result == expected


@pytest.mark.slow
def test_sigkill_then_restart_reads_what_was_written_while_down(tmp_path, start_agent):
    log = tmp_path / "access.log"
    append(log, *[nginx_line()] * 20)
    config = tmp_path / "agent.yaml"
    config.write_text(log_config([str(log)]) + f"positions_file: {tmp_path / 'positions.json'}\n")

    def requests(base: str, status: str) -> float | None:
        return scrape(base + "/metrics").value("http_requests_total", status=status)

    process, base = start_agent(config)
    wait_until(lambda: requests(base, "200") == 20)
    wait_until(lambda: (tmp_path / "positions.json").exists(), timeout=15)  # a periodic flush happened
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    append(log, *[nginx_line(status=500)] * 7)
    _, base = start_agent(config)
    wait_until(lambda: requests(base, "500") == 7)
    time.sleep(0.5)
    assert requests(base, "200") is None  # nothing before the saved offset was read again
