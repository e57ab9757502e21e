"""Property-based fuzzing (hypothesis) of what users and attackers control: config files and log lines.

Configs: documents built from the real key vocabulary with hostile values, then also mangled as text. Every
one either loads or is refused with problems shaped ``file:line: field: message`` of bounded length, in
bounded time; nothing else may escape. Lines: random text, JSON and logfmt into every parser: no exception,
every line accounted for, and the rendered exposition parses strictly with sane counters and histograms.

Examples per test: KPI_FUZZ_EXAMPLES (tests/helpers.py: 50 in the quick loop, 150 in CI, 5000 for a long run).
"""

from __future__ import annotations

import json
import re
import time

import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from agent.config.agent import parse_config
from agent.config.problems import ConfigError
from agent.config.yaml import load_text
from agent.series.store import Store
from agent.sources.logs.config import EXPIRED, SKIPPED
from agent.sources.logs.fields import BatchResult, json_object
from agent.sources.logs.pipeline import Pipeline
from tests.helpers import examples, render_store
from tests.sources.logs.conftest import NGINX_PATTERN, parse

FUZZ = settings(max_examples=examples(), deadline=None, suppress_health_check=list(HealthCheck))
PROBLEM_RE = re.compile(r"^agent\.yaml:\d+: \S")  # every problem names its line
MAX_SECONDS = 2.0  # CPU time per config or batch: the quadratic regex took 42 s on one 40,000-character line

KEYS = ["global", "http", "logs", "positions_file", "interval", "timeout", "labels", "max_concurrent_probes",
        "name", "url", "method", "headers", "body", "valid_status_codes", "follow_redirects",
        "fail_if_body_matches_regexp", "fail_if_body_not_matches_regexp", "body_size_limit", "tls_config",
        "ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify", "min_version", "basic_auth",
        "username", "password", "password_file", "bearer_token_file", "json_metrics", "type", "help", "path",
        "value", "paths", "start_at", "format", "pattern", "max_series_per_metric", "max_line_bytes", "metrics",
        "match", "buckets", "le", "source", "target", "nope", "journal", "directory", "units", "matches", "rewrite",
        "label", "regex", "replacement", "values", "expire_after", "multiline", "start", "max_lines", "container",
        "kubernetes_labels", "filename_label", "filename", "pod", "_SYSTEMD_UNIT", "PRIORITY"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30), st.integers(min_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["15s", "0s", "1h", "-5m", "5x", "9" * 50 + "d", "http://127.0.0.1:1/", "ftp://x", "$.a",
                     "$[", "(?P<a>x)", "(", "counter", "gauge", "histogram", "json", "logfmt", "regex", "/tmp/*.log",
                     "relative.log", "TLS12", "10MiB", "1e999B", "GET", "a_total", "probe_success", "process_open_fds",
                     "kpi_agent_x", "le", "", " ", "cri", "docker", "$1", "${x}", "$$", "a.b", "/var/log/journal",
                     "nginx.service"]),
    st.text(max_size=40))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=6)),
    max_leaves=40)
DOCUMENTS = st.dictionaries(st.sampled_from(["global", "http", "logs", "journal", "positions_file"]), VALUES,
                            max_size=4)


def _check_config(text: str) -> bool:
    """True if the config loads; asserts the refusal's shape otherwise. Returns within MAX_SECONDS."""
    started = time.process_time()  # CPU time: what the input costs, whatever else loads the machine
    try:
        parse_config(load_text(text, "agent.yaml"), "agent.yaml")
        loaded = True
        event("config loaded")
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
        assert problems
        for problem in problems:
            assert PROBLEM_RE.match(problem), problem
            assert len(problem) < 1000, problem[:200]
        loaded = False
        event("config refused, every problem with file:line: field: message")
    assert time.process_time() - started < MAX_SECONDS
    return loaded


@FUZZ
@given(DOCUMENTS)
def test_random_configs_load_or_get_file_line_field_problems(document):
    _check_config(yaml.safe_dump(document, allow_unicode=True))


METRIC_KEYS = ["name", "type", "help", "labels", "value", "match", "buckets", "rewrite", "values", "expire_after"]
SOURCE_KEYS = ["format", "pattern", "container", "multiline", "filename_label", "kubernetes_labels", "labels",
               "units", "matches", "directory", "start_at"]


@FUZZ
@given(st.sampled_from(["logs", "journal"]), st.dictionaries(st.sampled_from(SOURCE_KEYS), VALUES, max_size=3),
       st.lists(st.dictionaries(st.sampled_from(METRIC_KEYS), VALUES | st.sampled_from(
           ["counter", "gauge", "histogram", "x_total", "a.b", "status"]), max_size=6), max_size=3))
def test_random_metrics_and_records_options_load_or_get_problems(kind, options, metrics):
    source = {"name": "fuzz", **({"paths": ["/tmp/x.log"]} if kind == "logs" else {}), **options, "metrics": metrics}
    _check_config(yaml.safe_dump({kind: [source]}, allow_unicode=True))


@FUZZ
@given(DOCUMENTS, st.data())
def test_mangled_config_text_loads_or_gets_problems(document, data):
    text = yaml.safe_dump(document)
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    insert = data.draw(st.sampled_from(["", "[", "{", "&a ", "*a", "? [1]\n: 2\n", ":", "- ", "\t", "\ud800",
                                        "!!binary x", "!!python/object:os.system x", "'", '"', "\n  "]))
    _check_config(text[:cut] + insert + text[cut:])


METRICS = ("      - {name: events_total, type: counter}\n"
           "      - {name: by_total, type: counter, labels: [level, status]}\n"
           "      - {name: errors_total, type: counter, match: {status: '5..'}}\n"
           "      - {name: bytes_total, type: counter, value: bytes}\n"
           "      - {name: took_seconds, type: histogram, value: took, buckets: [0.1, 1]}\n"
           "      - {name: depth, type: gauge, value: depth, labels: [level]}\n")
FIELDS = ["level", "status", "bytes", "took", "depth", "msg"]
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**20), st.floats(),
              st.text(max_size=20), st.sampled_from(["500", "-1", "NaN", "inf", "1e999", "0.5", "\ud800"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
JSON_LINES = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6).map(json.dumps),
    st.text(max_size=60), st.sampled_from(["[" * 5000, '{"a": ' * 3000, "NaN", "[]", "{}"]))
LOGFMT_LINES = st.one_of(
    st.lists(st.tuples(st.sampled_from([*FIELDS, "", "=", '"']), st.text(max_size=15), st.booleans()),
             max_size=6).map(lambda items: " ".join(
                 f'{k}="{v}"' if quoted else f"{k}={v}" for k, v, quoted in items)),
    st.text(max_size=80), st.just("x" * 20_000), st.just('k="' + "y" * 20_000))
REGEX_LINES = st.one_of(st.text(max_size=80), st.builds(
    lambda method, path, status, size, rt: (f'10.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "{method} {path} HTTP/1.1" '
                                             f'{status} {size} "-" "x" {rt}'),
    st.sampled_from(["GET", "POST", "get"]), st.text(max_size=10).filter(lambda p: " " not in p and p),
    st.integers(0, 999), st.integers(0, 10**6), st.sampled_from(["0.1", "1e3", "-1", "0.0.1", "nan"])))
REGEX_METRICS = ("      - {name: requests_total, type: counter, labels: [method, status]}\n"
                 "      - {name: bytes_total, type: counter, value: bytes}\n"
                 "      - {name: rt_seconds, type: histogram, value: rt, buckets: [0.1, 1]}\n")


def _pipeline(fmt: str) -> tuple[Store, Pipeline]:
    metrics = REGEX_METRICS if fmt == "regex" else METRICS
    pattern = f"    pattern: '{NGINX_PATTERN}'\n" if fmt == "regex" else ""
    config = parse(f"logs:\n  - name: fuzz\n    paths: [/tmp/x.log]\n    format: {fmt}\n{pattern}"
                   f"    metrics:\n{metrics}").of_kind("logs")[0]
    store = Store()
    group, own = store.group("logs/fuzz", {"source": "fuzz"}, "source"), store.group("self", {"source": "f"}, "source")
    return store, Pipeline(config.metrics, group, own.counter(SKIPPED), own.counter(EXPIRED), fmt=config.format,
                           pattern=config.pattern, max_series=config.max_series_per_metric)


def _check_lines(fmt: str, batches: list[list[str]]) -> None:
    store, pipeline = _pipeline(fmt)
    for lines in batches:
        lines = [line.replace("\n", " ") for line in lines]  # the tailer splits on newlines before this
        started = time.process_time()
        result = pipeline.process(lines)
        assert time.process_time() - started < MAX_SECONDS
        assert result.lines == len(lines) and result.unmatched + result.malformed <= len(lines)
    page = render_store(store)  # strict: no duplicate, valid UTF-8
    for series in page.series:
        assert series.value == series.value, series  # never NaN
        if series.name.endswith(("_total", "_count", "_bucket")):
            assert series.value >= 0, series
    for count in page.find("took_seconds_count") + page.find("rt_seconds_count"):
        bucket = "took_seconds_bucket" if count.name.startswith("took") else "rt_seconds_bucket"
        assert page.value(bucket, le="+Inf", **count.labels) == count.value


@FUZZ
@given(st.lists(st.lists(JSON_LINES, max_size=20), max_size=4))
def test_random_json_lines(batches):
    _check_lines("json", batches)


@FUZZ
@given(st.lists(st.lists(LOGFMT_LINES, max_size=20), max_size=4))
def test_random_logfmt_lines(batches):
    _check_lines("logfmt", batches)


@FUZZ
@given(st.lists(st.lists(REGEX_LINES, max_size=20), max_size=4))
def test_random_access_log_lines(batches):
    _check_lines("regex", batches)


# The fast paths must count exactly what line by line counts: a whole chunk matched by one findall(), and a
# chunk of JSON lines parsed as one document. Patterns with optional groups, flags, a run that gives back
# characters, newline-eating classes and patterns that only RE2 runs; lines with quotes, brackets and carriage
# returns.
PATTERNS = [NGINX_PATTERN.replace("(?P<method>", "(?P<a>").replace("(?P<rt>", "(?P<b>"),
            r"(?P<a>\w+)?-(?P<b>\d*)", r"(?i)(?P<a>get|post) (?P<b>\S+)",
            r"(?U)(?P<a>\w+)\s+(?P<b>\w*)", r'(?P<a>[^"]*)"(?P<b>[^"]*)"',
            r"(?P<a>\w+)(?P<b>\s\w*)", r"(?s)(?P<a>.)(?P<b>.*)", r"\A(?P<a>\w)(?P<b>\w*)\z",
            r"^(?P<a>x|y)?(?P<b>\d+)$", r"(?P<a>\w+)\s+(?P<b>\S+)", r"(?P<x>\w)(?P<a>\w*) (?P<b>\S*)",
            r"(?P<u>[ab])?(?P<a>\w+)(\s)(?P<b>\w+)\s?", r"(?P<a>.*) (?P<b>[0-9.]+)$", r"(?P<a>[^x]*)x(?P<b>\d*)",
            r"(?P<a>(?:a+)+)(?P<b>\d*)$", r"(?P<a>\w+)(?: (?P<b>\d+))?$", r"(?P<a>x|(?P<b>\d)\d)"]
FIELD_LINES = st.lists(st.one_of(st.text(alphabet="ab xy-019\"\t\r[]{},:", max_size=20), REGEX_LINES,
                                 st.sampled_from(["", "\r", "x\r", "get /a", "POST /b c", "a-", "-1", "x1", "y22"])),
                       max_size=30).map(lambda lines: [line.replace("\n", " ") for line in lines])


# Two fields, or one: a scanner of one group gives findall() strings, not tuples
TWO_FIELDS = ("      - {name: pairs_total, type: counter, labels: [a, b]}\n"
              "      - {name: b_total, type: counter, value: b}\n"
              "      - {name: some_total, type: counter, labels: [b], match: {a: '[a-y]+'}}\n"
              "      - {name: last_b, type: gauge, value: b, labels: [a]}\n")
ONE_FIELD = "      - {name: by_b_total, type: counter, labels: [b]}\n"


def _both(pattern: str, fmt: str = "regex", metrics: str = TWO_FIELDS) -> tuple[tuple[Store, Pipeline],
                                                                                tuple[Store, Pipeline]]:
    metrics = metrics if fmt == "regex" else METRICS
    pattern_line = f"    pattern: {json.dumps(pattern)}\n" if fmt == "regex" else ""
    config = parse(f"logs:\n  - name: fuzz\n    paths: [/tmp/x.log]\n    format: {fmt}\n{pattern_line}"
                   f"    metrics:\n{metrics}").of_kind("logs")[0]
    pipelines = []
    for _ in range(2):
        store = Store()
        group = store.group("logs/fuzz", {"source": "fuzz"}, "source")
        own = store.group("self", {"source": "f"}, "source")
        pipelines.append((store, Pipeline(config.metrics, group, own.counter(SKIPPED), own.counter(EXPIRED),
                                          fmt=config.format, pattern=config.pattern,
                                          max_series=config.max_series_per_metric)))
    return pipelines[0], pipelines[1]


@FUZZ
@example(r"(?P<a>\w+)(?: (?P<b>\d+))?$", [["x1", "ab 12", "zz"]], TWO_FIELDS)  # b takes no part in 2 of 3: not ""
@example(r"(?P<a>\w+)(?P<b>\s\w*)", [["x y", "zz", "", "q r"]], ONE_FIELD)  # b always takes part: the witness
@given(st.sampled_from(PATTERNS), st.lists(FIELD_LINES, min_size=1, max_size=3),
       st.sampled_from([TWO_FIELDS, ONE_FIELD]))
def test_a_chunk_matched_at_once_counts_what_line_by_line_counts(pattern, batches, metrics):
    (chunked_store, chunked), (lines_store, by_line) = _both(pattern, metrics=metrics)
    for lines in batches:
        at_once = chunked.process_text("".join(line + "\n" for line in lines))
        one_by_one = by_line.process([line.rstrip("\r") for line in lines])
        assert (at_once.lines, at_once.unmatched) == (one_by_one.lines, one_by_one.unmatched)
    assert _data(chunked_store) == _data(lines_store)


def _data(store: Store) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for s in render_store(store).series if not s.name.startswith("process_")]


@FUZZ
@given(st.lists(st.lists(st.one_of(JSON_LINES, st.sampled_from(
    ['{"a": 1}, {"b": 2}', '{"a": 1}\t,{"b": 2}', '{"a": [1', '2]}', '{"a": {"b": 1', '}}', '{"x": "a',
     'b"}', '[{"y": 2}]', '{"s": "}\\n,{"}', '{"depth": 1}', '{"level": 123456789012345678901234567890}',
     '{"status": -9223372036854775809, "bytes": 1e400}', '{"level": "\\ud800"}', '{"took": NaN}'])),
    max_size=12), min_size=1, max_size=3))
def test_a_chunk_of_json_parsed_at_once_counts_what_line_by_line_counts(batches):
    """Text lines at once (json_objects), bytes as read at once (json_chunk, msgspec), and line by line."""
    (chunked_store, chunked), (lines_store, by_line) = _both("", "json")
    (bytes_store, from_bytes), _ = _both("", "json")
    for lines in batches:
        lines = [line.replace("\n", " ") for line in lines]
        try:
            data = "".join(line + "\n" for line in lines).encode()
        except UnicodeEncodeError:  # a lone surrogate: no file holds it
            data = None
        as_read = from_bytes.process_json_chunk(data) if data else None
        if as_read is None:
            as_read = from_bytes.process(lines)
        at_once = chunked.process(lines)
        assert (as_read.lines, as_read.malformed) == (at_once.lines, at_once.malformed)
        one_by_one = BatchResult(lines=len(lines))
        objects = [fields for fields in map(json_object, lines) if fields is not None]
        one_by_one.malformed = len(lines) - len(objects)
        by_line._aggregate(by_line._columns(objects), len(objects), ())
        assert (at_once.lines, at_once.malformed) == (one_by_one.lines, one_by_one.malformed)
    assert _data(chunked_store) == _data(lines_store) == _data(bytes_store)


def test_json_lines_that_only_parse_together_are_each_malformed():
    (store, pipeline), _ = _both("", "json")
    result = pipeline.process(['{"status": 1}, {"status": 2}', '{"depth": [1', '2], "level": "x"}'])
    assert result.malformed == 3
    assert render_store(store).value("events_total", source="fuzz") == 0
