"""The gRPC health check on the wire: one HTTP/2 stream carrying ``grpc.health.v1.Health/Check``.

What a probe sends is made once per source (the client preface, SETTINGS, the request's header block, the DATA
frame with the HealthCheckRequest) and written in one piece; only the ``grpc-timeout`` field is added per probe.
Header fields are HPACK literals without indexing and without Huffman coding, which every decoder accepts.

What comes back is read frame by frame (RFC 9113): the response HEADERS (with CONTINUATION, padding and priority
fields), the DATA with the HealthCheckResponse, the trailers with ``grpc-status`` and ``grpc-message``; a
RST_STREAM or a GOAWAY that leaves our stream unanswered ends the call. Header blocks are decoded with the
hpack package, once for each sequence of blocks a server sends (HeaderBlocks): it answers every probe alike.
Flow control does not matter for a response of a few bytes: nothing is sent after the request but the SETTINGS
acknowledgement.
"""

from __future__ import annotations

from urllib.parse import unquote

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
STREAM = 1  # the one stream of a probe
MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE: its default both ways (we announce no other)
MAX_HEADER_BLOCK = 64 * 1024  # a response's header block beyond this is refused
MAX_MESSAGE = 64 * 1024  # a HealthCheckResponse is a few bytes
PATH = b"/grpc.health.v1.Health/Check"
SETTINGS_ACK = bytes((0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0))
# grpc status codes by value (google.rpc.Code)
STATUS_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
OK, UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 0, 2, 4, 12, 13, 14
# The gRPC status of an HTTP status without grpc-status (gRPC's "HTTP to gRPC Status Code Mapping")
HTTP_STATUS = {400: INTERNAL, 401: 16, 403: 7, 404: UNIMPLEMENTED, 429: UNAVAILABLE, 502: UNAVAILABLE,
               503: UNAVAILABLE, 504: UNAVAILABLE}
ERROR_CODES = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
               "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR",
               "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")


class Broken(Exception):
    """The connection or the stream failed below gRPC: a protocol violation, a reset stream, a GOAWAY."""


class CallFailed(Exception):
    """The call ended with a gRPC status other than OK."""

    def __init__(self, code: int, message: str = ""):
        super().__init__(code, message)
        self.code = code
        self.message = message

    @property
    def name(self) -> str:
        return STATUS_NAMES[self.code] if 0 <= self.code < len(STATUS_NAMES) else f"status {self.code}"


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _integer(value: int, prefix_bits: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with the first byte's flag bits zero."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, with a literal name, neither Huffman-coded (RFC 7541 6.2.2)."""
    return b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Request:
    """What one source sends to one target: ``start`` (preface, SETTINGS), the header block without the
    timeout, and the DATA frame."""

    __slots__ = ("start", "fields", "data")

    def __init__(self, authority: str, tls: bool, metadata: tuple[tuple[str, str], ...], service: str):
        # SETTINGS: ENABLE_PUSH 0 (nothing is pushed to a probe)
        self.start = PREFACE + frame(SETTINGS, 0, 0, b"\x00\x02\x00\x00\x00\x00")
        fields = [(b":method", b"POST"), (b":scheme", b"https" if tls else b"http"), (b":path", PATH),
                  (b":authority", authority.encode()), (b"content-type", b"application/grpc"),
                  (b"te", b"trailers"), *((name.encode(), value.encode()) for name, value in metadata)]
        self.fields = b"".join(literal(name, value) for name, value in fields)
        encoded = service.encode()
        message = b"\x0a" + _varint(len(encoded)) + encoded if encoded else b""  # field 1 (string): service
        self.data = frame(DATA, END_STREAM, STREAM, b"\x00" + len(message).to_bytes(4, "big") + message)

    def bytes(self, timeout: float) -> bytes:
        """Everything, with ``grpc-timeout`` (whole milliseconds, at least 1) in the header block."""
        block = self.fields + literal(b"grpc-timeout", b"%dm" % max(1, int(timeout * 1000)))
        if len(block) <= MAX_FRAME:
            headers = frame(HEADERS, END_HEADERS, STREAM, block)
        else:  # metadata beyond a frame: the rest in CONTINUATION frames
            pieces = [block[i:i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)]
            headers = frame(HEADERS, 0, STREAM, pieces[0]) + b"".join(
                frame(CONTINUATION, END_HEADERS if i == len(pieces) - 1 else 0, STREAM, piece)
                for i, piece in enumerate(pieces[1:], 1))
        return self.start + headers + self.data


class HeaderBlocks:
    """Decoded header blocks, by the blocks of the connection so far: a connection's HPACK state starts empty, so
    the same blocks in the same order always decode to the same fields, and a server answers every probe with
    the same few blocks. Shared by the probes of a source; a block seen for the first time is decoded by hpack."""

    __slots__ = ("known",)
    KEPT = 256

    def __init__(self) -> None:
        self.known: dict[tuple[bytes, ...], dict[str, str]] = {}

    def decode(self, earlier: tuple[bytes, ...], block: bytes) -> dict[str, str]:
        key = (*earlier, block)
        fields = self.known.get(key)
        if fields is None:
            decoder = hpack.Decoder()
            decoder.max_allowed_table_size = 4096
            try:
                for seen in earlier:
                    decoder.decode(seen)
                fields = {str(name): str(value) for name, value in decoder.decode(block)}
            except (hpack.HPACKError, UnicodeDecodeError, IndexError, ValueError) as exc:
                raise Broken(f"an undecodable header block ({type(exc).__name__}: {exc})") from None
            if len(self.known) >= self.KEPT:
                self.known.clear()
            self.known[key] = fields
        return fields


class Response:
    """The server's side of a probe's connection, fed frame by frame; ``done`` once the call ended (or raises
    Broken / CallFailed). ``status`` is the HealthCheckResponse's serving status."""

    __slots__ = ("blocks", "decoded", "headers", "message", "block", "block_flags", "settled", "done", "status")

    def __init__(self, blocks: HeaderBlocks) -> None:
        self.blocks = blocks
        self.decoded: tuple[bytes, ...] = ()  # the header blocks so far
        self.headers: dict[str, str] | None = None
        self.message = bytearray()
        self.block: bytearray | None = None  # a header block awaiting its CONTINUATION frames
        self.block_flags = 0
        self.settled = False  # the server's SETTINGS arrived (its preface)
        self.done = False
        self.status = 0

    def receive(self, kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        """One frame; returns what to send back (b"" mostly, a SETTINGS acknowledgement once)."""
        if not self.settled:
            if kind != SETTINGS or flags & ACK or stream:
                raise Broken("the server did not start with HTTP/2 SETTINGS (not an HTTP/2 server?)")
            self.settled = True
        if self.block is not None:
            if kind != CONTINUATION or stream != STREAM:
                raise Broken("a header block was interrupted by another frame")
            self.block += payload
            if len(self.block) > MAX_HEADER_BLOCK:
                raise Broken(f"a header block longer than {MAX_HEADER_BLOCK // 1024} KiB")
            if flags & END_HEADERS:
                block, self.block = self.block, None
                self._header_block(bytes(block), self.block_flags)
            return b""
        if kind == SETTINGS:
            if stream or len(payload) % 6:
                raise Broken("a malformed SETTINGS frame")
            return b"" if flags & ACK else SETTINGS_ACK
        if kind == HEADERS or kind == DATA:
            self._stream_frame(kind, flags, stream, payload)
            return b""
        if kind == RST_STREAM:
            if len(payload) != 4:
                raise Broken("a malformed RST_STREAM frame")
            if stream == STREAM:
                raise Broken(f"the server reset the stream ({_error_name(payload)})")
        elif kind == GOAWAY:
            _goaway(stream, payload)
        elif kind == CONTINUATION:
            raise Broken("a CONTINUATION frame without a header block")
        elif kind == PUSH_PROMISE:
            raise Broken("a PUSH_PROMISE although push is disabled")
        return b""  # PING, WINDOW_UPDATE, PRIORITY, extensions: nothing a probe needs

    def _stream_frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if stream != STREAM:
            raise Broken(f"a {'HEADERS' if kind == HEADERS else 'DATA'} frame on stream {stream}")
        payload = _unpadded(payload, flags)
        if kind == DATA:
            self._data(payload, flags)
            return
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise Broken("a HEADERS frame too short for its priority fields")
            payload = payload[5:]
        if flags & END_HEADERS:
            self._header_block(payload, flags)
        else:
            self.block, self.block_flags = bytearray(payload), flags

    def _header_block(self, block: bytes, flags: int) -> None:
        decoded = self.blocks.decode(self.decoded, block)
        self.decoded += (block,)
        if self.headers is None:  # the response headers (or trailers-only)
            self.headers = decoded
            http_status = decoded.get(":status", "")
            if http_status.startswith("1"):  # informational: the real headers follow
                self.headers = None
                return
            if not flags & END_STREAM:
                if http_status != "200":
                    raise CallFailed(HTTP_STATUS.get(int(http_status) if http_status.isdigit() else 0, UNKNOWN),
                                     f"HTTP status {http_status or 'missing'}")
                if not decoded.get("content-type", "").startswith("application/grpc"):
                    raise CallFailed(UNKNOWN, f"content-type {decoded.get('content-type', 'missing')!r}")
                return
        elif not flags & END_STREAM:
            raise Broken("a second header block that does not end the stream")
        self._trailers(decoded)

    def _data(self, payload: bytes, flags: int) -> None:
        if self.headers is None:
            raise Broken("DATA before the response headers")
        self.message += payload
        if len(self.message) > MAX_MESSAGE:
            raise CallFailed(INTERNAL, f"a response message longer than {MAX_MESSAGE // 1024} KiB")
        if flags & END_STREAM:
            self._trailers({})  # no trailers: no grpc-status

    def _trailers(self, trailers: dict[str, str]) -> None:
        self.done = True
        code_text = trailers.get("grpc-status")
        if code_text is None:
            http_status = (self.headers or {}).get(":status", "")
            if http_status != "200":
                raise CallFailed(HTTP_STATUS.get(int(http_status) if http_status.isdigit() else 0, UNKNOWN),
                                 f"HTTP status {http_status or 'missing'}")
            raise CallFailed(UNKNOWN, "the response has no grpc-status")
        if not code_text.isdigit():
            raise CallFailed(UNKNOWN, f"grpc-status {code_text[:20]!r}")
        code = int(code_text)
        if code != OK:
            raise CallFailed(code, unquote(trailers.get("grpc-message", "")))
        self.status = _serving_status(bytes(self.message))


def _goaway(stream: int, payload: bytes) -> None:
    if len(payload) < 8 or stream:
        raise Broken("a malformed GOAWAY frame")
    last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
    if last < STREAM:  # our call was not taken: it will never be answered
        debug = payload[8:200].decode("utf-8", "replace")
        raise Broken(f"the server went away before taking the call ({_error_name(payload[4:8])}"
                     f"{': ' + debug if debug else ''})")
    # else a graceful shutdown: our call is still answered


def _unpadded(payload: bytes, flags: int) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise Broken("a frame whose padding is longer than the frame")
    return payload[1:len(payload) - payload[0]]


def _error_name(code: bytes) -> str:
    value = int.from_bytes(code, "big")
    return ERROR_CODES[value] if value < len(ERROR_CODES) else f"error code {value}"


def _serving_status(data: bytes) -> int:
    """The serving status (field 1, an enum) of the one length-prefixed HealthCheckResponse in ``data``."""
    if len(data) < 5:
        raise CallFailed(INTERNAL, "no response message" if not data else "a truncated response message")
    if data[0]:
        raise CallFailed(INTERNAL, "a compressed response message (none was asked for)")
    length = int.from_bytes(data[1:5], "big")
    if len(data) != 5 + length:
        raise CallFailed(INTERNAL, "a truncated response message" if len(data) < 5 + length
                         else "more than one response message")
    status, at, end = 0, 5, 5 + length
    try:
        while at < end:
            key, at = _read_varint(data, at)
            wire = key & 7
            if wire == 0:
                value, at = _read_varint(data, at)
                if key >> 3 == 1:
                    status = value
            elif wire == 2:
                size, at = _read_varint(data, at)
                at += size
            elif wire == 1 or wire == 5:
                at += 8 if wire == 1 else 4
            else:
                raise ValueError(f"wire type {wire}")
        if at != end:
            raise ValueError("a field runs past the message")
    except (ValueError, IndexError) as exc:
        raise CallFailed(INTERNAL, f"an invalid HealthCheckResponse ({exc})") from None
    return status


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 128:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")
