"""gRPC sources against a real gRPC server (grpcio with the standard health service) flipping SERVING and
NOT_SERVING, compared with blackbox_exporter's grpc prober in the same test; TLS, metadata, a silent server;
and an agent without a gRPC source never loading the client library."""

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from agent.config.problems import ConfigError
from tests.helpers import Exposition, free_port, wait_until
from tests.sources.blackbox import blackbox, compare  # noqa: F401 - the fixture
from tests.sources.dns_servers import make_certificate
from tests.sources.netns import netns  # noqa: F401 - the fixture
from tests.sources.probers import Probed, assert_retried, blackbox_module, one_target, source_config
from tests.tools import require_tool

OURS_ONLY = ("probes_total", "probe_last_result", "probe_latency_seconds_bucket", "probe_latency_seconds_sum",
             "probe_latency_seconds_count")
TLS_SERIES = ("probe_ssl_earliest_cert_expiry", "probe_tls_version_info", "probe_tls_cipher_info",
              "probe_ssl_last_chain_expiry_timestamp_seconds", "probe_ssl_last_chain_info")
# blackbox_exporter 0.23 registers the certificate expiry of every gRPC probe, at 0 without TLS (0.28 does not)
PLAIN = {"theirs_only": ["probe_ssl_earliest_cert_expiry"]}
VALUES = ("probe_success", "probe_grpc_status_code", "probe_grpc_healthcheck_response", "probe_grpc_ssl")


class HealthServer:
    def __init__(self, process: subprocess.Popen, host: str, port: int):
        self.process = process
        self.port = port
        self.target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def set(self, service: str, status: str) -> None:
        self.process.stdin.write(f"{service or '-'} {status}\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "ok"


@pytest.fixture
def grpc_server() -> Iterator:
    """``grpc_server(cert=None, key=None, env=None, host="127.0.0.1", prefix=()) -> HealthServer``: a real gRPC
    server on ``host`` (``::1``: IPv6 only), run behind ``prefix`` (a namespace's ``ip netns exec``)."""
    started: list[subprocess.Popen] = []

    def start(cert=None, key=None, env=None, host="127.0.0.1", prefix=()) -> HealthServer:  # noqa: ANN001
        pytest.importorskip("grpc_health", reason="grpcio-health-checking (a test dependency)")
        port = free_port()
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        argv = [*prefix, sys.executable, "-m", "tests.sources.grpc_server", address,
                *([str(cert), str(key)] if cert else [])]
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   env={**os.environ, **(env or {})})
        started.append(process)
        assert process.stdout.readline().strip() == "ready"
        return HealthServer(process, host, port)

    yield start
    for process in started:
        process.kill()
        process.wait()


async def test_serving_then_not_serving_as_blackbox_sees_it(grpc_server, blackbox, context):  # noqa: F811
    server = grpc_server()
    exporter = blackbox(blackbox_module("grpc_app", "grpc", {"service": "app"}) +
                        blackbox_module("grpc_plain", "grpc", {}) +
                        blackbox_module("grpc_nope", "grpc", {"service": "nope"}))
    ours = Probed(context, "grpc", server.target, {"service": "app"})
    assert await ours.probe() == "success", ours.reason
    compare(ours.page(), exporter.probe("grpc_app", server.target), ours_only=OURS_ONLY, values=VALUES, **PLAIN)
    assert ours.page().value("probe_grpc_healthcheck_response", serving_status="SERVING") == 1

    server.set("app", "NOT_SERVING")
    assert await ours.probe() == "not_serving"
    assert ours.reason == "the server answers NOT_SERVING for 'app'"
    theirs = exporter.probe("grpc_app", server.target)
    assert theirs.value("probe_success") == 0
    compare(ours.page(), theirs, ours_only=OURS_ONLY, values=VALUES, **PLAIN)

    whole = Probed(context, "grpc", server.target, {})
    assert await whole.probe() == "success"  # the server as a whole still serves
    compare(whole.page(), exporter.probe("grpc_plain", server.target), ours_only=OURS_ONLY, values=VALUES, **PLAIN)

    unknown = Probed(context, "grpc", server.target, {"service": "nope"})
    assert await unknown.probe() == "grpc_status"
    assert unknown.reason == "the health check failed with status NOT_FOUND"
    compare(unknown.page(), exporter.probe("grpc_nope", server.target), ours_only=OURS_ONLY, values=VALUES, **PLAIN)
    assert unknown.page().value("probe_grpc_status_code") == 5


async def test_an_ipv6_server_address(grpc_server, blackbox, context):  # noqa: F811
    server = grpc_server(host="::1")  # listening on IPv6 only
    exporter = blackbox(blackbox_module("grpc6", "grpc", {}))
    ours = Probed(context, "grpc", server.target, {})
    assert await ours.probe() == "success", ours.reason
    page = ours.page()
    assert page.value("probe_ip_protocol") == 6
    assert page.value("probe_grpc_healthcheck_response", serving_status="SERVING") == 1
    theirs = exporter.probe("grpc6", server.target)
    # blackbox_exporter (0.23 here, and still 0.28) dials "::1:PORT", which Go refuses ("too many colons in
    # address"): its grpc prober cannot probe an IPv6 address literal (blackbox_exporter #1171). The series and
    # the resolution agree; the verdict is ours.
    assert theirs.value("probe_success") == 0 and theirs.value("probe_grpc_status_code") == 14
    assert "too many colons" in exporter.debug("grpc6", server.target)
    compare(page, theirs, ours_only=OURS_ONLY, values=["probe_ip_protocol", "probe_ip_addr_hash"], **PLAIN)


@pytest.mark.slow
def test_preferred_ip_protocol_chooses_the_address_blackbox_only_reports(netns, grpc_server, tmp_path):  # noqa: F811
    """A name with an IPv4 and an IPv6 address (the namespace's /etc/hosts) and a server on IPv6 alone. With the
    default preference (ip6) we and blackbox_exporter connect over IPv6 and agree on every series. With
    ``preferred_ip_protocol: ip4`` and no fallback, we connect to the IPv4 address and fail (its IPv4 path is
    down, which is what such a module asks); blackbox reports IPv4 but lets its gRPC client dial the name, which
    reaches the IPv6 address: a success that hides the broken IPv4 path."""
    namespace = netns(hosts="127.0.0.1 localhost\n127.0.0.1 grpc.test\n::1 grpc.test\n")
    server = grpc_server(host="::1", prefix=namespace.prefix())
    target = f"grpc.test:{server.port}"
    ip4_only = {"preferred_ip_protocol": "ip4", "ip_protocol_fallback": False}
    config = tmp_path / "agent.yaml"
    config.write_text(f"grpc:\n  - {{name: v6, target: '{target}'}}\n"
                      f"  - {{name: v4, target: '{target}', preferred_ip_protocol: ip4,\n"
                      "     ip_protocol_fallback: false}\n")
    base = namespace.start_agent(config)
    page = wait_until(lambda: (p := namespace.scrape(base)).total("probes_total") >= 2 and p, timeout=20,
                      what="both sources probed")

    exporter_config = tmp_path / "blackbox.yml"
    exporter_config.write_text("modules:\n" + "".join(f"  {line}\n" for line in (
        blackbox_module("g6", "grpc", {}) + blackbox_module("g4", "grpc", ip4_only)).splitlines()))
    port = free_port()
    namespace.processes.append(subprocess.Popen(
        [*namespace.prefix(), require_tool("prometheus-blackbox-exporter"), f"--config.file={exporter_config}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    exporter = f"http://127.0.0.1:{port}"
    wait_until(lambda: namespace.fetch(exporter + "/-/healthy")[0] == 200, what="blackbox_exporter up")

    def theirs(module: str) -> Exposition:
        status, body = namespace.fetch(f"{exporter}/probe?module={module}&target={target}")
        assert status == 200
        return Exposition(body.encode(), ours=False)

    v6 = one_target(page, "v6")
    assert v6.value("probe_success") == 1 and v6.value("probe_ip_protocol") == 6
    compare(v6, theirs("g6"), ours_only=OURS_ONLY, values=[*VALUES, "probe_ip_protocol", "probe_ip_addr_hash"],
            **PLAIN)

    v4 = one_target(page, "v4")
    assert v4.value("probe_success") == 0 and v4.value("probe_ip_protocol") == 4
    assert v4.value("probes_total", result="connection_refused") >= 1
    assert v4.value("probe_grpc_status_code") == 14  # UNAVAILABLE
    g4 = theirs("g4")
    assert g4.value("probe_ip_protocol") == 4 and g4.value("probe_success") == 1  # reported IPv4, went over IPv6
    rows = {row["name"]: row for row in namespace.sources(base)}
    assert "refused" in rows["v4"]["last_error_text"].lower()


async def test_tls_with_a_certificate_the_test_made(grpc_server, blackbox, context, tmp_path):  # noqa: F811
    cert, key = make_certificate(tmp_path, "grpc.example.test")
    server = grpc_server(cert, key)
    module = {"tls": True, "tls_config": {"ca_file": str(cert), "server_name": "grpc.example.test"}}
    exporter = blackbox(blackbox_module("grpc_tls", "grpc", module))
    ours = Probed(context, "grpc", server.target, module)
    assert await ours.probe() == "success", ours.reason
    theirs = exporter.probe("grpc_tls", server.target)
    assert theirs.value("probe_success") == 1, exporter.debug("grpc_tls", server.target)
    page = ours.page()
    compare(page, theirs, ours_only=(*OURS_ONLY, "probe_tls_cipher_info",
                                     "probe_ssl_last_chain_expiry_timestamp_seconds"),
            values=[*VALUES, "probe_ssl_earliest_cert_expiry"], newer_labels=frozenset({"serialnumber"}))
    assert page.value("probe_grpc_ssl") == 1
    assert page.value("probe_ssl_earliest_cert_expiry") > time.time()

    untrusted = Probed(context, "grpc", server.target, {"tls": True,
                                                        "tls_config": {"server_name": "grpc.example.test"}})
    assert await untrusted.probe() == "tls_error"
    assert "certificate" in untrusted.reason


async def test_metadata_reaches_the_server(grpc_server, context):
    server = grpc_server(env={"GRPC_REQUIRE_METADATA": "authorization=Bearer s3cret"})
    refused = Probed(context, "grpc", server.target, {})
    assert await refused.probe() == "grpc_status"
    assert refused.page().value("probe_grpc_status_code") == 16  # UNAUTHENTICATED
    allowed = Probed(context, "grpc", server.target, {"metadata": {"authorization": "Bearer s3cret"}})
    assert await allowed.probe() == "success", allowed.reason


async def test_a_failure_a_retry_papered_over_is_still_counted(grpc_server, context):
    server = grpc_server(env={"GRPC_FAIL_FIRST": "1"})  # the first call fails with UNAVAILABLE
    ours = Probed(context, "grpc", server.target, {"retries": 1})
    assert await ours.probe() == "success", ours.reason
    assert_retried(ours.page(), "grpc", failed="grpc_status")


@pytest.mark.parametrize("tls", [False, True])
async def test_a_server_that_accepts_and_never_answers(context, tls):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
    accepting.start()
    try:
        module = {"tls": True, "tls_config": {"insecure_skip_verify": True}} if tls else {}  # TLS: no handshake
        ours = Probed(context, "grpc", f"127.0.0.1:{listener.getsockname()[1]}", module, timeout="500ms")
        started = time.perf_counter()
        assert await ours.probe() == "timeout"
        assert 0.4 < time.perf_counter() - started < 1.5
        assert ours.reason == "no answer to the health check within 0.5s"
        assert ours.page().value("probe_grpc_status_code") == 4  # DEADLINE_EXCEEDED
    finally:
        for sock in (listener, *held):
            sock.close()


async def test_nothing_listening(context):
    ours = Probed(context, "grpc", f"127.0.0.1:{free_port()}", {})
    assert await ours.probe() == "connection_refused"
    assert ours.page().value("probe_grpc_status_code") == 14  # UNAVAILABLE, as Go's client says


def _imported(config_text: str, tmp_path, start_agent) -> str:  # noqa: ANN001
    """What ``kpi-agent run`` imported with this config (-X importtime), once it is ready."""
    config = tmp_path / "agent.yaml"
    config.write_text(config_text)
    port = free_port()
    log = tmp_path / "imports.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "agent", "run", "--config.file",
                                    str(config), "--web.listen-address", f"127.0.0.1:{port}"], stderr=stderr)
        try:
            from tests.helpers import fetch

            wait_until(lambda: fetch(f"http://127.0.0.1:{port}/-/ready")[0] == 200, timeout=20)
            time.sleep(1)  # the first probes run
        finally:
            process.terminate()
            process.wait(timeout=10)
    return log.read_text()


def _loaded(log: str, *packages: str) -> set[str]:
    """Which of these top-level packages the import log shows."""
    found = {line.rsplit("|", 1)[-1].strip() for line in log.splitlines() if line.startswith("import time:")}
    return {package for package in packages if any(m == package or m.startswith(package + ".") for m in found)}


@pytest.mark.slow
def test_only_an_agent_with_a_grpc_source_loads_its_client(tmp_path, start_agent):
    http_only = _imported("http:\n  - {name: self, url: 'http://127.0.0.1:9/'}\n", tmp_path, start_agent)
    assert not _loaded(http_only, "hpack", "dns", "agent.sources.grpc.wire")
    # nor the kinds' own packages: the kinds table loads a kind the config has a section of
    assert not _loaded(http_only, "agent.sources.dns", "agent.sources.icmp", "agent.sources.grpc")
    # the log is complete: what the agent loads is in it (aiohttp no more: HTTP probes have their own client)
    assert _loaded(http_only, "agent.sources.http", "aiohttp") == {"agent.sources.http"}
    with_grpc = _imported("grpc:\n  - {name: app, target: '127.0.0.1:9'}\n", tmp_path, start_agent)
    # the own HTTP/2 client and hpack; no grpcio, grpclib, h2 or protobuf
    assert _loaded(with_grpc, "agent.sources.grpc.wire", "hpack", "grpc", "grpclib", "h2", "google.protobuf") == {
        "agent.sources.grpc.wire", "hpack"}


def test_config_keys_blackbox_has_and_one_it_has_not():
    config = source_config("grpc", "g", "https://orders.internal:50051", {
        "service": "orders.v1.Orders", "tls": True, "tls_config": {"server_name": "orders.internal"},
        "metadata": {"authorization": "Bearer s3cret", "x-team": ["a", "b"]},
        "preferred_ip_protocol": "ip4", "ip_protocol_fallback": False})
    module = config.module
    assert (module.service, module.tls, module.tls_config.server_name) == ("orders.v1.Orders", True, "orders.internal")
    assert module.metadata == (("authorization", "Bearer s3cret"), ("x-team", "a"), ("x-team", "b"))
    assert (module.ip.preferred, module.ip.fallback) == ("ip4", False)
    assert config.target == "orders.internal:50051"
    with pytest.raises(ConfigError) as error:  # accepted and ignored before: say so instead
        source_config("grpc", "g", "127.0.0.1:50051", {"source_ip_address": "127.0.0.2"})
    assert "agent.yaml:6: grpc[0].source_ip_address: a gRPC source cannot choose the address it connects from" \
        in str(error.value)
