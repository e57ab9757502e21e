"""The agent's HTTP/1.1 server, spoken to over raw sockets: what scrapers, browsers and curl send works, and
whatever else arrives gets a clear status or a closed connection, never a stuck or crashed server."""

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.server.listener import ConnectionGuard, ListenAddress, listen
from agent.server.protocol import MAX_BODY, MAX_HEAD, Request, Response
from tests.helpers import examples


async def _server(handler=None):  # noqa: ANN001, ANN202
    async def echo(request: Request) -> Response:
        return Response.text(f"{request.method} {request.path} {request.query} {len(request.body)}\n")

    guard = ConnectionGuard(16, header_timeout=1.0, idle_timeout=2.0)
    servers = await listen(handler or echo, [ListenAddress("127.0.0.1", 0)], guard)
    return servers[0], servers[0].port, guard


async def _exchange(port: int, data: bytes, read_for: float = 0.5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_for)
            if not chunk:
                break
            chunks.append(chunk)
    except TimeoutError:
        pass
    writer.close()
    return b"".join(chunks)


async def test_keep_alive_pipelining_head_and_http_1_0():
    server, port, _ = await _server()
    try:
        two = await _exchange(port, b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
                                    b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        assert two.count(b"HTTP/1.1 200 OK") == 2  # answered in order on one connection
        assert b"GET /a {'x': '1'} 0" in two and b"POST /b {} 3" in two and two.index(b"/a") < two.index(b"/b")
        head = await _exchange(port, b"HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")  # the length, no body
        old = await _exchange(port, b"GET /d HTTP/1.0\r\n\r\n", read_for=2)
        assert b"Connection: close" in old and old.endswith(b"GET /d {} 0\n")  # closed after the answer
    finally:
        server.close()


async def test_malformed_oversized_and_unsupported_requests_get_a_status_and_a_close():
    server, port, _ = await _server()
    try:
        cases = {
            b"NONSENSE\r\n\r\n": b"400",
            b"GET / HTTP/2.0\r\n\r\n": b"505",
            b"GET / HTTP/1.1\r\n folded: header\r\n\r\n": b"400",
            b"GET / HTTP/1.1\r\nX: " + b"y" * MAX_HEAD + b"\r\n\r\n": b"431",
            b"POST / HTTP/1.1\r\nContent-Length: " + str(MAX_BODY + 1).encode() + b"\r\n\r\n": b"413",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": b"501",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n": b"400",
        }
        for request, status in cases.items():
            answer = await _exchange(port, request, read_for=2)
            assert answer.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in answer, (request[:40], answer)
    finally:
        server.close()


async def test_a_failing_handler_is_a_500_and_the_server_goes_on():
    async def broken(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("injected")
        return Response.text("fine\n")

    server, port, _ = await _server(broken)
    try:
        answer = await _exchange(port, b"GET /boom HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 500") and answer.endswith(b"fine\n")
    finally:
        server.close()


async def test_a_slow_head_and_an_idle_connection_are_closed_on_time():
    server, port, guard = await _server()
    closed: list[str] = []
    guard.on_close = closed.append
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: slow")  # and nothing more
        assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the head deadline (1 s)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert (await reader.readuntil(b"0\n")).startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(reader.read(), 4) == b""  # then idle for longer than 2 s
        assert closed == ["header_timeout", "idle_timeout"] and not guard.open
    finally:
        server.close()


@settings(max_examples=examples(1 / 3), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(st.binary(max_size=200), st.sampled_from([
    b"GET / HTTP/1.1\r\n", b"\r\n", b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", b": x\r\n",
    b"Host: \xff\xfe\r\n", b"GET /%ff%fe?%zz=1 HTTP/1.1\r\n", b"\x00", b"HTTP/1.1 ", b"Connection: keep-alive\r\n"])),
    max_size=12))
@pytest.mark.slow
def test_any_bytes_get_an_answer_or_a_close_and_the_server_keeps_serving(pieces):
    async def run() -> None:
        server, port, _ = await _server()
        try:
            answer = await _exchange(port, b"".join(pieces), read_for=0.2)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 ")
            healthy = await _exchange(port, b"GET /still HTTP/1.1\r\nConnection: close\r\n\r\n", read_for=2)
            assert healthy.startswith(b"HTTP/1.1 200") and healthy.endswith(b"GET /still {} 0\n")
        finally:
            server.close()

    asyncio.run(run())


@pytest.mark.parametrize("paths", [10, 2000])
async def test_a_gzipped_page_is_the_page_on_the_loop_or_in_a_thread(paths):
    """/metrics compresses a small page on the event loop and a big one in a worker thread: either way the client
    decompresses the page written (its process_* lines aside, read again at each write)."""
    import gzip

    from agent.series.exposition import render
    from agent.series.family import counter
    from agent.series.store import Store
    from agent.server.routes import _GZIP_INLINE_BYTES, metrics_page

    store = Store({"site": "eu-1"})
    hits = store.group("g", {"source": "g"}, "source").counter(counter("hits_total", "Hits", ["path"]))
    for path in range(paths):
        hits.inc((f"/p/{path}",))
    body, headers = await metrics_page(store.snapshot(), "", "gzip, deflate")
    page = gzip.decompress(body)
    assert headers["Content-Encoding"] == "gzip" and (len(page) > _GZIP_INLINE_BYTES) == (paths > 10)
    assert [line for line in page.splitlines() if b"process_" not in line] == \
        render(store.snapshot(), process=False).splitlines()
