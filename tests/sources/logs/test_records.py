"""Lines joined into records before parsing, on real files: multi-line records (stack traces) and container
runtime logs (CRI and docker json-file partial lines, Kubernetes labels from the path), across rotations,
restarts and SIGKILL."""

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from agent.config.problems import ConfigError
from agent.series.store import Store
from agent.sources.logs import framing
from agent.sources.logs.source import kubernetes_labels
from tests.helpers import build_source, render_store, scrape, use_positions, wait_until
from tests.sources.logs.conftest import log_config, parse
from tests.sources.logs.test_logs import Running, append

# A record's first word and the rest of it, its newlines shown as "+": what was joined is visible in the labels.
JOINED = ("      - name: records_total\n"
          "        type: counter\n"
          "        labels: [first, rest]\n"
          "        rewrite: [{label: rest, regex: '\\n', replacement: '+'}]\n")
JOINED_PATTERN = "    pattern: '(?s)^(?P<first>\\S+)(?P<rest>.*)$'\n"


def multiline(path, timeout: str = "300ms", max_lines: int = 500) -> str:
    """A source joining lines from one starting with S; each record counted by its first word and the rest."""
    return (f"logs:\n  - name: nginx\n    paths: ['{path}']\n    start_at: beginning\n"
            f"    multiline: {{start: '^S', timeout: {timeout}, max_lines: {max_lines}}}\n"
            f"{JOINED_PATTERN}    metrics:\n{JOINED}")


def records(run: Running) -> dict[tuple[str, str], float]:
    return run.series("records_total", "first", "rest")


async def test_multiline_joins_continuation_lines_into_one_record(tmp_path, context):
    log = tmp_path / "app.log"
    metrics = ("      - {name: events_total, type: counter, labels: [level]}\n"
               "      - {name: exceptions_total, type: counter, match: {exception: '.+'}}\n")
    pattern = ("    pattern: '^\\S+ \\S+ (?P<level>[A-Z]+) [^\\n]*(?:\\n(?P<exception>[\\w.]+Exception))?'\n")
    append(log, "2026-11-24 10:00:00 ERROR request failed\n", "java.lang.IllegalStateException: boom\n",
           "    at shop.Cart.add(Cart.java:42)\n", "    at shop.Api.post(Api.java:7)\n")
    append(log, "2026-11-24 10:00:01 INFO ok\n")
    text = (f"logs:\n  - name: nginx\n    paths: ['{log}']\n    start_at: beginning\n"
            "    multiline: {start: '^\\d{4}-\\d\\d-\\d\\d ', timeout: 4s}\n" + pattern + "    metrics:\n" + metrics)
    run = Running(text, context)
    await run.wait(lambda: run.series("events_total", "level") == {("ERROR",): 1})
    assert run.count("exceptions_total") == 1
    assert run.count("kpi_agent_log_lines_total") == 5 and run.count("kpi_agent_log_records_total") == 1
    # the INFO record waits for a line that may continue it: the next record's start, or the timeout
    append(log, "2026-11-24 10:00:02 ERROR again\n")
    await run.wait(lambda: run.series("events_total", "level") == {("ERROR",): 1, ("INFO",): 1})
    append(log, "Caused by: java.io.IOException\n")  # continues the last record, within the timeout
    await run.wait(lambda: run.series("events_total", "level") == {("ERROR",): 2, ("INFO",): 1}, timeout=10)
    assert run.count("kpi_agent_log_records_total") == 3 and run.count("kpi_agent_log_lines_total") == 7
    assert run.count("exceptions_total") == 1
    await run.stop()


async def test_multiline_max_lines_and_lines_before_the_first_start(tmp_path, context):
    log = tmp_path / "app.log"
    append(log, "orphan\n", "S1\n", "c1\n", "c2\n", "c3\n", "c4\n", "S2\n")
    run = Running(multiline(log, max_lines=3), context)
    await run.wait(lambda: run.count("kpi_agent_log_records_total") == 4)
    assert records(run) == {("orphan", ""): 1, ("S1", "+c1+c2"): 1, ("c3", "+c4"): 1, ("S2", ""): 1}
    await run.stop()


async def test_a_multiline_record_is_never_split_across_a_rotation(tmp_path, context):
    log = tmp_path / "app.log"
    append(log, "S1\n", "c1\n", "c2\n")
    run = Running(multiline(log, timeout="1s"), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 3)
    os.rename(log, tmp_path / "app.log.1")
    append(tmp_path / "app.log.1", "c3\n")  # the writer has not reopened yet: still the first record
    append(log, "c4\n", "S2\n", "c5\n")  # the new file: c4 continues nothing of the old file
    await run.wait(lambda: run.count("kpi_agent_log_records_total") == 3)
    await asyncio.sleep(0.4)
    assert records(run) == {("S1", "+c1+c2+c3"): 1, ("c4", ""): 1, ("S2", "+c5"): 1}
    await run.stop()


async def test_a_restart_reads_a_pending_record_again_whole(tmp_path, context):
    log = tmp_path / "app.log"
    positions_file = tmp_path / "positions.json"
    append(log, "S0\n", "S1\n", "c1\n")
    positions = use_positions(context, str(positions_file))
    run = Running(multiline(log, timeout="1h"), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 3)
    assert records(run) == {("S0", ""): 1}
    await run.stop()
    positions.flush()
    saved = json.loads(positions_file.read_text())["sources"]["nginx"][str(log)]
    assert saved["offset"] == len("S0\n")  # where the held record begins

    append(log, "c2\n", "S2\n")
    positions = use_positions(context, str(positions_file))
    again = Running(multiline(log, timeout="1h"), context)
    await again.wait(lambda: again.count("kpi_agent_log_records_total") == 1)
    assert records(again) == {("S1", "+c1+c2"): 1}  # read again from its first line, counted once
    await again.stop()


POD_LOG = "var/log/pods/shop_web-7d9f8_4f6a1c2e-0b1d-4e8a-9c3f-2a7b5d6e8f90/nginx/0.log"


def cri(stream: str, flag: str, content: str) -> str:
    return f"2026-11-24T10:00:00.123456789Z {stream} {flag} {content}\n"


def container_config(path: str, runtime: str = "cri", extra: str = "") -> str:
    metrics = "      - {name: http_requests_total, type: counter, labels: [status, path]}\n"
    return log_config([path], fmt="json", metrics=metrics,
                      extra=f"    container: {runtime}\n    kubernetes_labels: true\n{extra}")


async def test_cri_partial_lines_are_joined_per_stream_and_labelled_by_pod(tmp_path, context):
    log = tmp_path / POD_LOG
    log.parent.mkdir(parents=True)
    append(log, cri("stdout", "F", '{"status": 200, "path": "/a"}'),
           cri("stdout", "P", '{"status": 5'),
           cri("stderr", "F", '{"status": 404, "path": "/err"}'),  # the other stream, between the pieces
           cri("stdout", "P", '00, "pa'),
           cri("stdout", "F", 'th": "/b"}'),
           "not a CRI line\n",
           cri("stdout", "F", "plain text, not JSON"),
           cri("stdout", "F:x", '{"status": 201, "path": "/c"}'))  # a tag after the flag
    run = Running(container_config(str(tmp_path / "var/log/pods/*/*/*.log")), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 8)
    page = run.page()
    assert {(s.labels["status"], s.labels["path"]): s.value for s in page.find("http_requests_total")} == {
        ("200", "/a"): 1, ("500", "/b"): 1, ("404", "/err"): 1, ("201", "/c"): 1}
    assert {(s.labels["namespace"], s.labels["pod"], s.labels["container"]) for s in page.find("http_requests_total")
            } == {("shop", "web-7d9f8", "nginx")}
    assert run.count("kpi_agent_log_lines_malformed_total") == 2  # not CRI, and not JSON
    assert run.count("kpi_agent_log_records_total") == 5
    await run.stop()


async def test_a_partial_run_without_end_is_one_record_too_long(tmp_path, context):
    """Issue 18.8: a CRI stream writing "P" pieces that never end is one record too long, counted once, not
    once per stretch of it held back; the other stream and what follows the run still count."""
    log = tmp_path / POD_LOG
    log.parent.mkdir(parents=True)
    piece = "x" * 1000
    append(log, *[cri("stdout", "P", piece) for _ in range(100)],  # 100 KB in one record, 100x max_line_bytes
           cri("stderr", "F", '{"status": 404, "path": "/err"}'))
    run = Running(container_config(str(tmp_path / "var/log/pods/*/*/*.log"), extra="    max_line_bytes: 1KiB\n"),
                  context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 101)
    append(log, *[cri("stdout", "P", piece) for _ in range(50)], cri("stdout", "F", "end"),
           cri("stdout", "F", '{"status": 200, "path": "/a"}'))
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 153)
    await run.wait(lambda: run.count("kpi_agent_log_records_total") == 2)
    assert run.count("kpi_agent_log_lines_too_long_total") == 1
    assert {(s.labels["status"], s.labels["path"]): s.value for s in run.page().find("http_requests_total")} == {
        ("200", "/a"): 1, ("404", "/err"): 1}
    await run.stop()


async def test_docker_json_file_partial_lines(tmp_path, context):
    log = tmp_path / "c.log"
    pieces = (('{"status": 200, "path": "/a"}\n', "stdout"), ('{"status": 50', "stdout"),
              ('{"status": 404}\n', "stderr"), ('3, "path": "/b"}\r\n', "stdout"))
    append(log, *[json.dumps({"log": text, "stream": stream, "time": "2026-11-24T10:00:00Z"}) + "\n"
                  for text, stream in pieces], '{"no log": 1}\n')
    run = Running(container_config(str(log), "docker").replace("    kubernetes_labels: true\n", ""), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 5)
    assert run.series("http_requests_total", "status", "path") == {("200", "/a"): 1, ("503", "/b"): 1,
                                                                   ("404", ""): 1}
    assert run.count("kpi_agent_log_lines_malformed_total") == 1
    await run.stop()


async def test_container_lines_survive_rotation_and_restart(tmp_path, context, monkeypatch):
    monkeypatch.setattr(framing, "DEFAULT_MULTILINE_TIMEOUT", 3600)  # a pending piece waits, however slow the test
    log = tmp_path / POD_LOG
    log.parent.mkdir(parents=True)
    positions_file = tmp_path / "positions.json"
    positions = use_positions(context, str(positions_file))
    config = container_config(str(log))
    append(log, cri("stdout", "F", '{"status": 200}'), cri("stdout", "P", '{"status":'))
    run = Running(config, context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 2)
    os.rename(log, str(log) + ".20261124-100000")  # the kubelet rotates; the runtime still writes the old file
    append(str(log) + ".20261124-100000", cri("stdout", "F", ' 201}'))
    append(log, cri("stdout", "P", '{"status"'))
    await run.wait(lambda: run.series("http_requests_total", "status") == {("200",): 1, ("201",): 1})
    await run.stop()  # a piece is pending in the new file
    positions.flush()
    assert json.loads(positions_file.read_text())["sources"]["nginx"][str(log)]["offset"] == 0

    append(log, cri("stdout", "F", ': 202}'))
    positions = use_positions(context, str(positions_file))
    again = Running(config, context)
    await again.wait(lambda: again.series("http_requests_total", "status") == {("202",): 1})
    await asyncio.sleep(0.3)
    assert again.count("kpi_agent_log_lines_total") == 2  # the pending piece read again, nothing before it
    await again.stop()


@pytest.mark.slow
def test_sigkill_with_records_pending_counts_each_once(tmp_path, start_agent):
    log = tmp_path / POD_LOG
    log.parent.mkdir(parents=True)
    positions = tmp_path / "positions.json"
    config = tmp_path / "agent.yaml"
    # records start at "{": a piece waits for its line, and a line for the next record to start (or an hour)
    config.write_text(container_config(str(log), extra="    multiline: {start: '^\\{', timeout: 1h}\n")
                      + f"positions_file: {positions}\n")
    first = cri("stdout", "F", '{"status": 200}')
    append(log, first, cri("stdout", "F", '{"status": 201}'), cri("stdout", "P", '{"status": 5'))

    def requests(base: str) -> dict[str, float]:
        return scrape(base + "/metrics").by("http_requests_total", "status")

    def saved_offset() -> int | None:
        try:
            return json.loads(positions.read_text())["sources"]["nginx"][str(log)]["offset"]
        except (OSError, ValueError, KeyError):
            return None

    process, base = start_agent(config)
    wait_until(lambda: requests(base) == {"200": 1})  # 201 may continue: it waits
    wait_until(lambda: saved_offset() == len(first), timeout=15)  # flushed: held back where 201 begins
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    append(log, cri("stdout", "F", '03}'), cri("stdout", "F", '{"status": 204}'))
    _, base = start_agent(config)
    wait_until(lambda: requests(base) == {"201": 1, "503": 1})
    wait_until(lambda: saved_offset() == os.path.getsize(log) - len(cri("stdout", "F", '{"status": 204}')),
               timeout=15)
    assert requests(base) == {"201": 1, "503": 1}  # 200 not read again; 201 and the joined 503 once each


def test_kubernetes_labels_come_from_either_kubelet_layout():
    assert kubernetes_labels("/var/log/pods/kube-system_coredns-5d78c9869d-x7k2p_0a1b2c3d-1111-2222-3333-"
                             "444455556666/coredns/3.log") == ("kube-system", "coredns-5d78c9869d-x7k2p", "coredns")
    assert kubernetes_labels("/host/var/log/containers/web-7d9f8_shop_nginx-" + "a" * 64 + ".log") == (
        "shop", "web-7d9f8", "nginx")
    assert kubernetes_labels("/var/log/nginx/access.log") is None


async def test_a_path_outside_the_kubelet_layouts_gets_empty_kubernetes_labels(tmp_path, context, caplog):
    log = tmp_path / "plain.log"
    append(log, cri("stdout", "F", '{"status": 200}'))
    run = Running(container_config(str(log)), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 1)
    (series,) = run.page().find("http_requests_total")
    assert (series.labels["namespace"], series.labels["pod"], series.labels["container"]) == ("", "", "")
    assert "not a Kubernetes container log path" in caplog.text
    await run.stop()


def test_config_errors_for_records():
    with pytest.raises(ConfigError) as info:
        parse("logs:\n"
              "  - name: app\n"
              "    paths: [/var/log/app.log]\n"
              "    format: logfmt\n"
              "    container: containerd\n"
              "    multiline: {start: '(', max_lines: 0, timeout: 1x, extra: 1}\n"
              "    kubernetes_labels: yes please\n"
              "    metrics:\n"
              "      - {name: a_total, type: counter, labels: [pod]}\n")
    problems = [str(p) for p in info.value.problems]
    expected = [
        "agent.yaml:5: logs[0].container: 'containerd' is not one of: cri, docker",
        "agent.yaml:6: logs[0].multiline.start: regular expression '(' does not compile",
        "agent.yaml:6: logs[0].multiline.max_lines: must be greater than zero",
        "agent.yaml:6: logs[0].multiline.timeout: '1x' is not a duration",
        "agent.yaml:6: logs[0].multiline.extra: unknown field",
        "agent.yaml:7: logs[0].kubernetes_labels: expected true or false",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    with pytest.raises(ConfigError) as info:
        parse("logs:\n  - {name: a, paths: [/x.log], format: json, kubernetes_labels: true, metrics: "
              "[{name: a_total, type: counter, labels: [pod]}]}\n")
    assert "labels: 'pod' is set by the source from the file's path" in str(info.value)


async def test_the_shipped_daemonset_config_counts_pod_logs(tmp_path, context):
    """deploy/kubernetes/configmap-logs.yaml, pointed at a pod log directory here."""
    shipped = yaml.safe_load((Path(__file__).parents[3] / "deploy/kubernetes/configmap-logs.yaml").read_text())
    text = shipped["data"]["agent.yaml"].replace("/var/log/pods/", f"{tmp_path}/var/log/pods/").replace(
        "start_at: end", "start_at: beginning").replace("/var/lib/kpi-agent/", f"{tmp_path}/")
    log = tmp_path / POD_LOG
    log.parent.mkdir(parents=True)
    access = '10.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "{} {} HTTP/1.1" {} 512 "-" "curl/8" 0.042'
    append(log, cri("stdout", "F", access.format("GET", "/api/orders/123?x=1", 200)),
           cri("stdout", "P", access.format("POST", "/api/checkout", 503)[:40]),
           cri("stdout", "F", access.format("POST", "/api/checkout", 503)[40:]),
           cri("stderr", "F", "2026/11/24 10:00:00 [error] 7#7: upstream timed out"))
    store = Store()
    source = build_source(store, context, parse(text).of_kind("logs")[0], "logs")
    task = asyncio.create_task(source.run())
    deadline = time.monotonic() + 10
    while render_store(store).value("kpi_agent_log_lines_total", source="shop-nginx") != 4:
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
    page = render_store(store)
    assert {(s.labels["method"], s.labels["path"], s.labels["status"]): s.value
            for s in page.find("http_requests_total")} == {("GET", "/api/orders/:id", "200"): 1,
                                                            ("POST", "/api/checkout", "503"): 1}
    assert {(s.labels["namespace"], s.labels["pod"], s.labels["container"])
            for s in page.find("http_requests_total")} == {("shop", "web-7d9f8", "nginx")}
    assert page.value("kpi_agent_log_lines_unmatched_total", source="shop-nginx") == 1  # nginx's error line
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
