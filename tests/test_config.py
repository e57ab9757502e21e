import pytest

from agent import yamlsrc
from agent.config import load_config, load_example_config, parse_config
from agent.yamlsrc import ConfigError


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(yamlsrc.load_text(text, "agent.yaml"), "agent.yaml")
    return [str(p) for p in info.value.problems]


def test_global_defaults_and_values():
    config, report = parse_config(yamlsrc.load_text(
        "global:\n  interval: 1m\n  timeout: 500ms\n  labels: {site: eu-1}\n", "a.yaml"), "a.yaml")
    assert config.global_.interval == 60
    assert config.global_.timeout == 0.5
    assert config.global_.labels == {"site": "eu-1"}
    assert config.sources() == [] and report.problems == []


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
    assert config.sources() == []


def test_built_in_example_is_valid_and_probes_the_given_address():
    config, report = load_example_config("127.0.0.1:12345")
    assert report.errors == []
    assert [c.url for c in config.http] == ["http://127.0.0.1:12345/-/healthy", "http://127.0.0.1:12345/api/v1/status"]


def test_a_metric_name_has_one_type_across_sources():
    problems = errors_of(
        "http:\n"
        "  - name: api\n"
        "    url: http://127.0.0.1/\n"
        "    json_metrics: [{name: jobs_total, type: counter, path: $.a}, {name: probe_success, path: $.b}]\n"
        "logs:\n"
        "  - name: app\n"
        "    paths: [/tmp/x.log]\n"
        "    format: json\n"
        "    metrics: [{name: jobs_total, type: gauge, value: n}]\n")
    assert ("agent.yaml:9: logs[0].metrics[0].name: 'jobs_total' is a gauge here but a counter at "
            "http[0].json_metrics[0].name: one name, one type") in problems
    assert "agent.yaml:4: http[0].json_metrics[1].name: 'probe_success' is a name the HTTP probes export" in problems
