"""What an agent loads: aiohttp (about 19 MiB resident) only for HTTP service discovery, never for a log-only
agent nor for HTTP probes; RE2 (2.5 MiB) only when a regex needs it. Read from the real process (its mapped
files, and process_resident_memory_bytes on its /metrics)."""

from pathlib import Path

import pytest

from tests.helpers import Exposition, fetch, wait_until


def _page(base: str) -> Exposition:
    return Exposition(fetch(base + "/metrics")[1].encode())


def _mapped_packages(pid: int, packages: tuple[str, ...]) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {package for package in packages if f"/{package}/" in maps}


@pytest.mark.slow
def test_neither_a_log_only_agent_nor_http_probes_load_aiohttp_and_http_sd_does(start_agent, tmp_path):
    """HTTP probes speak HTTP/1.1 themselves (agent.sources.http.connection): an agent that probes URLs loads no
    client library, and its resident memory grows by a few MiB over a log-only agent (aiohttp alone was 19 MiB).
    HTTP service discovery still fetches its target lists with aiohttp, loaded when such a source exists."""
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
    with_http.write_text(logs_only.read_text() + f"http:\n  - {{name: self, url: '{base}/-/healthy'}}\n"
                         f"  - {{name: tls, url: 'https://127.0.0.1:1/', timeout: 1s}}\n")
    process, base = start_agent(with_http)
    wait_until(lambda: _page(base).value("probes_total", target="self", result="success") >= 1)
    wait_until(lambda: _page(base).value("probes_total", target="tls", result="connection_refused") >= 1)
    assert _mapped_packages(process.pid, ("aiohttp", "yarl", "multidict")) == set()
    large = _page(base).value("process_resident_memory_bytes")
    assert large - small < 8 * 2**20, (small, large)

    with_sd = tmp_path / "sd.yaml"
    with_sd.write_text(logs_only.read_text()
                       + f"http:\n  - name: fleet\n    http_sd_configs: [{{url: '{base}/-/x'}}]\n")
    process, base = start_agent(with_sd)
    wait_until(lambda: _page(base).value("kpi_agent_sd_refreshes_total", mechanism="http") is not None)
    assert "aiohttp" in _mapped_packages(process.pid, ("aiohttp",))


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
