"""What an agent loads: aiohttp (about 19 MiB resident) only for HTTP service discovery, never for a log-only
agent nor for HTTP probes; RE2 (2.5 MiB) only when a regex needs it; OpenSSL (4 MiB) only once something speaks
TLS; a log-only agent no other kind's package, discovery, web config or TLS control. Read from the real process
(its mapped files, the modules it imported, and process_resident_memory_bytes on its /metrics)."""

import signal
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import Exposition, fetch, free_port, start_log_agent_import_timed, wait_until
from tests.push.receivers import PrometheusReceiver
from tests.test_lazyssl import self_signed

# What a log-only agent has no use for: every other kind's package and the probers' shared code, target discovery
# and relabelling, the web config (and bcrypt, TLS control) without --web.config.file, the status page nobody
# opened, and the IDNA codec (with its Unicode tables) for a listen address that is an IP address.
UNUSED_BY_A_LOG_AGENT = ("agent.sources.http", "agent.sources.tcp", "agent.sources.dns", "agent.sources.icmp",
                         "agent.sources.grpc", "agent.sources.journal", "agent.sources.probe", "agent.discovery",
                         "agent.server.webconfig", "agent.server.access", "agent.server.tlsctl",
                         "agent.server.statuspage", "bcrypt", "encodings.idna", "stringprep", "unicodedata", "difflib")


def _page(base: str) -> Exposition:
    return Exposition(fetch(base + "/metrics")[1].encode())


def _mapped_packages(pid: int, packages: tuple[str, ...]) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {package for package in packages if f"/{package}/" in maps}


def _mapped_libraries(pid: int, libraries: tuple[str, ...]) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {library for library in libraries if f"/{library}.so" in maps}


@pytest.mark.slow
def test_neither_a_log_only_agent_nor_http_probes_load_aiohttp_and_http_sd_does(start_agent, tmp_path):
    """HTTP probes speak HTTP/1.1 themselves (agent.sources.http.connection): an agent that probes URLs loads no
    client library, and its resident memory grows by a few MiB over a log-only agent (aiohttp alone was 19 MiB),
    4 of them OpenSSL's, which the log-only agent does without. HTTP service discovery still fetches its target
    lists with aiohttp, loaded when such a source exists."""
    log = tmp_path / "app.log"
    log.write_text("status=200\n" * 5)
    logs_only = tmp_path / "logs.yaml"
    logs_only.write_text(f"logs:\n  - {{name: app, paths: ['{log}'], format: logfmt, start_at: beginning,\n"
                         "     metrics: [{name: lines_total, type: counter, labels: [status]}]}\n")
    process, base = start_agent(logs_only)
    wait_until(lambda: _page(base).value("lines_total", status="200") == 5)
    assert _mapped_packages(process.pid, ("aiohttp", "jsonpath_ng", "prometheus_client")) == set()
    assert _mapped_libraries(process.pid, ("libssl", "libcrypto")) == set()
    small = _page(base).value("process_resident_memory_bytes")

    with_http = tmp_path / "http.yaml"
    with_http.write_text(logs_only.read_text() + f"http:\n  - {{name: self, url: '{base}/-/healthy'}}\n"
                         f"  - {{name: tls, url: 'https://127.0.0.1:1/', timeout: 1s}}\n")
    process, base = start_agent(with_http)
    wait_until(lambda: _page(base).value("probes_total", target="self", result="success") >= 1)
    wait_until(lambda: _page(base).value("probes_total", target="tls", result="connection_refused") >= 1)
    assert _mapped_packages(process.pid, ("aiohttp", "yarl", "multidict")) == set()
    assert _mapped_libraries(process.pid, ("libssl", "libcrypto")) == {"libssl", "libcrypto"}
    large = _page(base).value("process_resident_memory_bytes")
    assert large - small < 12 * 2**20, (small, large)

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


@pytest.mark.slow
def test_a_rewrite_loads_re2_only_when_its_pattern_has_no_proven_python_search(start_agent, tmp_path):
    """A JSON source's label rewrite with a pattern proven to search linearly in Python's re (a bounded head,
    then a run), and a match filter with a proven whole-value form, are applied without RE2's library; a rewrite
    outside the proof (every try from a digit of ``(\\d+)/x`` would read the rest of the digits) is applied by
    RE2, which is then loaded."""
    log = tmp_path / "app.json.log"
    log.write_text('{"path": "/api/item/12"}\n{"path": "/api/item/7/x"}\n{"path": "/health"}\n')

    def config(pattern: str, replacement: str) -> Path:
        written = tmp_path / "json.yaml"
        written.write_text(f"logs:\n  - {{name: app, paths: ['{log}'], format: json, start_at: beginning,\n"
                           "     metrics: [{name: requests_total, type: counter, labels: [path],\n"
                           f"                rewrite: [{{label: path, regex: '{pattern}',\n"
                           f"                            replacement: '{replacement}'}}]}},\n"
                           "               {name: api_requests_total, type: counter, match: {path: '/api/.*'}}]}\n")
        return written

    process, base = start_agent(config(r"/api/item/\d+", "/api/item/:id"))
    wait_until(lambda: _page(base).value("requests_total", path="/api/item/:id") == 1)
    page = _page(base)
    assert page.value("requests_total", path="/api/item/:id/x") == page.value("requests_total", path="/health") == 1
    assert page.value("api_requests_total") == 2  # a match filter: whole values, in Python's re too
    assert _mapped_packages(process.pid, ("re2",)) == set()

    process, base = start_agent(config(r"(\d+)/x", "${1}/y"))
    wait_until(lambda: _page(base).value("requests_total", path="/api/item/7/y") == 1)
    page = _page(base)
    assert page.value("requests_total", path="/api/item/12") == page.value("requests_total", path="/health") == 1
    assert _mapped_packages(process.pid, ("re2",)) == {"re2"}


JSON_READER = """
import sys
from agent.sources.logs.fields import JsonColumns
columns, lines = JsonColumns(("path", "status")).read(b'{"path": "/a", "status": 200}\\n{"status": 404}\\n')
print(columns, lines, "typing_extensions" in sys.modules)
import typing_extensions
print(typing_extensions.__name__)
"""


def test_a_json_source_reads_without_typing_extensions_which_others_still_import():
    """msgspec reads type hints through typing_extensions (240 KiB resident) only for typing_extensions' own
    types, and through typing without it: the first JSON source imports msgspec without it."""
    shown = subprocess.run([sys.executable, "-c", JSON_READER], capture_output=True, text=True, timeout=60)
    assert shown.stdout.splitlines() == ["[['/a', None], [200, 404]] 2 False", "typing_extensions"], shown.stderr


# A TLS server answering 200 to GET / (a directory listing): python -c TLS_TARGET CERT KEY prints its port
TLS_TARGET = """
import http.server, ssl, sys
server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.mark.slow
def test_a_log_only_agent_loads_no_other_kind_nor_openssl_and_a_reload_that_adds_https_does(tmp_path):
    cert, key = self_signed(tmp_path)
    agent = start_log_agent_import_timed(tmp_path, 5)
    process, config, base = agent.process, agent.config, f"http://127.0.0.1:{agent.port}"
    target = subprocess.Popen([sys.executable, "-c", TLS_TARGET, str(cert), str(key)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_until(lambda: fetch(base + "/-/ready")[0] == 200 and _page(base).value("lines_total", status="200") == 5,
                   timeout=30, what="the log counted")
        loaded = agent.imported()
        assert "agent.sources.logs.source" in loaded
        assert {name for name in loaded if name.startswith(UNUSED_BY_A_LOG_AGENT)} == set()
        assert _mapped_libraries(process.pid, ("libssl", "libcrypto")) == set()

        assert target.stdout is not None
        config.write_text(config.read_text() + f"http:\n  - name: tls\n    url: https://127.0.0.1:{target.stdout.readline().strip()}/\n"
                          f"    tls_config: {{ca_file: '{cert}'}}\n")
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: _page(base).value("probe_success", target="tls") == 1, timeout=30,
                   what="the HTTPS source a reload added probing")
        assert _page(base).value("probe_http_ssl", target="tls") == 1
        assert {"agent.sources.http.config", "agent.sources.probe.source"} <= agent.imported()
        assert _mapped_libraries(process.pid, ("libssl", "libcrypto")) == {"libssl", "libcrypto"}
        assert _page(base).value("kpi_agent_config_reloads_total", result="success") == 1
    finally:
        for started in (process, target):
            started.terminate()
            started.wait(timeout=15)


@pytest.mark.slow
@pytest.mark.tools
def test_an_agent_started_without_openssl_serves_probes_and_pushes_over_tls(tmp_path):
    """OpenSSL loaded as the config is read, at start: /metrics over TLS (web config), an https probe with a
    tls_config, and remote_write over https into Prometheus serving TLS."""
    cert, key = self_signed(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config: {{cert_file: '{cert}', key_file: '{key}'}}\n")
    context = ssl.create_default_context(cafile=str(cert))
    (tmp_path / "prometheus").mkdir()
    receiver = PrometheusReceiver(tmp_path / "prometheus")
    receiver.extra_args, receiver.context = [f"--web.config.file={web}"], context
    receiver.start()
    target = subprocess.Popen([sys.executable, "-c", TLS_TARGET, str(cert), str(key)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert target.stdout is not None
    config = tmp_path / "agent.yaml"
    config.write_text(f"http:\n  - name: tls\n    url: https://127.0.0.1:{target.stdout.readline().strip()}/\n"
                      f"    tls_config: {{ca_file: '{cert}'}}\n"
                      f"remote_write:\n  - url: {receiver.write_url}\n    interval: 300ms\n"
                      f"    tls_config: {{ca_file: '{cert}'}}\n")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config.file", str(config),
                                "--web.config.file", str(web), "--web.listen-address", f"127.0.0.1:{port}"],
                               stderr=subprocess.DEVNULL)
    try:
        page = wait_until(lambda: (p := _https_page(f"https://127.0.0.1:{port}/metrics", context))
                          and p.value("probe_success", target="tls") == 1 and p, timeout=30,
                          what="/metrics over TLS showing the https probe")
        assert page.value("probe_http_ssl", target="tls") == 1
        pushed = wait_until(lambda: receiver.latest('{__name__="probe_http_ssl", target="tls"}'), timeout=30,
                            what="Prometheus to hold the pushed probe_http_ssl")
        assert list(pushed.values()) == [1]
    finally:
        for started in (process, target):
            started.terminate()
            started.wait(timeout=15)
        receiver.stop()


def _https_page(url: str, context: ssl.SSLContext) -> Exposition | None:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return Exposition(response.read())
    except OSError:
        return None
