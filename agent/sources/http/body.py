"""A response body: framed as HTTP/1.1 says (Content-Length, chunked, or until the target closes), decoded when
the module names a ``compression`` (as blackbox_exporter does: only then, and then always), and limited to
``body_size_limit`` bytes after decoding, so a small compressed answer cannot unpack into gigabytes.

The body is kept only when something reads it (regexes, JSON metrics); otherwise it is counted and dropped.
"""

from __future__ import annotations

import zlib
from typing import Any

from agent.sources.http.connection import Connection
from agent.sources.http.head import Head, InvalidResponse
from agent.sources.probe.result import ProbeFailed

MAX_CHUNK_LINE = 4096  # a chunk-size line (with extensions) or a trailer line longer than this is refused
MAX_TRAILERS = 64 * 1024
COMPRESSIONS = ("gzip", "deflate", "br", "identity")


class Sink:
    """Where body bytes go: decoded if asked, counted, kept if wanted, refused past the limit."""

    __slots__ = ("limit", "keep", "length", "parts", "decoder", "compression")

    def __init__(self, limit: int, keep: bool, compression: str | None):
        self.limit = limit
        self.keep = keep
        self.length = 0  # decoded bytes so far
        self.parts: list[bytes] = []
        self.compression = compression
        self.decoder: Any = None  # made on the first bytes (deflate's format is told by them)

    def feed(self, data: bytes | bytearray) -> None:
        if self.compression is not None:
            data = self._decode(data)
        self.length += len(data)
        if self.length > self.limit:
            raise ProbeFailed("body_too_large", f"body longer than {self.limit} bytes")
        if self.keep and data:
            self.parts.append(bytes(data))

    def finish(self) -> None:
        """The body ended: a compressed stream must have ended too."""
        if self.compression is None:
            return
        if self.decoder is None:
            raise InvalidResponse(f"the body is empty, not {self.compression}")
        if self.compression == "br":
            if not self.decoder.is_finished():
                raise InvalidResponse("the br body ends before its compressed stream")
            return
        tail = self.decoder.flush()
        if tail:
            self._count(tail)
        if not self.decoder.eof:
            raise InvalidResponse(f"the {self.compression} body ends before its compressed stream")

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)

    def _count(self, data: bytes) -> None:
        self.length += len(data)
        if self.length > self.limit:
            raise ProbeFailed("body_too_large", f"body longer than {self.limit} bytes (decoded)")
        if self.keep:
            self.parts.append(data)

    def _decode(self, data: bytes | bytearray) -> bytes:
        if self.decoder is None:
            self.decoder = _decoder(self.compression or "", bytes(data[:2]))
        room = self.limit - self.length + 1  # one byte past the limit is enough to know it is exceeded
        try:
            if self.compression == "br":
                out = self.decoder.process(bytes(data), output_buffer_limit=room)
                while len(out) < room and not self.decoder.can_accept_more_data():
                    out += self.decoder.process(b"", output_buffer_limit=room - len(out))
            else:
                out = self.decoder.decompress(data, room)
                while self.decoder.eof and self.decoder.unused_data and self.compression == "gzip":
                    # another gzip member follows (Go's reader reads concatenated members as one stream)
                    rest = self.decoder.unused_data
                    self.decoder = zlib.decompressobj(31)
                    out += self.decoder.decompress(rest, max(1, room - len(out)))
        except zlib.error as exc:
            raise InvalidResponse(f"the body is not {self.compression}: {exc}") from None
        except Exception as exc:  # brotli.error has no stable base class across its versions
            if self.compression == "br":
                raise InvalidResponse(f"the body is not br: {exc}") from None
            raise
        if self.compression != "br" and self.decoder.unconsumed_tail:
            raise ProbeFailed("body_too_large", f"body longer than {self.limit} bytes (decoded)")
        return out


def _decoder(compression: str, start: bytes) -> Any:
    if compression == "gzip":
        return zlib.decompressobj(31)
    if compression == "deflate":
        # RFC 9110's deflate is zlib-wrapped; some servers (and Go's test server) send raw DEFLATE: the first two
        # bytes tell them apart (a zlib header is method 8 and a multiple of 31)
        wrapped = len(start) == 2 and start[0] & 0x0F == 8 and (start[0] << 8 | start[1]) % 31 == 0
        return zlib.decompressobj(15 if wrapped else -15)
    if compression == "br":
        import brotli  # loaded only by a module that asks for br

        return brotli.Decompressor()
    raise ValueError(f"unknown compression {compression!r}")


def content_length(head: Head, method: str) -> int | None:
    """The body length the head announces, None when it does not (chunked, or until the target closes); raises
    InvalidResponse for a Content-Length that is not one number."""
    if head.status in (204, 304) or 100 <= head.status < 200:
        return 0
    if method == "HEAD":  # the length a GET would have had, as Go reports it
        return declared_length(head)
    if head.get("transfer-encoding") is not None:
        return None
    return declared_length(head)


def declared_length(head: Head) -> int | None:
    """The Content-Length field's value (several equal ones are one, as Go reads them)."""
    values = [value for name, value in head.fields if name == "content-length"]
    if not values:
        return None
    if len(values) == 1 and values[0].isdigit() and len(values[0]) < 19:
        return int(values[0])
    distinct = {part.strip() for value in values for part in value.split(",")}
    if len(distinct) != 1:
        raise InvalidResponse(f"conflicting Content-Length values: {', '.join(sorted(distinct))[:100]}")
    (text,) = distinct
    if not text.isdigit() or len(text) > 18:
        raise InvalidResponse(f"Content-Length {text[:40]!r} is not a length")
    return int(text)


async def read_body(connection: Connection, head: Head, method: str, sink: Sink) -> None:
    """Read the body ``head`` announces into ``sink``."""
    if method == "HEAD" or head.status in (204, 304) or 100 <= head.status < 200:
        return
    coding = head.get("transfer-encoding")
    if coding is not None:
        codings = [part.strip().lower() for value in head.values("transfer-encoding") for part in value.split(",")]
        if codings != ["chunked"]:  # Go's client reads chunked only
            raise InvalidResponse(f"unsupported Transfer-Encoding {', '.join(codings)[:60]!r}")
        await _read_chunked(connection, sink)
    else:
        length = declared_length(head)
        if length is None:
            await _read_until_close(connection, sink)
        else:
            if sink.compression is None and length > sink.limit:
                raise ProbeFailed("body_too_large", f"body longer than {sink.limit} bytes (Content-Length {length})")
            await _read_exactly(connection, length, sink)
    sink.finish()


async def _read_exactly(connection: Connection, length: int, sink: Sink) -> None:
    remaining = length
    buffer = connection.buffer
    while True:
        if len(buffer) >= remaining:
            if remaining:
                sink.feed(buffer[:remaining])
                del buffer[:remaining]
            return
        if buffer:
            remaining -= len(buffer)
            sink.feed(buffer)
            buffer.clear()
        if connection.closed:
            raise ConnectionResetError(0, f"the target closed the connection {length - remaining} bytes into a "
                                          f"body of {length}")
        await connection.more()


async def _read_until_close(connection: Connection, sink: Sink) -> None:
    buffer = connection.buffer
    while True:
        if buffer:
            sink.feed(buffer)
            buffer.clear()
        if connection.closed:
            if isinstance(connection.error, OSError):
                raise connection.error
            return
        await connection.more()


async def _line(connection: Connection, what: str) -> bytes:
    """The next line (without its line end) of a chunked body."""
    buffer = connection.buffer
    while True:
        end = buffer.find(b"\n")
        if end >= 0:
            if end > MAX_CHUNK_LINE:
                raise InvalidResponse(f"{what} longer than {MAX_CHUNK_LINE} bytes")
            line = bytes(buffer[:end]).removesuffix(b"\r")
            del buffer[:end + 1]
            return line
        if len(buffer) > MAX_CHUNK_LINE:
            raise InvalidResponse(f"{what} longer than {MAX_CHUNK_LINE} bytes")
        if connection.closed:
            raise ConnectionResetError(0, f"the target closed the connection in the middle of a chunked body "
                                          f"(waiting for a {what})")
        await connection.more()


async def _read_chunked(connection: Connection, sink: Sink) -> None:
    while True:
        line = await _line(connection, "chunk size line")
        size_text = line.split(b";", 1)[0].strip(b" \t")
        if not size_text or len(size_text) > 15 or size_text.strip(b"0123456789abcdefABCDEF"):
            raise InvalidResponse(f"chunk size {size_text[:40].decode('latin-1')!r} is not a hexadecimal number")
        size = int(size_text, 16)
        if size == 0:
            break
        await _read_exactly(connection, size, sink)
        if await _line(connection, "chunk end"):
            raise InvalidResponse(f"a chunk is longer than its size line says ({size} bytes)")
    trailers = 0
    while line := await _line(connection, "trailer line"):  # trailer fields, up to the blank line
        trailers += len(line)
        if trailers > MAX_TRAILERS:
            raise InvalidResponse(f"trailer fields longer than {MAX_TRAILERS // 1024} KiB")
