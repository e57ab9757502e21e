"""The gRPC prober's HTTP/2 client against a raw-socket server that answers with exactly the frames a test
scripts: the request as it is on the wire, a response split with CONTINUATION, padding and priority fields,
trailers-only errors, and the failures below gRPC (garbage, GOAWAY, RST_STREAM, an oversized frame, a close in
the middle): each with the failure reason and the series a user reads."""

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import hpack
import pytest

from agent.sources.grpc.wire import Broken, HeaderBlocks, Request
from tests.sources.probers import Probed

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0, 1, 3, 4, 6, 7, 9
END_STREAM, END_HEADERS, PADDED, PRIORITY = 0x1, 0x4, 0x8, 0x20


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def read_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    frames, at = [], 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at:at + 3], "big")
        frames.append((data[at + 3], data[at + 4], int.from_bytes(data[at + 5:at + 9], "big"),
                       data[at + 9:at + 9 + length]))
        at += 9 + length
    return frames


def block(fields: list[tuple[str, str]]) -> bytes:
    return hpack.Encoder().encode(fields)  # Huffman-coded and indexed, as real servers send them


def message(status: int) -> bytes:
    body = b"\x08" + bytes((status,))  # field 1 (varint): serving status
    return b"\x00" + struct.pack(">I", len(body)) + body


SERVER_SETTINGS = frame(SETTINGS, 0, 0, struct.pack(">HI", 3, 100))  # MAX_CONCURRENT_STREAMS 100
OK_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]


def answer(status: int = 1) -> bytes:
    return (SERVER_SETTINGS + frame(HEADERS, END_HEADERS, 1, block(OK_HEADERS)) + frame(DATA, 0, 1, message(status))
            + frame(HEADERS, END_HEADERS | END_STREAM, 1, block([("grpc-status", "0")])))


class RawServer:
    """Accepts connections on 127.0.0.1; reads each request up to its DATA frame that ends the stream, keeps it
    in ``requests``, writes ``reply`` and closes."""

    def __init__(self, reply: bytes):
        self.reply = reply
        self.requests: list[bytes] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.target = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while not any(kind == DATA and flags & END_STREAM for kind, flags, _, _ in
                              read_frames(data[len(PREFACE):])):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                conn.sendall(self.reply)
                try:
                    conn.shutdown(socket.SHUT_WR)
                    conn.recv(65536)  # until the client closes (the SETTINGS acknowledgement may come first)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[bytes], RawServer]]:
    servers: list[RawServer] = []

    def start(reply: bytes) -> RawServer:
        servers.append(RawServer(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


async def test_the_request_on_the_wire_and_a_response_in_continuation_and_padded_frames(raw_server, context):
    headers = block([*OK_HEADERS, ("server", "x" * 40)])
    reply = (SERVER_SETTINGS + frame(PING, 0, 0, b"12345678")
             + frame(HEADERS, PADDED | PRIORITY, 1, bytes((3,)) + b"\x00\x00\x00\x00\x10" + headers[:7] + b"\0" * 3)
             + frame(CONTINUATION, 0, 1, headers[7:20]) + frame(CONTINUATION, END_HEADERS, 1, headers[20:])
             + frame(DATA, PADDED, 1, b"\x02" + message(1)[:4] + b"\0\0") + frame(DATA, 0, 1, message(1)[4:])
             + frame(HEADERS, END_HEADERS | END_STREAM, 1, block([("grpc-status", "0"), ("grpc-message", "")])))
    server = raw_server(reply)
    ours = Probed(context, "grpc", server.target, {"service": "app", "metadata": {"authorization": "Bearer t"}})
    assert await ours.probe() == "success", ours.reason
    page = ours.page()
    assert page.value("probe_grpc_healthcheck_response", serving_status="SERVING") == 1
    assert page.value("probe_grpc_status_code") == 0

    sent = server.requests[0]
    assert sent.startswith(PREFACE)
    frames = read_frames(sent[len(PREFACE):])
    assert [(kind, flags, stream) for kind, flags, stream, _ in frames] == [
        (SETTINGS, 0, 0), (HEADERS, END_HEADERS, 1), (DATA, END_STREAM, 1)]
    fields = dict(hpack.Decoder().decode(frames[1][3]))
    timeout = fields.pop("grpc-timeout")
    assert timeout.endswith("m") and 0 < int(timeout[:-1]) <= 2000
    assert fields == {":method": "POST", ":scheme": "http", ":path": "/grpc.health.v1.Health/Check",
                      ":authority": server.target, "content-type": "application/grpc", "te": "trailers",
                      "authorization": "Bearer t"}
    assert frames[2][3] == b"\x00\x00\x00\x00\x05\x0a\x03app"  # HealthCheckRequest{service: "app"}


async def test_a_not_serving_answer_and_a_trailers_only_error(raw_server, context):
    not_serving = Probed(context, "grpc", raw_server(answer(status=2)).target, {})
    assert await not_serving.probe() == "not_serving"
    assert not_serving.reason == "the server answers NOT_SERVING for the whole server"

    trailers_only = SERVER_SETTINGS + frame(HEADERS, END_HEADERS | END_STREAM, 1, block(
        [*OK_HEADERS, ("grpc-status", "12"), ("grpc-message", "no%20health%20service")]))
    unimplemented = Probed(context, "grpc", raw_server(trailers_only).target, {})
    assert await unimplemented.probe() == "grpc_status"
    assert unimplemented.reason == "the health check failed with status UNIMPLEMENTED: no health service"
    assert unimplemented.page().value("probe_grpc_status_code") == 12

    http_error = SERVER_SETTINGS + frame(HEADERS, END_HEADERS | END_STREAM, 1, block([(":status", "503")]))
    unavailable = Probed(context, "grpc", raw_server(http_error).target, {})
    assert await unavailable.probe() == "grpc_status"
    assert unavailable.reason == "the health check failed with status UNAVAILABLE: HTTP status 503"
    assert unavailable.page().value("probe_grpc_status_code") == 14


async def test_a_server_that_says_the_deadline_passed_is_a_timeout(raw_server, context):
    deadline_exceeded = SERVER_SETTINGS + frame(HEADERS, END_HEADERS | END_STREAM, 1, block(
        [*OK_HEADERS, ("grpc-status", "4"), ("grpc-message", "too slow")]))
    ours = Probed(context, "grpc", raw_server(deadline_exceeded).target, {})
    assert await ours.probe() == "timeout"
    assert ours.reason == "no answer to the health check within 2s"  # what our own deadline says, word for word
    assert ours.page().value("probe_grpc_status_code") == 4


@pytest.mark.parametrize(("reply", "reason"), [
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "not an HTTP/2 server"),
    (SERVER_SETTINGS + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0) + b"shutting down"),
     "the server went away before taking the call (NO_ERROR: shutting down)"),
    (SERVER_SETTINGS + frame(RST_STREAM, 0, 1, struct.pack(">I", 7)), "the server reset the stream (REFUSED_STREAM)"),
    (SERVER_SETTINGS + frame(DATA, 0, 1, b"\0" * 16385), "a frame longer than the 16 KiB allowed"),
    (SERVER_SETTINGS + frame(HEADERS, 0, 1, block(OK_HEADERS)[:2]) + frame(DATA, 0, 1, message(1)),
     "a header block was interrupted by another frame"),
    (SERVER_SETTINGS + frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff"), "an undecodable header block"),
    (answer()[:-20], "the server closed the connection before the call ended"),
], ids=["http1", "goaway", "rst_stream", "oversized", "interrupted", "hpack", "closed"])
async def test_failures_below_grpc(raw_server, context, reply, reason):
    ours = Probed(context, "grpc", raw_server(reply).target, {})
    assert await ours.probe() == "connection_error"
    assert ours.reason.startswith("the connection broke: ") and reason in ours.reason, ours.reason
    page = ours.page()
    assert page.value("probe_success") == 0
    assert page.value("probe_grpc_status_code") == 14  # UNAVAILABLE, as for a connection that breaks
    assert page.value("probe_grpc_healthcheck_response", serving_status="SERVING") == 0


async def test_a_graceful_goaway_still_answers_the_call(raw_server, context):
    reply = SERVER_SETTINGS + frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)) + answer()[len(SERVER_SETTINGS):]
    ours = Probed(context, "grpc", raw_server(reply).target, {})
    assert await ours.probe() == "success", ours.reason


def test_metadata_beyond_a_frame_goes_in_continuation_frames():
    request = Request("h:1", False, (("x-big", "v" * 40000),), "")
    frames = read_frames(request.bytes(1.0)[len(PREFACE):])
    assert [(kind, flags) for kind, flags, _, _ in frames] == [
        (SETTINGS, 0), (HEADERS, 0), (CONTINUATION, 0), (CONTINUATION, END_HEADERS), (DATA, END_STREAM)]
    assert max(len(payload) for *_, payload in frames) <= 16384
    fields = dict(hpack.Decoder(max_header_list_size=1 << 20).decode(b"".join(p for *_, p in frames[1:4])))
    assert fields["x-big"] == "v" * 40000 and fields["grpc-timeout"] == "1000m"
    assert frames[4][3] == b"\x00\x00\x00\x00\x00"  # HealthCheckRequest{} for the whole server


def test_header_blocks_decode_by_what_came_before_on_the_connection():
    """A server's second block may name a field its first one put in the HPACK table; the same second block
    after another first one means something else. The shared decoded blocks keep them apart."""
    blocks = HeaderBlocks()

    def connection(first: list[tuple[str, str]], second: list[tuple[str, str]]) -> tuple[bytes, bytes]:
        encoder = hpack.Encoder()
        return encoder.encode(first), encoder.encode(second)

    a1, a2 = connection([("grpc-status", "0")], [("grpc-status", "0")])
    b1, b2 = connection([("grpc-status", "5")], [("grpc-status", "5")])
    assert a2 == b2  # both an index into the dynamic table
    for _ in range(2):  # decoded, then known
        assert blocks.decode((), a1) == {"grpc-status": "0"}
        assert blocks.decode((a1,), a2) == {"grpc-status": "0"}
        assert blocks.decode((b1,), b2) == {"grpc-status": "5"}
    with pytest.raises(Broken, match="undecodable header block"):
        blocks.decode((), a2)  # an index into a table that is empty on a new connection
