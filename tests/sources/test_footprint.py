"""What a log-only agent loads: aiohttp (about 19 MiB resident) only when an HTTP source exists, RE2 (2.5 MiB)
only when a regex needs it, read from the real process (its mapped files, and process_resident_memory_bytes on
its /metrics)."""

from pathlib import Path

import pytest

from tests.helpers import Exposition, fetch, wait_until


def _page(base: str) -> Exposition:
    return Exposition(fetch(base + "/metrics")[1].encode())


def _mapped_packages(pid: int, packages: tuple[str, ...]) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {package for package in packages if f"/{package}/" in maps}


@pytest.mark.slow
def test_a_log_only_agent_never_loads_aiohttp_and_an_http_source_does(start_agent, tmp_path):
    log = tmp_path / "app.log"
    log.write_text("status=200\n" * 5)
    logs_only = tmp_path / "logs.yaml"
    logs_only.write_text(f"logs:\n  - {{name: app, paths: ['{log}'], format: logfmt, start_at: beginning,\n"
                         "     metrics: [{name: lines_total, type: counter, labels: [status]}]}\n")
    process, base = start_agent(logs_only)
    wait_until(lambda: _page(base).value("lines_total", status="200") == 5)
    assert _mapped_packages(process.pid, ("aiohttp", "jsonpath_ng", "prometheus_client")) == set()
    small = _page(base).value("process_resident_memory_bytes")

    with_http = tmp_path / "http.yaml"
    with_http.write_text(logs_only.read_text() + f"http:\n  - {{name: self, url: '{base}/-/healthy'}}\n")
    process, base = start_agent(with_http)
    wait_until(lambda: _page(base).value("probes_total", result="success") >= 1)
    assert "aiohttp" in _mapped_packages(process.pid, ("aiohttp",))
    large = _page(base).value("process_resident_memory_bytes")
    assert large - small > 10 * 2**20, (small, large)


@pytest.mark.slow
def test_re2_is_loaded_only_by_a_regex_that_needs_it(start_agent, tmp_path):
    """A log pattern with a proven Python form runs without RE2's library; a relabel rule needs it."""
    log = tmp_path / "app.log"
    log.write_text("GET 200\n" * 5)
    config = tmp_path / "logs.yaml"
    config.write_text(f"logs:\n  - {{name: app, paths: ['{log}'], start_at: beginning,\n"
                      "     pattern: '^(?P<method>[A-Z]+) (?P<status>\\d+)',\n"
                      "     metrics: [{name: lines_total, type: counter, labels: [status]}]}\n")
    process, base = start_agent(config)
    wait_until(lambda: _page(base).value("lines_total", status="200") == 5)
    assert _mapped_packages(process.pid, ("re2",)) == set()

    config.write_text(config.read_text() + f"http:\n  - name: self\n    static_configs: [{{targets: ['{base}/']}}]\n"
                      "    relabel_configs: [{source_labels: [__address__], regex: '(.+)', target_label: a}]\n")
    process, base = start_agent(config)
    wait_until(lambda: _page(base).value("probes_total", result="success") is not None)
    assert _mapped_packages(process.pid, ("re2",)) == {"re2"}
