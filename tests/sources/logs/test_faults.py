"""Hostile and broken input to log sources, injected into real files and read back from /metrics: nothing is
lost, nothing is counted twice, and nothing a log line holds can stall the agent or break the exposition."""

import asyncio
import json
import os
import time

from agent.config.agent import load_config
from agent.runtime import agent as runtime
from agent.runtime.agent import Agent
from agent.sources.logs.fields import parse_logfmt
from tests.helpers import LoopWatch, ascrape, cpu_time_of
from tests.sources.logs.conftest import log_config
from tests.sources.logs.test_logs import Running, append

JSON_METRICS = ("      - {name: http_requests_total, type: counter, labels: [method, status]}\n"
                "      - {name: http_request_duration_seconds, type: histogram, value: rt, buckets: [0.1, 1]}\n"
                "      - {name: http_response_bytes_total, type: counter, value: bytes}\n"
                "      - {name: queue_depth, type: gauge, value: depth}\n")


def json_line(**fields) -> str:
    return json.dumps(fields) + "\n"


async def test_a_line_missing_one_metrics_value_still_counts_in_every_other_metric(tmp_path, context):
    log = tmp_path / "app.log"
    append(log, json_line(method="GET", status=200, rt=0.05, bytes=100),
           json_line(method="GET", status=200, bytes=10),  # no rt: a request all the same
           json_line(method="GET", status=500, rt=0.5),  # no bytes
           json_line(method="POST", status=200, rt="slow", bytes=5))  # rt not a number
    run = Running(log_config([str(log)], fmt="json", metrics=JSON_METRICS), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 4)
    await run.settle()
    page = run.page()
    assert run.series("http_requests_total", "method", "status") == {
        ("GET", "200"): 2, ("GET", "500"): 1, ("POST", "200"): 1}  # the KPI denominator: every request
    assert page.value("http_request_duration_seconds_count") == 2
    assert page.value("http_response_bytes_total") == 115
    skipped = {(s.labels["metric"], s.labels["reason"]): s.value for s in page.find("kpi_agent_log_lines_skipped_total")
               if s.value}
    assert skipped == {("http_request_duration_seconds", "missing"): 1,
                       ("http_request_duration_seconds", "not_a_number"): 1,
                       ("http_response_bytes_total", "missing"): 1, ("queue_depth", "missing"): 4}
    assert run.count("kpi_agent_log_lines_malformed_total") == 0
    await run.stop()


async def test_negative_nan_and_infinite_values_are_skipped_per_metric(tmp_path, context):
    log = tmp_path / "app.log"
    append(log, json_line(method="GET", status=200, rt=0.2, bytes=100, depth=3),
           json_line(method="GET", status=200, rt=-1, bytes=-390, depth=-2),  # counters never go down
           '{"method": "GET", "status": 200, "rt": NaN, "bytes": Infinity, "depth": -Infinity}\n',
           json_line(method="GET", status=200, rt="inf", bytes="1e999", depth="nan"),
           json_line(method="GET", status=200, rt=0.3, bytes=1, depth=7))
    run = Running(log_config([str(log)], fmt="json", metrics=JSON_METRICS), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 5)
    await run.settle()
    page = run.page()
    assert page.value("http_requests_total", method="GET", status="200") == 5
    assert page.value("http_response_bytes_total") == 101  # -390 skipped: a counter never decreases
    assert page.value("http_request_duration_seconds_count") == 3  # 0.2, -1 (a histogram may take it), 0.3
    assert abs(page.value("http_request_duration_seconds_sum") - (-0.5)) < 1e-9  # finite, never NaN
    assert page.value("queue_depth") == 7
    reasons = page.by("kpi_agent_log_lines_skipped_total", "reason", metric="http_response_bytes_total")
    assert reasons == {"missing": 0, "not_a_number": 0, "not_finite": 2, "negative": 1}
    assert page.by("kpi_agent_log_lines_skipped_total", "reason", metric="http_request_duration_seconds")[
        "not_finite"] == 2
    await run.stop()


async def test_a_lone_surrogate_in_a_log_line_cannot_break_metrics(tmp_path, context):
    log = tmp_path / "app.log"
    append(log, '{"method": "G\\ud800ET", "status": 200, "rt": 0.1}\n', json_line(method="GET", status=200, rt=0.1))
    run = Running(log_config([str(log)], fmt="json", metrics=JSON_METRICS), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 2)
    text_page = run.page()  # the strict parser decodes UTF-8 strictly
    assert text_page.by("http_requests_total", "method") == {"G\ufffdET": 1, "GET": 1}
    assert run.page().value("kpi_agent_log_lines_total", source="nginx") == 2
    await run.stop()


def test_logfmt_parsing_is_linear_whatever_the_line_holds():
    def line(size: int) -> str:
        return "level=info " + "x" * size + " msg=" + '"' + "y" * size  # a token without "=", an open quote

    fields = parse_logfmt(line(80_000))
    assert fields["level"] == "info" and fields["msg"].startswith('"y')
    # the quadratic regex took 42 s at 40,000 characters: 4 times the line, 16 times the time; linear is 4 times
    small, large = (cpu_time_of(lambda size=size: parse_logfmt(line(size))) for size in (20_000, 80_000))
    assert large < 8 * small, (small, large)
    assert parse_logfmt('a=1 b="two words" c="with \\"quotes\\"" d= e f=g=h') == {
        "a": "1", "b": "two words", "c": 'with "quotes"', "d": "", "f": "g=h"}


async def test_lines_over_max_line_bytes_are_counted_and_skipped_and_memory_stays_bounded(tmp_path, context):
    log = tmp_path / "app.log"
    metrics = "      - {name: events_total, type: counter, labels: [level]}\n"
    text = log_config([str(log)], fmt="logfmt", metrics=metrics, extra="    max_line_bytes: 1KiB\n")
    append(log, "level=info msg=ok\n", "level=warn " + "x" * 5000 + "\n", "level=info msg=after\n")
    run = Running(text, context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 3)
    assert run.series("events_total", "level") == {("info",): 2}
    assert run.count("kpi_agent_log_lines_too_long_total") == 1
    # a line that never ends: a writer stuck mid-line, 3 MiB and growing, never accumulates
    with open(log, "a") as handle:
        for _ in range(12):
            handle.write("y" * (256 * 1024))
            handle.flush()
            await asyncio.sleep(0.02)
    await run.settle()
    tail = run.source.tails[str(log)]
    assert len(tail.current.partial) <= 1024
    assert run.count("kpi_agent_log_lines_too_long_total") == 2
    append(log, "tail of the long line\n", "level=info msg=resumed\n")
    await run.wait(lambda: run.series("events_total", "level") == {("info",): 3})
    assert run.count("kpi_agent_log_lines_too_long_total") == 2  # the long line is counted once
    assert run.count("kpi_agent_log_lag_bytes") == 0
    await run.stop()


async def test_a_10_mib_logfmt_line_does_not_stall_the_event_loop(tmp_path, context):
    log = tmp_path / "app.log"
    append(log, "level=info " + "x" * (10 * 1024 * 1024) + "\n", "level=info msg=next\n")
    metrics = "      - {name: events_total, type: counter, labels: [level]}\n"
    async with LoopWatch() as loop:
        run = Running(log_config([str(log)], fmt="logfmt", metrics=metrics), context)
        await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 2, timeout=30)
    assert run.count("kpi_agent_log_lines_too_long_total") == 1
    assert run.series("events_total", "level") == {("info",): 1}
    assert loop.longest < 0.25, f"event loop held for {loop.longest * 1000:.0f} ms of CPU"
    await run.stop()


async def test_a_directory_matched_by_a_glob_is_skipped_and_the_other_files_are_read(tmp_path, context, caplog):
    (tmp_path / "a.log").mkdir()  # sorts first: it used to crash the source before b.log was read
    append(tmp_path / "b.log", "level=info\n" * 3)
    metrics = "      - {name: events_total, type: counter, labels: [level]}\n"
    run = Running(log_config([str(tmp_path / "*.log")], fmt="logfmt", metrics=metrics), context)
    await run.wait(lambda: run.series("events_total", "level") == {("info",): 3})
    await run.settle()
    assert caplog.text.count("not a regular file") == 1
    assert run.count("kpi_agent_log_files_watched") == 1
    await run.stop()


async def test_a_crashed_log_source_resumes_from_its_offsets(tmp_path, monkeypatch):
    """A bug in one batch (injected) crashes the source; the supervisor restarts it; no line is read twice."""
    monkeypatch.setattr(runtime, "_RESTART_BACKOFF", (0.05, 0.1))
    log = tmp_path / "app.log"
    append(log, "level=info\n" * 150)
    config_file = tmp_path / "agent.yaml"
    metrics = "      - {name: events_total, type: counter, labels: [level]}\n"
    config_file.write_text(log_config([str(log)], fmt="logfmt", metrics=metrics)
                           + f"positions_file: {tmp_path / 'positions.json'}\n")
    agent = Agent(lambda: load_config(config_file)[0], "127.0.0.1:0")
    await agent.start()
    base = f"http://127.0.0.1:{agent.bound_port}/metrics"
    try:
        source = agent.sources[("logs", "nginx")].source
        real_process = source.pipeline.process_text
        crashes = {"left": 5}

        def flaky(*batch, **options):
            if crashes["left"]:
                crashes["left"] -= 1
                raise RuntimeError("injected bug")
            return real_process(*batch, **options)

        monkeypatch.setattr(source.pipeline, "process_text", flaky)
        deadline = time.monotonic() + 10
        while (await ascrape(base)).value("events_total", level="info") != 150:
            assert time.monotonic() < deadline, "never counted"
            await asyncio.sleep(0.05)
        append(log, "level=info\n" * 10)
        while (await ascrape(base)).value("events_total", level="info") != 160:
            assert time.monotonic() < deadline, "the appended lines were never counted"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        page = await ascrape(base)
        assert page.value("events_total", level="info") == 160  # not 700: nothing re-read after a crash
        assert page.value("kpi_agent_source_crashes_total", source="nginx") == 5
    finally:
        await agent.stop()


async def test_a_fifo_or_unreadable_file_never_blocks_the_others(tmp_path, context):
    os.mkfifo(tmp_path / "a.log")  # opening a FIFO for reading would block without a writer
    append(tmp_path / "b.log", "level=info\n")
    metrics = "      - {name: events_total, type: counter, labels: [level]}\n"
    run = Running(log_config([str(tmp_path / "*.log")], fmt="logfmt", metrics=metrics), context)
    await run.wait(lambda: run.series("events_total", "level") == {("info",): 1})
    await run.stop()
