"""The HTTP probes' own HTTP/1.1 client against servers that break the protocol, on purpose, on 127.0.0.1: each
gives the right result and a reason that says what happened, the timeout holds, and a healthy source probed at
the same time is not disturbed. The response-head parser is held to a plain reading of the grammar with
hypothesis."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.series.store import Store
from agent.sources.base import SourceContext
from agent.sources.http.head import InvalidResponse, _parse_head_slowly, head_end, parse_head
from tests.helpers import LoopWatch, Pace, render_store, serve
from tests.sources.test_http import source_for

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(answer: Handler) -> tuple[asyncio.Server, str]:
    """A TCP server that reads a request head and then runs ``answer``: whatever bytes a test wants sent."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/"


def sends(*parts: bytes, pause: float = 0.0, forever: bytes | None = None) -> Handler:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        while forever is not None:
            writer.write(forever)
            await writer.drain()
            await asyncio.sleep(pause or 0.05)
    return answer


@pytest.fixture
async def context():
    context = SourceContext()
    yield context
    await context.close()


@pytest.fixture
async def healthy():
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    app = web.Application()
    app.router.add_get("/", ok)
    runner, port = await serve(app)
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


async def probe(context: SourceContext, url: str, extra: str = "", timeout: str = "2s") -> tuple[str, str | None]:
    store = Store()
    source = source_for(context, store, f"  - name: t\n    url: {url}\n    timeout: {timeout}\n{extra}")
    outcome = await source.probe()
    return outcome, source.prober.last_error


HOSTILE = {
    "garbage": (sends(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n\r\n"), "invalid_response",
                "not an HTTP response: 'SSH-2.0-OpenSSH_9.2p1 Debian-2'"),
    "binary": (sends(bytes(range(256)) * 4 + b"\r\n\r\n"), "invalid_response", "not an HTTP response"),
    "http2 preface": (sends(b"HTTP/2.0 200 OK\r\n\r\n"), "invalid_response", "HTTP/2.0 is not HTTP/1.x"),
    "bad header line": (sends(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"), "invalid_response",
                        "not a header line: 'no colon here'"),
    "huge header": (sends(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (2 * 1024 * 1024) + b"\r\n\r\n"), "invalid_response",
                    "response head longer than 1024 KiB"),
    "head cut short": (sends(b"HTTP/1.1 200 OK\r\nContent-Le"), "invalid_response",
                       "the target closed the connection in the middle of the response head"),
    "nothing at all": (sends(), "connection_error", "the target closed the connection without a response"),
    "chunked that lies": (sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + b"x" * 10),
                          "connection_error", "the target closed the connection 10 bytes into a body of 100"),
    "chunk longer than said": (sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"5\r\nhelloEXTRA\r\n0\r\n\r\n"),
                               "invalid_response", "a chunk is longer than its size line says (5 bytes)"),
    "chunk size not hex": (sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
                           "invalid_response", "chunk size 'zz' is not a hexadecimal number"),
    "body shorter than its length": (sends(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"), "connection_error",
                                     "the target closed the connection 5 bytes into a body of 50"),
    "two lengths": (sends(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
                    "invalid_response", "conflicting Content-Length values: 5, 6"),
    "unknown transfer coding": (sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
                                "invalid_response", "unsupported Transfer-Encoding 'gzip, chunked'"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_server_that_breaks_http_gets_the_right_result_and_reason(context, name):
    answer, result, reason = HOSTILE[name]
    server, url = await raw_server(answer)
    try:
        outcome, error = await probe(context, url)
        assert (outcome, (error or "")[:len(reason)]) == (result, reason), error
    finally:
        server.close()


async def test_a_body_over_the_limit_is_refused_as_it_arrives_however_it_is_framed(context):
    """Content-Length over the limit fails before the body is read; a chunked or unframed body fails as soon as
    it passes the limit, though the server would send forever; a small gzip body that unpacks to 100 MiB fails
    at the limit too (the limit counts decoded bytes, as blackbox's)."""
    import brotli

    bomb = gzip.compress(b"\0" * (100 * 1024 * 1024))
    br_bomb = brotli.compress(b"\0" * (100 * 1024 * 1024), quality=1)
    cases = {
        "announced": sends(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n", forever=b"x" * 65536),
        "chunked": sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", forever=b"10000\r\n" + b"x" * 65536
                         + b"\r\n", pause=0.001),
        "until close": sends(b"HTTP/1.1 200 OK\r\n\r\n", forever=b"x" * 65536, pause=0.001),
        "gzip bomb": sends(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb),
                           bomb),
        "br bomb": sends(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: %d\r\n\r\n" % len(br_bomb),
                         br_bomb),
    }
    for name, answer in cases.items():
        server, url = await raw_server(answer)
        try:
            extra = "    body_size_limit: 1MiB\n" + (f"    compression: {name.split()[0]}\n" if "bomb" in name else "")
            outcome, error = await probe(context, url, extra, timeout="5s")
            assert outcome == "body_too_large", (name, error)
            assert error is not None and error.startswith("body longer than 1048576 bytes"), (name, error)
        finally:
            server.close()


async def test_slow_servers_hit_the_timeout_and_leave_a_healthy_source_alone(context, healthy):
    """A head that never ends (a header line every 50 ms) and a body sent a byte at a time both fail at the
    timeout, no later; a healthy source probed meanwhile answers as fast as it would alone, and the event loop is
    never held."""
    slow_head = sends(b"HTTP/1.1 200 OK\r\n", forever=b"X-Again: and again\r\n")
    slow_body = sends(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", forever=b"x", pause=0.1)
    # sources are built before the watch: a test builds one on the loop, with its TLS context (the CA bundle,
    # 20-40 ms), where the agent builds contexts in a worker thread first (probe/tls.py); the watch is on probes
    beside = source_for(context, Store(), f"  - name: t\n    url: {healthy}\n")
    pace = Pace.measure()
    alone = time.perf_counter()
    assert await beside.probe() == "success"
    alone = time.perf_counter() - alone
    for answer in (slow_head, slow_body):
        server, url = await raw_server(answer)
        slow_source = source_for(context, Store(), f"  - name: t\n    url: {url}\n    timeout: 600ms\n")
        try:
            async with LoopWatch() as watch:
                started = time.perf_counter()
                slow = asyncio.create_task(slow_source.probe())
                await asyncio.sleep(0.1)
                meanwhile = time.perf_counter()
                assert await beside.probe() == "success"
                meanwhile = time.perf_counter() - meanwhile
                outcome, error = await slow, slow_source.prober.last_error
                took = time.perf_counter() - started
            assert (outcome, error) == ("timeout", "no complete answer within 0.6s")
            assert took >= 0.6
            pace.check(took - 0.6, quiet=0.1, what="the timeout")
            pace.check(meanwhile, quiet=max(alone, 0.02) * 3, what="the healthy probe beside the slow one")
            pace.check(watch.longest, quiet=0.02, what="the loop held")
        finally:
            server.close()


async def test_interim_responses_folded_headers_and_bare_line_feeds_are_read_as_go_reads_them(context):
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\nContent-Length: 2\nX-Folded: one\n two\n\nok",
        b"HTTP/1.0 200\r\n\r\nuntil the target closes",
    ]
    for answer in answers:
        server, url = await raw_server(sends(answer))
        try:
            store = Store()
            source = source_for(context, store, f"  - name: t\n    url: {url}\n")
            assert await source.probe() == "success", source.prober.last_error
            page = render_store(store)
            assert page.value("probe_http_status_code", target="t") == 200
            assert page.value("probe_http_uncompressed_body_length", target="t") == len(answer.rsplit(b"\n", 1)[1])
        finally:
            server.close()


async def test_deflate_bodies_are_read_wrapped_or_raw(context):
    """RFC 9110's deflate is zlib-wrapped; Go's (and some servers') raw DEFLATE is read too."""
    text = b"hello deflate " * 50
    raw = zlib.compressobj(wbits=-15)
    for body in (zlib.compress(text), raw.compress(text) + raw.flush()):
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(body)
        server, url = await raw_server(sends(head + body))
        try:
            store = Store()
            source = source_for(context, store, f"  - name: t\n    url: {url}\n    compression: deflate\n"
                                                "    fail_if_body_not_matches_regexp: ['hello deflate']\n")
            assert await source.probe() == "success", source.prober.last_error
            page = render_store(store)
            assert page.value("probe_http_uncompressed_body_length", target="t") == len(text)
            assert page.value("probe_http_content_length", target="t") == len(body)
        finally:
            server.close()


# --- the head parser ------------------------------------------------------------------------------------------

TOKENS = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                 min_size=1, max_size=20)
VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                 max_size=40).map(lambda v: v.strip(" "))
FIELDS = st.lists(st.tuples(TOKENS, VALUES), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([(1, 0), (1, 1)]), st.integers(100, 999), st.text(alphabet="abcdefghij OK", max_size=20)
       .map(str.strip), FIELDS, st.booleans())
@example((1, 1), 200, "OK", [("Content-Length", "2")], True)
@example((1, 0), 204, "", [], False)
def test_a_well_formed_head_reads_back_what_was_written(version, status, reason, fields, crlf):
    end = "\r\n" if crlf else "\n"
    status_line = f"HTTP/{version[0]}.{version[1]} {status}" + (f" {reason}" if reason else "")
    text = status_line + end + "".join(f"{name}: {value}{end}" for name, value in fields) + end
    data = text.encode("latin-1")
    assert head_end(data) == len(data)
    for parse in (parse_head, _parse_head_slowly):
        head = parse(data)
        assert (head.version, head.status, head.reason) == (version, status, reason)
        assert head.fields == [(name.lower(), value) for name, value in fields]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
@example(b"HTTP/1.1 200 OK\r\n\x00: x\r\n\r\n")
@example(b"HTTP/1.1 200 OK\r\n x\r\n\r\n")
@example(b"HTTP/1.1 099 OK\r\n\r\n")
def test_any_bytes_give_a_head_or_a_reason_and_both_parsers_agree(data):
    """Whatever a server sends, the parser returns a head or raises InvalidResponse (never another error), and
    the fast path reads exactly what the careful one reads."""
    end = head_end(data)
    if end < 0:
        return
    try:
        fast = parse_head(data[:end])
    except InvalidResponse as exc:
        assert str(exc)
        with pytest.raises(InvalidResponse):
            _parse_head_slowly(data[:end])
        return
    slow = _parse_head_slowly(data[:end])
    assert (fast.version, fast.status, fast.reason, fast.fields) == (slow.version, slow.status, slow.reason,
                                                                    slow.fields)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 200))
def test_head_end_is_found_wherever_the_bytes_are_split(data, split):
    """Searching again from where the last search stopped (bytes arriving in pieces) finds the same end as one
    search over everything."""
    whole = head_end(data)
    first = head_end(data[:split])
    if first >= 0:
        assert first == whole
    else:
        assert head_end(data, max(0, min(split, len(data)) - 2)) == whole
