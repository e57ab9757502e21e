"""What every prober kind gets from the framework (agent/sources/probe/), read from /metrics of HTTP sources
against real servers: retries that never hide a failure, series a source omits, how result changes are
logged, and the common keys' config errors."""

import asyncio
import gc
import http.server
import logging
import ssl
import threading
import weakref
from collections.abc import Iterator

import pytest
from aiohttp import web

from agent.config.agent import parse_config
from agent.config.problems import ConfigError
from agent.config.yaml import load_text
from agent.series.store import Store
from agent.sources.base import SourceContext
from agent.sources.probe.stream import READ_PAUSE_BYTES, Stream
from tests.helpers import build_source, render_store, serve, until
from tests.sources.dns_servers import ZONE, dnsmasq, make_certificate, unbound_tls  # noqa: F401 - fixtures
from tests.sources.probers import Probed
from tests.sources.test_grpc import grpc_server  # noqa: F401 - a fixture
from tests.sources.test_tcp import pki, server_context  # noqa: F401 - pki is a fixture


@pytest.fixture
async def flaky():
    """/flaky fails every other request (500), starting with the first; /down always fails; /ok never."""
    calls = {"n": 0}

    async def flaky_handler(request):
        calls["n"] += 1
        return web.Response(status=500 if calls["n"] % 2 else 200, text="x")

    async def down(request):
        return web.Response(status=503, text="down")

    async def ok(request):
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/flaky", flaky_handler)
    app.router.add_get("/down", down)
    app.router.add_get("/ok", ok)
    runner, port = await serve(app)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def context():
    context = SourceContext()
    yield context
    await context.close()


def source_for(context, store, item: str):
    config, _ = parse_config(load_text("http:\n" + item, "agent.yaml"), "agent.yaml")
    (source,) = config.of_kind("http")
    return build_source(store, context, source, "http")


async def test_a_retry_never_hides_the_failure_it_papered_over(flaky, context):
    """Issue 20: `retries` (refused upstream, blackbox #320/#853): a probe whose first attempt failed and whose
    retry worked counts as a success in probes_total, and its failed attempt in probe_attempts_total."""
    store = Store()
    source = source_for(context, store, f"  - {{name: web, url: '{flaky}/flaky', retries: 2, interval: 10s, "
                                        "timeout: 2s}\n")
    down = source_for(context, store, f"  - {{name: dead, url: '{flaky}/down', retries: 1, interval: 10s, "
                                      "timeout: 2s}\n")
    assert await source.probe() == "success"
    assert await down.probe() == "status_code"
    page = render_store(store)
    assert page.value("probes_total", target="web", result="success") == 1
    assert page.value("probes_total", target="web", result="status_code") == 0
    attempts = page.by("probe_attempts_total", "result", target="web")
    assert attempts["status_code"] == 1 and attempts["success"] == 1 and sum(attempts.values()) == 2
    assert page.value("probe_retries", target="web") == 1
    assert page.value("probe_success", target="web") == 1
    assert page.value("probes_total", target="dead", result="status_code") == 1  # one probe...
    assert page.value("probe_attempts_total", target="dead", result="status_code") == 2  # ...of two attempts
    assert page.value("probe_retries", target="dead") == 1
    assert page.value("probe_success", target="dead") == 0


async def test_without_retries_there_is_no_attempt_series(flaky, context):
    store = Store()
    source = source_for(context, store, f"  - {{name: web, url: '{flaky}/ok'}}\n")
    assert await source.probe() == "success"
    page = render_store(store)
    assert page.find("probe_retries") == [] and page.find("probe_attempts_total") == []


async def test_omitted_series_are_not_exported(flaky, context):
    """Issue 18.7: a source may opt out of series it does not need (blackbox modules cannot): the five
    per-phase durations are a third of a target's series."""
    store = Store()
    source = source_for(context, store, f"  - name: lean\n    url: '{flaky}/ok'\n    omit_series: "
                                        "[probe_http_duration_seconds, probe_latency_seconds, probe_last_result]\n")
    full = source_for(context, store, f"  - {{name: full, url: '{flaky}/ok'}}\n")
    assert await source.probe() == "success" and await full.probe() == "success"
    page = render_store(store)
    for name in ("probe_http_duration_seconds", "probe_latency_seconds_count", "probe_last_result"):
        assert page.find(name, target="lean") == [] and page.find(name, target="full") != []
    assert page.value("probe_success", target="lean") == 1
    assert page.value("probes_total", target="lean", result="success") == 1
    lean, whole = (len([s for s in page.series if s.labels.get("target") == t]) for t in ("lean", "full"))
    assert lean == whole - 5 - 14 - 1  # five phases, the histogram's 11 buckets + inf + sum + count, one result


def test_common_keys_are_checked_with_file_line_and_field():
    with pytest.raises(ConfigError) as info:
        parse_config(load_text(
            "http:\n"
            "  - name: a\n"
            "    url: http://127.0.0.1/\n"
            "    interval: 10s\n"
            "    timeout: 4s\n"
            "    retries: 2\n"
            "    omit_series: [probe_success, probe_nonsense, probes_total]\n"
            "  - {name: b, url: 'http://127.0.0.1/', retries: -1}\n", "agent.yaml"), "agent.yaml")
    problems = [str(p) for p in info.value.problems]
    assert "agent.yaml:5: http[0].timeout: 3 attempts of 4s do not fit in the interval 10s" in problems
    assert "agent.yaml:7: http[0].omit_series: 'probe_success' is what every probe reports: it cannot be " \
           "omitted" in problems
    assert any(p.startswith("agent.yaml:7: http[0].omit_series: 'probe_nonsense' is not a family of http sources; "
                            "one of: probe_attempts_total, probe_dns_lookup_time_seconds, probe_duration_seconds")
               for p in problems)
    assert "agent.yaml:7: http[0].omit_series: 'probes_total' is what every probe reports: it cannot be " \
           "omitted" in problems
    assert "agent.yaml:8: http[1].retries: -1 is not between 0 and 10" in problems


def test_the_default_timeout_leaves_room_for_every_attempt():
    config, _ = parse_config(load_text("global: {timeout: 10s}\nhttp:\n  - {name: a, url: 'http://x/', "
                                               "interval: 9s, retries: 2}\n", "agent.yaml"), "agent.yaml")
    (source,) = config.of_kind("http")
    assert source.timeout == 3


async def test_result_changes_are_logged_once_and_a_first_failure_has_no_previous_result(flaky, context, caplog):
    """Issue 18.8: the first failed probe logged `from=success`, a result the target never had."""
    store = Store()
    source = source_for(context, store, f"  - {{name: web, url: '{flaky}/down'}}\n")
    caplog.set_level(logging.INFO, logger="agent.sources.probe")
    for _ in range(3):
        assert await source.probe() == "status_code"
    records = [r for r in caplog.records if r.name == "agent.sources.probe"]
    assert len(records) == 1  # a target down for hours logs once
    (first,) = records
    assert first.getMessage() == "first probe failed" and first.levelname == "WARNING"
    assert not hasattr(first, "from") and first.to == "status_code" and first.error == "status 503, expected 2xx"
    ok = source_for(context, store, f"  - {{name: fine, url: '{flaky}/ok'}}\n")
    assert await ok.probe() == "success"
    assert len([r for r in caplog.records if r.name == "agent.sources.probe"]) == 1  # a healthy start is quiet
    await asyncio.sleep(0)


# not what a target keeps: what probes in flight hold for a moment (connections, tasks, callbacks; how many are
# in flight when memory is read depends on the machine's load), and the log records pytest keeps for its report
_NOT_KEPT = ("*/asyncio/*", "*/aiohttp/*", "*/aiohappyeyeballs/*", "*/selectors.py", "*/socket.py", "*/ssl.py",
             "*/_weakrefset.py", "*/logging/*", "*/_pytest/*")


async def _traced_growth(agent, grow) -> int:  # noqa: ANN001 - an Agent, a callable
    """What ``grow`` adds to the memory the agent holds. A probe in flight holds its task, callbacks, slot and
    connection for a moment, and how many are in flight depends on the machine's load (1,300 at once beside
    ``stress-ng --cpu 6``: 0.9 KiB per target more than quiet); each side is therefore read when at most 10
    probes are in flight, as the least of three such readings."""
    import asyncio
    import gc
    import tracemalloc

    from tests.helpers import until

    kept = [tracemalloc.Filter(False, pattern) for pattern in _NOT_KEPT]

    async def few_in_flight() -> bool:
        return sum(task.get_coro().__name__ == "probe" for task in asyncio.all_tasks()) <= 10

    async def held() -> int:
        readings = []
        for _ in range(3):
            await asyncio.sleep(0.2)
            await until(few_in_flight, timeout=120, what="at most 10 probes in flight")
            gc.collect()
            readings.append(sum(stat.size for stat in
                                tracemalloc.take_snapshot().filter_traces(kept).statistics("filename")))
        return min(readings)

    before = await held()
    await grow()
    return await held() - before


@pytest.mark.slow
async def test_a_discovered_target_costs_under_two_and_a_half_kilobytes(tmp_path):
    """Issue 23: ten thousand discovered targets took 9 KiB each (a store group of twenty dict-backed families
    per target); as rows of their source's table they take about 1.8 KiB, series included. Measured as the
    memory that 1,500 more targets of a running agent hold once each has been probed."""
    import json
    import tracemalloc

    from agent.config.agent import load_config
    from agent.runtime.agent import Agent
    from tests.helpers import free_port, until

    port = free_port()  # nothing listens: each probe fails fast, connection refused, and writes its series
    targets = tmp_path / "targets.json"
    config = tmp_path / "agent.yaml"
    config.write_text("http:\n  - name: fleet\n    interval: 5s\n    timeout: 1s\n"
                      "    file_sd_configs: [{files: [targets.json], refresh_interval: 1s}]\n")

    def write(count: int) -> None:
        targets.write_text(json.dumps([{"targets": [f"http://127.0.0.1:{port}/{i}" for i in range(count)],
                                        "labels": {"team": "fleet"}}]))

    write(500)
    tracemalloc.start()
    agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
    await agent.start()
    try:
        source = next(iter(agent.sources.values())).source

        async def probed(count: int) -> None:
            await until(lambda: _all_probed(source, count), timeout=120)

        await probed(500)
        grown = await _traced_growth(agent, lambda: (write(2000), probed(2000))[1])
    finally:
        await agent.stop()
        tracemalloc.stop()
    per_target = grown / 1500
    assert per_target < 2560, f"{per_target:.0f} bytes per discovered target"


@pytest.mark.slow
async def test_a_one_url_source_costs_under_three_and_a_half_kilobytes(tmp_path):
    """Issue 23: a source of one URL took about 9 KB (its self-metrics group of four families, a task waiting
    between probes, its own copy of the module and a prober compiled from it, its config); now its series are
    rows of shared tables, its probes start from the agent's schedule and sources configured alike share one
    module and prober: about 2.8 KB, series included. Measured as the memory that 1,000 more one-URL sources
    of a running agent hold once each has been probed."""
    import tracemalloc

    from agent.config.agent import load_config
    from agent.runtime.agent import Agent
    from tests.helpers import free_port, until

    port = free_port()  # nothing listens: each probe fails fast, connection refused, and writes its series
    config = tmp_path / "agent.yaml"

    def write(count: int) -> None:
        config.write_text("global: {interval: 5s, timeout: 1s}\nhttp:\n" + "".join(
            f"  - name: t{i}\n    url: http://127.0.0.1:{port}/{i}\n" for i in range(count)))

    write(200)
    tracemalloc.start()
    agent = Agent(lambda: load_config(config)[0], "127.0.0.1:0")
    await agent.start()
    try:
        async def probed(count: int) -> None:
            async def each_probed() -> bool:
                return len(agent.sources) == count and all(
                    running.source.stats.last_result is not None for running in agent.sources.values())

            await until(each_probed, timeout=120, what=f"{count} sources probed")

        async def grow() -> None:
            write(1200)
            assert await agent.reload() is None
            await probed(1200)

        await probed(200)
        grown = await _traced_growth(agent, grow)
    finally:
        await agent.stop()
        tracemalloc.stop()
    per_source = grown / 1000
    assert per_source < 3584, f"{per_source:.0f} bytes per one-URL source"


async def _all_probed(source, count: int) -> bool:  # noqa: ANN001 - a DiscoveringProbeSource
    probers = [prober for _, prober in source._targets.values()]
    return len(probers) == count and all(prober.last_result is not None for prober in probers)


async def test_a_probe_stream_stops_reading_while_its_unread_bytes_are_over_the_limit():
    """The connection every HTTP and gRPC probe reads (agent.sources.probe.stream): a target that sends faster than
    its prober reads (8 MiB at once, nobody reading) fills at most READ_PAUSE_BYTES and one read more; reading on,
    every byte arrives, in order."""
    payload = bytes(range(256)) * (8 * 4096)

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(send, "127.0.0.1", 0)
    stream = Stream()
    try:
        await asyncio.get_running_loop().create_connection(lambda: stream, *server.sockets[0].getsockname()[:2])
        assert stream.transport is not None
        await until(lambda: _async(len(stream.buffer) > READ_PAUSE_BYTES), what="the first MiB")
        await asyncio.sleep(0.2)  # time for the rest to arrive, were the socket still read
        unread = len(stream.buffer)
        assert unread <= READ_PAUSE_BYTES + 256 * 1024  # asyncio reads 256 KiB at a time
        assert not stream.transport.is_reading()
        received = bytearray()
        while not stream.closed or stream.buffer:
            received += stream.buffer
            stream.buffer.clear()
            if not stream.closed:
                await stream.more()
        assert received == payload
        with pytest.raises(ConnectionResetError, match="the target closed the connection"):
            await stream.more()
    finally:
        stream.close()
        server.close()


async def _async(value: bool) -> bool:
    return value


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_a_probe_streams_socket_transport_is_freed_by_reference_counting(tls, pki):  # noqa: F811
    """Python 3.11 leaves a closed socket transport in a reference cycle; a probe's is freed without the collector,
    which never sees a transport frozen while its probe was in flight (agent.runtime.heap). Under TLS the stream
    reads through a TLS transport over the socket's, as the HTTP client's start_tls makes it."""
    directory, _ = pki

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"done")
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context(directory, "server") if tls
                                        else None)
    loop = asyncio.get_running_loop()
    gc.disable()
    try:
        socket_transport, stream = await loop.create_connection(Stream, *server.sockets[0].getsockname()[:2])
        if tls:
            trust = ssl.create_default_context(cafile=directory / "ca.pem")
            stream.transport = await loop.start_tls(socket_transport, stream, trust, server_hostname="127.0.0.1")
        freed = weakref.ref(socket_transport)
        del socket_transport
        while not stream.closed:
            await stream.more()
        assert stream.buffer == b"done"
        stream.close()
        del stream
        await until(lambda: _async(freed() is None), timeout=5, what="the socket's transport to be freed")
    finally:
        gc.enable()
        server.close()


class _Fine(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


def _threaded(handler: type[http.server.BaseHTTPRequestHandler],
              context: ssl.SSLContext | None = None) -> Iterator[str]:
    """An HTTP server in a thread (over TLS with ``context``): it has no asyncio transports, so every one left in
    this process is a probe's."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.handle_error = lambda request, address: None  # type: ignore[method-assign]  # a probe that only shakes hands
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def threaded_server():
    yield from _threaded(_Fine)


@pytest.fixture
def threaded_tls_server(tmp_path):
    """``threaded_server`` over TLS: (host:port, the certificate to trust)."""
    cert, key = make_certificate(tmp_path, "probe.example.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    for address in _threaded(_Fine, context):
        yield address, str(cert)


def _open_transports() -> list[asyncio.BaseTransport]:
    return [found for found in gc.get_objects() if isinstance(found, asyncio.BaseTransport) and not found.is_closing()]


@pytest.mark.parametrize("tls", ["plain", "tls", "untrusted"])
@pytest.mark.parametrize("kind", ["http", "tcp", "dns", "grpc"])
async def test_no_probe_leaves_its_connection_to_the_collector(kind, tls, context, tmp_path, request):
    """Each kind's connections (dns: over TCP) are freed by reference counting once a probe ends: one in flight when
    the agent froze its heap (agent.runtime.heap) would otherwise stay for good. Under TLS too, and when the handshake
    fails (a certificate nobody trusts): the socket's transport lies under the TLS one, where only a prober that made
    it can reach it. Its servers run in other processes or threads, so every asyncio transport the collector finds is
    a probe's."""
    trusted = tls == "tls"
    if kind == "dns":
        module = {"query_name": ZONE, "query_type": "SOA", "transport_protocol": "tcp"}
        if tls != "plain":
            unbound = request.getfixturevalue("unbound_tls")
            target = f"127.0.0.1:{unbound.port}"
            module |= {"dns_over_tls": True, "tls_config": {"server_name": unbound.name} |
                       ({"ca_file": str(unbound.cert)} if trusted else {})}
        else:
            target = f"127.0.0.1:{request.getfixturevalue('dnsmasq')}"
    elif kind == "grpc":
        cert, key = make_certificate(tmp_path, "grpc.example.test") if tls != "plain" else (None, None)
        target = request.getfixturevalue("grpc_server")(cert, key).target
        module = {"tls": True, "tls_config": {"server_name": "grpc.example.test"} |
                  ({"ca_file": str(cert)} if trusted else {})} if tls != "plain" else {}
    elif tls != "plain":
        address, cert_file = request.getfixturevalue("threaded_tls_server")
        target = f"https://{address}/" if kind == "http" else address
        module = {"tls_config": {"ca_file": cert_file} if trusted else {}} | ({"tls": True} if kind == "tcp" else {})
    else:
        address = request.getfixturevalue("threaded_server")
        target, module = (f"http://{address}/" if kind == "http" else address), {}
    expected = "tls_error" if tls == "untrusted" else "success"
    probed = Probed(context, kind, target, module)
    assert await probed.probe() == expected, probed.reason  # the first loads what every probe then shares
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            assert await probed.probe() == expected, probed.reason
        # a TLS connection closed with close_notify closes its socket once the server answers
        await until(lambda: _async(not _open_transports()), timeout=10, what="every probe's connection to close")
        await asyncio.sleep(0.05)  # the transports' connection_lost, called soon after they close
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [type(garbage).__name__ for garbage in gc.garbage if isinstance(garbage, asyncio.BaseTransport)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []
