import re
import subprocess
import sys

import pytest

from agent.config.agent import load_config, load_example_config, parse_config
from agent.config.problems import ConfigError
from agent.config.yaml import load_text


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(load_text(text, "agent.yaml"), "agent.yaml")
    return [str(p) for p in info.value.problems]


def test_global_defaults_and_values():
    config, report = parse_config(load_text(
        "global:\n  interval: 1m\n  timeout: 500ms\n  labels: {site: eu-1}\n", "a.yaml"), "a.yaml")
    assert config.global_.interval == 60
    assert config.global_.timeout == 0.5
    assert config.global_.labels == {"site": "eu-1"}
    assert config.sources == ()
    assert [str(p) for p in report.problems] == ["a.yaml: warning: no source is configured: the agent collects "
                                                 "nothing and serves only its own metrics (see `kpi-agent "
                                                 "example-config` for a start)"]


def test_every_error_names_file_line_and_field():
    problems = errors_of(
        "global:\n"
        "  interval: 15x\n"
        "  labels: {bad-name: x}\n"
        "scrape_intervall: 5s\n"
        "http:\n"
        "  - name: a\n"
        "    url: http://127.0.0.1/\n"
        "    timeout: 5x\n")
    assert "agent.yaml:2: global.interval: '15x' is not a duration" in problems[0]
    assert any(p.startswith("agent.yaml:3: global.labels: 'bad-name' is not a valid Prometheus label")
               for p in problems)
    assert "agent.yaml:4: scrape_intervall: unknown field" in problems
    assert any(p.startswith("agent.yaml:8: http[0].timeout: '5x' is not a duration") for p in problems)


def test_duplicate_source_names_are_rejected_with_the_line_of_the_second():
    problems = errors_of(
        "http:\n"
        "  - name: shop\n"
        "    url: http://127.0.0.1/a\n"
        "  - name: shop\n"
        "    url: http://127.0.0.1/b\n")
    assert problems == ["agent.yaml:4: http[1].name: 'shop' is already the name of http[0]"]


def test_missing_required_field_and_wrong_shapes():
    problems = errors_of("http:\n  - url: http://127.0.0.1/\nlogs: {}\n")
    assert "agent.yaml:2: http[0].name: is required" in problems
    assert "agent.yaml:3: logs: expected a list, got a mapping" in problems


def test_yaml_syntax_error_and_duplicate_keys_have_lines(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("global:\n  interval: 5s\n  interval: 6s\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value) == f"{bad}:3: invalid YAML: duplicate key 'interval' (first on line 2)"
    bad.write_text("http:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value).startswith(f"{bad}:3: invalid YAML")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_empty_file_is_a_valid_config_with_no_sources(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    config, _ = load_config(empty)
    assert config.sources == ()


def test_built_in_example_is_valid_and_probes_the_given_address():
    config, report = load_example_config("127.0.0.1:12345")
    assert report.errors == []
    assert [c.target for c in config.of_kind("http")] == ["http://127.0.0.1:12345/-/healthy",
                                                      "http://127.0.0.1:12345/api/v1/status"]


def test_a_metric_name_has_one_type_and_one_label_set_across_sources():
    problems = errors_of(
        "http:\n"
        "  - name: api\n"
        "    url: http://127.0.0.1/\n"
        "    json_metrics: [{name: jobs_total, type: counter, path: $.a}, {name: probe_success, path: $.b}]\n"
        "logs:\n"
        "  - name: app\n"
        "    paths: [/tmp/x.log]\n"
        "    format: json\n"
        "    metrics: [{name: jobs, type: histogram, value: n}, {name: runs_total, type: counter, labels: [a]}]\n"
        "  - name: other\n"
        "    paths: [/tmp/y.log]\n"
        "    format: json\n"
        "    metrics: [{name: runs_total, type: counter, labels: [b]}]\n")
    assert ("agent.yaml:9: logs[0].metrics[0].name: jobs is a histogram without labels and buckets [0.005, 0.01, "
            "0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0] here, but jobs_total is a counter without labels in "
            "http[0]: one name has one type, one label set and one set of buckets") in problems
    assert ("agent.yaml:13: logs[1].metrics[0].name: runs_total is a counter with labels (b) here, but runs_total is "
            "a counter with labels (a) in logs[0]: one name has one type, one label set and one set of buckets"
            ) in problems
    assert any(p.startswith("agent.yaml:4: http[0].json_metrics[1].name: 'probe_success' clashes") for p in problems)


def test_names_the_agent_or_another_kind_exports_are_refused():
    problems = errors_of(
        "global: {labels: {le: x}}\n"
        "logs:\n"
        "  - name: app\n"
        "    paths: [/tmp/x.log]\n"
        "    format: json\n"
        "    metrics:\n"
        "      - {name: process_open_fds, type: gauge, value: n}\n"
        "      - {name: probe_latency_seconds, type: histogram, value: n}\n"
        "      - {name: h, type: histogram, value: n}\n"
        "      - {name: h_bucket, type: gauge, value: n}\n"
        "      - {name: kpi_agent_log_lines_total, type: counter}\n"
        "      - {name: depth_total, type: gauge, value: n}\n")
    assert "agent.yaml:1: global.labels: 'le' is reserved: it tells sources, histogram buckets or summary " \
           "quantiles apart" in problems
    assert "agent.yaml:7: logs[0].metrics[0].name: process_open_fds is a name the agent exposes itself" in problems
    assert "agent.yaml:8: logs[0].metrics[1].name: probe_latency_seconds is a name every http, tcp, dns, icmp, grpc " \
           "source exports" in problems
    assert ("agent.yaml:10: logs[0].metrics[3].name: h_bucket would expose h_bucket, which the histogram h exposes "
            "too") in problems
    assert "agent.yaml:11: logs[0].metrics[4].name: 'kpi_agent_log_lines_total' clashes with the agent's own " \
           "metric names (kpi_agent_*, probe_*, probes_*)" in problems
    assert any(p.startswith("agent.yaml:12: logs[0].metrics[5].name: _total is the suffix of counters")
               for p in problems)


def test_one_metric_in_two_log_sources_is_two_distinct_series():
    config, report = parse_config(load_text(
        "logs:\n"
        "  - {name: a, paths: [/tmp/a.log], format: json, metrics: [{name: req_total, type: counter}]}\n"
        "  - {name: b, paths: [/tmp/b.log], format: json, metrics: [{name: req_total, type: counter}]}\n",
        "agent.yaml"), "agent.yaml")
    assert report.problems == [] and len(config.of_kind("logs")) == 2  # told apart by source="a" / source="b"


def test_hostile_yaml_gets_a_line_and_a_short_message_never_a_traceback(tmp_path):
    """The configs that crashed `check` when fuzzed: huge integers, deep nesting, non-scalar keys, a lone
    surrogate, and a 500-byte "billion laughs" whose aliases expand to 10^9 values."""
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
    cases = {
        "global: {max_concurrent_probes: " + "9" * 5000 + "}\n": "agent.yaml:1: invalid YAML: integer with too many",
        "global: " + "[" * 5000 + "]" * 5000 + "\n": "agent.yaml:1: invalid YAML: nested more than 64 levels",
        "http:\n  - ? [a, b]\n    : c\n": "agent.yaml:2: invalid YAML: a key must be a plain value",
        'global: {labels: {site: "eu\\ud800"}}\n': "agent.yaml:1: invalid YAML: a string holds a lone surrogate",
        laughs + "http: *i\n": "agent.yaml:1: invalid YAML: holds more than 200000 values",
        "global: {interval: " + "9" * 400 + "d}\n": "agent.yaml:1: global.interval: '999",
        "logs: [{name: a, paths: [/x], format: json, metrics: [{name: h, type: histogram, value: v, buckets: [.nan]}]}]"
        "\n": "agent.yaml:1: logs[0].metrics[0].buckets: item 0: expected a finite number",
        "http: [{name: a, url: 'http://x/', body_size_limit: " + "9" * 400 + "}]\n": "is larger than 1TiB",
    }
    for text, expected in cases.items():
        problems = errors_of(text)
        assert any(expected in p for p in problems), (expected, problems)
        assert all(len(p) < 400 for p in problems), problems
    (tmp_path / "laughs.yaml").write_text(laughs + "http: [{name: *i, url: *i}]\n")
    result = subprocess.run([sys.executable, "-m", "agent", "check", "--config.file", str(tmp_path / "laughs.yaml")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and len(result.stderr) < 1000 and "Traceback" not in result.stderr


def test_bytes_that_are_not_text_and_items_that_are_not_mappings_name_their_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"global: {}\nhttp:\n  - name: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value) == f"{bad}:3: not UTF-8 text"
    assert errors_of("global: {}\nhttp:\n  - \x07\n") == ["agent.yaml:3: invalid YAML: character U+0007 is not allowed"]
    # one problem for an item that is not a mapping, not one per field it lacks
    assert errors_of("http:\n  - 5\n  - null\nlogs:\n  - [a]\n") == [
        "agent.yaml:2: http[0]: expected a mapping, got a number",
        "agent.yaml:3: http[1]: expected a mapping, got nothing",
        "agent.yaml:5: logs[0]: expected a mapping, got a list"]


def test_error_messages_quote_values_in_bounded_excerpts():
    problems = errors_of("http:\n  - name: a\n    url: " + "f" * 100_000 + "\n    method: " + "X" * 100_000 + "\n")
    assert len(problems) == 2 and all(len(p) < 200 for p in problems), problems


def test_the_summary_quantile_label_is_refused_as_a_global_label():
    """Issue 18.8: `quantile` gives a summary's series their meaning; as a global label on every series it
    would make every summary (the agent's or a scraper's) ambiguous."""
    problems = errors_of("global: {labels: {quantile: '0.5', env: prod}}\n")
    assert problems == ["agent.yaml:1: global.labels: 'quantile' is reserved: it tells sources, histogram buckets "
                        "or summary quantiles apart"]


def test_every_kind_holds_the_families_a_user_declares_to_the_same_rules():
    """Log metrics and HTTP json_metrics once had their own rules with different reserved sets: a log metric
    could take probe_* and a json_metric a quantile label (issue 17). One validator now says the same for both."""
    with pytest.raises(ConfigError) as info:
        parse_config(load_text(
            "logs:\n  - name: app\n    paths: [/var/log/app.log]\n    format: json\n    metrics:\n"
            "      - {name: probes_seen_total, type: counter, labels: [quantile]}\n"
            "http:\n  - name: api\n    url: http://127.0.0.1:9/\n    json_metrics:\n"
            "      - {name: probes_seen_total, type: counter, path: $.n, labels: {quantile: x}}\n", "agent.yaml"),
            "agent.yaml")
    problems = [str(p) for p in info.value.problems]
    for where in ("agent.yaml:6: logs[0].metrics[0]", "agent.yaml:11: http[0].json_metrics[0]"):
        assert f"{where}.name: 'probes_seen_total' clashes with the agent's own metric names (kpi_agent_*, probe_*, " \
               "probes_*)" in problems, problems
        assert f"{where}.labels: 'quantile' is reserved: it tells summary quantiles apart" in problems, problems


def test_pyyaml_reads_its_non_printable_class_from_the_cheap_form_which_holds_the_same_characters():
    """agent.config.printable: yaml.reader's class, seeded into re's cache in its positive form (11% of a log
    agent's start). If PyYAML changes the class's text, the seed misses: update PYYAML_NON_PRINTABLE."""
    from agent.config import printable

    shown = subprocess.run([sys.executable, "-c", "import agent.config.yaml, yaml.reader\n"
                            "print(repr(yaml.reader.Reader.NON_PRINTABLE.pattern))"],
                           capture_output=True, text=True, timeout=60)
    assert shown.stdout.strip() == repr(printable.NON_PRINTABLE), shown.stderr
    every_character = "".join(map(chr, range(0x110000)))
    pyyaml = re.compile(printable.PYYAML_NON_PRINTABLE, re.UNICODE)  # other flags: compiled, not from the cache
    cheap = re.compile(printable.NON_PRINTABLE, re.UNICODE)
    assert [m.start() for m in cheap.finditer(every_character)] == \
        [m.start() for m in pyyaml.finditer(every_character)]
    assert errors_of("global: {}\nhttp:\n  - name: a\ufffe\n") == [
        "agent.yaml:3: invalid YAML: character U+FFFE is not allowed"]
