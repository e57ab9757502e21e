"""What SREs keep mtail and Vector for, on real files read back from /metrics: label rewriting, words as
values, nested JSON fields, the filename label, and label sets that expire."""

import asyncio
import json
import sys
import time
import tracemalloc

import pytest

from agent.config.problems import ConfigError
from agent.sources.logs.metrics import LogMetricShape
from tests.sources.logs.conftest import log_config, parse
from tests.sources.logs.test_logs import Running, append


def json_line(**fields) -> str:
    return json.dumps(fields) + "\n"


async def test_rewrite_rules_apply_in_order_and_merge_label_sets(tmp_path, context):
    log = tmp_path / "app.log"
    metrics = ("      - name: http_requests_total\n"
               "        type: counter\n"
               "        labels: [path, method]\n"
               "        rewrite:\n"
               "          - {label: path, regex: '/user/\\d+', replacement: '/user/:id'}\n"
               "          - {label: path, regex: '^/(api)/v(\\d+)/', replacement: '/$1/${2}x/'}\n"
               "          - {label: method, regex: '^(?P<verb>[A-Z]+)$', replacement: '$$${verb}'}\n"
               "      - {name: http_bytes_total, type: counter, value: bytes, labels: [path],"
               " rewrite: [{label: path, regex: '\\?.*', replacement: ''}]}\n")
    append(log, json_line(path="/user/1/orders", method="GET", bytes=10),
           json_line(path="/user/22/orders", method="GET", bytes=20),
           json_line(path="/api/v2/user/3", method="POST", bytes=1),
           json_line(path="/search?q=a", method="GET", bytes=5), json_line(path="/search?q=b", method="GET", bytes=6))
    run = Running(log_config([str(log)], fmt="json", metrics=metrics), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 5)
    assert run.series("http_requests_total", "path", "method") == {
        ("/user/:id/orders", "$GET"): 2, ("/api/2x/user/:id", "$POST"): 1, ("/search?q=a", "$GET"): 1,
        ("/search?q=b", "$GET"): 1}
    assert run.series("http_bytes_total", "path") == {
        ("/user/1/orders",): 10, ("/user/22/orders",): 20, ("/api/v2/user/3",): 1, ("/search",): 11}
    await run.stop()


def test_a_rewrite_remembers_each_raw_value_but_keeps_one_copy_of_each_text():
    """20,000 raw paths rewritten to one: each raw value is remembered (rewritten once), pointing at the one
    rewritten text, not at 20,000 copies of it (about 60 bytes each, 1.2 MB here; 6 MB at the cache's 100,000)."""
    (source,) = parse("logs:\n  - name: app\n    paths: [/var/log/app.log]\n    format: json\n    metrics:\n"
                      "      - {name: requests_total, type: counter, labels: [path],"
                      " rewrite: [{label: path, regex: '/item/\\d+', replacement: '/item/:id'}]}\n").of_kind("logs")
    shape = LogMetricShape(source.metrics[0], {"path": 0})
    column = [f"/item/{number}" for number in range(20_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        texts = shape.label_texts([column])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert set(texts[0]) == {"/item/:id"}
    containers = sum(map(sys.getsizeof, (shape.rewritten[0], texts, texts[0])))
    assert held - containers < 20_000 * 8, (held, containers)


async def test_rewrite_runs_once_per_distinct_value_not_per_line(tmp_path, context):
    """A rewrite regex that costs about 0.1 s per evaluation (backtracking) over 300 lines of the same value:
    per line, that would be 30 s of CPU."""
    log = tmp_path / "app.log"
    metrics = ("      - {name: events_total, type: counter, labels: [word],"
               " rewrite: [{label: word, regex: '(a+)+b', replacement: 'x'}]}\n")
    append(log, *["word=" + "a" * 21 + "\n"] * 300)
    started = time.process_time()
    run = Running(log_config([str(log)], fmt="logfmt", metrics=metrics), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 300, timeout=30)
    assert run.series("events_total", "word") == {("a" * 21,): 300}
    assert time.process_time() - started < 5
    await run.stop()


async def test_words_in_the_value_field_become_numbers(tmp_path, context):
    log = tmp_path / "app.log"
    metrics = ("      - {name: link_up, type: gauge, value: state, labels: [link], values: {UP: 1, DOWN: 0}}\n"
               "      - {name: link_flaps_total, type: counter, value: state, values: {UP: 1, DOWN: 0, true: 1}}\n")
    append(log, "link=eth0 state=UP\n", "link=eth1 state=UP\n", "link=eth0 state=DOWN\n", "link=eth1 state=UNKNOWN\n",
           "link=eth1 state=7\n", "link=eth0 state=true\n")
    run = Running(log_config([str(log)], fmt="logfmt", metrics=metrics), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 6)
    assert run.series("link_up", "link") == {("eth0",): 0, ("eth1",): 7}  # the last usable value, in line order
    assert run.count("link_flaps_total") == 1 + 1 + 0 + 7 + 1
    assert run.page().value("kpi_agent_log_lines_skipped_total", metric="link_up", reason="not_a_number") == 2
    await run.stop()


async def test_nested_json_fields_by_dotted_names(tmp_path, context):
    log = tmp_path / "app.log"
    metrics = ("      - {name: http_requests_total, type: counter,"
               " labels: [http.method, {code: http.response.status}]}\n"
               "      - {name: http_server_errors_total, type: counter, match: {http.response.status: '5..'}}\n"
               "      - {name: http_duration_seconds, type: histogram, value: timing.total, buckets: [0.1, 1]}\n"
               "      - {name: flat_dotted_total, type: counter, labels: [{key: user.name}]}\n")
    append(log, json_line(http={"method": "GET", "response": {"status": 200}}, timing={"total": 0.05}),
           json_line(http={"method": "GET", "response": {"status": 503}}, timing={"total": 2.5}),
           json_line(http={"method": "POST"}, timing=7),  # a missing nested field, a number where an object was
           json_line(**{"user.name": "flat", "http": "not an object"}))
    run = Running(log_config([str(log)], fmt="json", metrics=metrics), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 4)
    assert run.series("http_requests_total", "http_method", "code") == {
        ("GET", "200"): 1, ("GET", "503"): 1, ("POST", ""): 1, ("", ""): 1}
    assert run.count("http_server_errors_total") == 1
    assert run.buckets("http_duration_seconds") == [1, 1, 2]
    assert run.page().value("kpi_agent_log_lines_skipped_total", metric="http_duration_seconds",
                            reason="missing") == 2
    assert run.series("flat_dotted_total", "key") == {("",): 3, ("flat",): 1}  # a key with a dot in it wins
    await run.stop()


async def test_the_filename_label_tells_files_apart(tmp_path, context):
    for name, lines in (("a.log", 2), ("b.log", 3)):
        append(tmp_path / name, *["level=info\n"] * lines)
    metrics = ("      - {name: events_total, type: counter, labels: [level]}\n"
               "      - {name: lines_total, type: counter}\n")
    run = Running(log_config([str(tmp_path / "*.log")], fmt="logfmt", metrics=metrics,
                             extra="    filename_label: true\n"), context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 5)
    assert run.series("events_total", "level", "filename") == {
        ("info", str(tmp_path / "a.log")): 2, ("info", str(tmp_path / "b.log")): 3}
    (tmp_path / "c.log").write_text("")
    await run.wait(lambda: ("/c.log",) in {(k[0][-6:],) for k in run.series("lines_total", "filename")})
    assert run.series("lines_total", "filename")[(str(tmp_path / "c.log"),)] == 0  # born at 0 for increase()
    await run.stop()


async def test_label_sets_not_updated_for_expire_after_vanish(tmp_path, context, monkeypatch):
    from agent.sources.logs import pipeline

    monkeypatch.setattr(pipeline, "EXPIRY_EVERY", 0.05)
    log = tmp_path / "app.log"
    metrics = ("      - {name: requests_total, type: counter, labels: [path], expire_after: 1s}\n"
               "      - {name: kept_total, type: counter, labels: [path]}\n")
    text = log_config([str(log)], fmt="logfmt", metrics=metrics, extra="    max_series_per_metric: 2\n")
    append(log, "path=/a\n", "path=/b\n")
    run = Running(text, context)
    await run.wait(lambda: run.count("kpi_agent_log_lines_total") == 2)
    await asyncio.sleep(0.6)
    append(log, "path=/b\n")
    await run.wait(lambda: run.series("requests_total", "path") == {("/b",): 2})  # /a expired, /b renewed
    assert run.page().value("kpi_agent_log_series_expired_total", metric="requests_total") == 1
    assert run.series("kept_total", "path") == {("/a",): 1, ("/b",): 2}  # no expire_after: stays
    append(log, "path=/c\n")  # room again below max_series_per_metric
    await run.wait(lambda: run.series("requests_total", "path").get(("/c",)) == 1)
    await run.wait(lambda: run.series("requests_total", "path") == {}, timeout=5)  # all expire in time
    assert run.page().value("kpi_agent_series_dropped_total", metric="requests") is None
    await run.stop()


def test_config_errors_for_labels_rewrites_values_and_expiry():
    with pytest.raises(ConfigError) as info:
        parse("logs:\n"
              "  - name: app\n"
              "    paths: [/var/log/app.log]\n"
              "    format: json\n"
              "    filename_label: true\n"
              "    labels: {filename: x}\n"
              "    metrics:\n"
              "      - name: a_total\n"
              "        type: counter\n"
              "        labels: [user-agent.x, {code: http.status}, {code: other}, filename]\n"
              "        rewrite:\n"
              "          - {label: path, regex: x, replacement: y}\n"
              "          - {label: code, regex: '(x)', replacement: '$2'}\n"
              "          - {label: code, regex: '(?P<n>x)', replacement: '$nx'}\n"
              "          - {label: code, regex: '(', replacement: ''}\n"
              "      - {name: b_total, type: counter, values: {UP: 1}}\n"
              "      - {name: c, type: gauge, value: v, values: {UP: high}}\n"
              "      - {name: e_total, type: counter, labels: [{bad-name: x}]}\n"
              "  - {name: other, paths: [/x.log], format: logfmt, metrics: [{name: d_total, type: counter, "
              "expire_after: 5m}]}\n")
    problems = [str(p) for p in info.value.problems]
    expected = [
        "agent.yaml:6: logs[0].labels: 'filename' is set by the source from the file's path",
        "agent.yaml:10: logs[0].metrics[0].labels: label 'code' is given twice",
        "agent.yaml:12: logs[0].metrics[0].rewrite[0].label: 'path' is not a label of this metric",
        "agent.yaml:13: logs[0].metrics[0].rewrite[1].replacement: $2 refers to group 2, but the regex has 1 group",
        "agent.yaml:14: logs[0].metrics[0].rewrite[2].replacement: '$nx' names no group of the regex",
        "agent.yaml:15: logs[0].metrics[0].rewrite[3].regex: regular expression '(' does not compile",
        "agent.yaml:16: logs[0].metrics[1].values: maps the words of the value field to numbers: set value too",
        "agent.yaml:17: logs[0].metrics[2].values: 'UP': expected a number",
        "agent.yaml:18: logs[0].metrics[3].labels: item 0: 'bad-name' is not a valid Prometheus label name",
        "agent.yaml:19: logs[1].metrics[0].expire_after: a metric without labels has one series, which never expires",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    assert any(p.startswith("agent.yaml:10: logs[0].metrics[0].labels: 'filename' is set by the source from the "
                            "file's path") for p in problems), problems
