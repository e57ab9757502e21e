"""What an agent loads: aiohttp (about 19 MiB resident) only for HTTP service discovery, never for a log-only
agent nor for HTTP probes; RE2 (2.5 MiB) only when a regex needs it; a log-only agent no other kind's package,
discovery, web config or TLS control. Read from the real process (its mapped files, the modules it imported, and
process_resident_memory_bytes on its /metrics)."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Exposition, fetch, free_port, wait_until

# What a log-only agent has no use for: every other kind's package and the probers' shared code, target discovery
# and relabelling, the web config (and bcrypt, TLS control) without --web.config.file, the status page nobody
# opened, and the IDNA codec (with its Unicode tables) for a listen address that is an IP address.
UNUSED_BY_A_LOG_AGENT = ("agent.sources.http", "agent.sources.tcp", "agent.sources.dns", "agent.sources.icmp",
                         "agent.sources.grpc", "agent.sources.journal", "agent.sources.probe", "agent.discovery",
                         "agent.server.webconfig", "agent.server.access", "agent.server.tlsctl",
                         "agent.server.statuspage", "bcrypt", "encodings.idna", "stringprep", "unicodedata")


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


def _imported(stderr: Path) -> set[str]:
    """The modules a process started with ``python -X importtime`` has imported so far (its stderr), but for
    those imported by name (importlib.import_module: a kind's package), which importtime does not list."""
    return {line.rpartition("|")[2].strip() for line in stderr.read_text().splitlines()
            if line.startswith("import time:")}


@pytest.mark.slow
def test_a_log_only_agent_loads_no_other_kind_and_a_reload_that_adds_one_does(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("GET 200\n" * 5)
    config = tmp_path / "agent.yaml"
    config.write_text(f"logs:\n  - {{name: app, paths: ['{log}'], start_at: beginning,\n"
                      "     pattern: '^(?P<method>[A-Z]+) (?P<status>\\d+)',\n"
                      "     metrics: [{name: lines_total, type: counter, labels: [status]}]}\n")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stderr = tmp_path / "stderr"
    with stderr.open("w") as errors:
        process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "agent", "run", "--config.file",
                                    str(config), "--web.listen-address", f"127.0.0.1:{port}"], stderr=errors)
    try:
        wait_until(lambda: fetch(base + "/-/ready")[0] == 200 and _page(base).value("lines_total", status="200") == 5,
                   timeout=30, what="the log counted")
        loaded = _imported(stderr)
        assert "agent.sources.logs.source" in loaded
        assert {name for name in loaded if name.startswith(UNUSED_BY_A_LOG_AGENT)} == set()

        config.write_text(config.read_text() + f"http:\n  - {{name: self, url: '{base}/-/healthy'}}\n")
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: _page(base).value("probe_success", target="self") == 1, timeout=30,
                   what="the HTTP source a reload added probing")
        assert {"agent.sources.http.config", "agent.sources.probe.source"} <= _imported(stderr)
        assert _page(base).value("kpi_agent_config_reloads_total", result="success") == 1
    finally:
        process.terminate()
        process.wait(timeout=15)

