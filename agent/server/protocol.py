"""The agent's HTTP/1.1 server: a small asyncio protocol, so an agent that only reads logs never loads aiohttp
(about 16 MiB; it is imported only by sources that make HTTP requests).

What it speaks is what a scraper, a browser or curl needs from an exporter: GET, HEAD, POST and PUT with
small bodies, keep-alive and pipelining in order, HTTP/1.0, TLS by the listener. Everything else gets a clear
status and the connection is closed: a head over 16 KiB (431), a body over 64 KiB (413), a chunked request
body (501), anything that does not parse (400).

Every connection is held to its guard's rules (``Guard``: the listener's ``ConnectionGuard``) from the moment it
is accepted: the connection limit with eviction of idle and head-waiting connections, a deadline for each request
head (the first one's includes the TLS handshake), an idle timeout between requests, and client_allowed_sans
after the TLS handshake. The listener makes connections; this module knows only the ``Guard`` they obey, so
neither imports the other both ways.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
           503: "Service Unavailable", 505: "HTTP Version Not Supported"}


@dataclass
class Request:
    method: str
    path: str  # decoded, without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def host(self) -> str:
        return self.headers.get("host", "")

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, text: str, status: int = 200, **headers: str) -> Response:
        return cls(status, text.encode(), headers=dict(headers))

    @classmethod
    def html(cls, page: str, status: int = 200) -> Response:
        return cls(status, page.encode(), "text/html; charset=utf-8")

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        import json

        return cls(status, json.dumps(data).encode(), "application/json")


Handler = Callable[[Request], Awaitable[Response]]


class Guard(Protocol):
    """What a connection obeys, from the moment it is accepted: the listener's ``ConnectionGuard`` is one."""

    header_timeout: float  # seconds for each request head to arrive
    idle_timeout: float  # seconds a keep-alive connection may wait for its next request

    def on_close(self, reason: str) -> None:
        """Counts a connection closed for ``reason``."""

    def allowed_sans(self) -> list[str] | None:
        """The client certificate SANs allowed now, None for any."""

    def release(self, connection: Connection) -> None:
        """``connection`` is no longer open."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Connection(asyncio.Protocol):
    """One client connection: parses requests, hands them to ``handler`` one at a time, writes responses."""

    def __init__(self, handler: Handler, guard: Guard):
        self._handler = handler
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._socket: socket.socket | None = None  # accepted, not yet handed to a transport
        self._opening: asyncio.Task[None] | None = None  # making the transport (TLS: the handshake)
        self._buffer = bytearray()
        self._deadline: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.state = "head"  # head: waiting for a request head; busy: serving a request; idle: kept alive
        self.since = time.monotonic()

    def start(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        """Serve ``sock``, just accepted and admitted by the guard. The first head's deadline runs from now, so a
        client that is slow to finish its TLS handshake is closed like one slow to send its head."""
        self._socket = sock
        self._arm(self._guard.header_timeout, "header_timeout")
        self._opening = asyncio.get_running_loop().create_task(self._open(sock, ssl_context))

    async def _open(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._adopt, sock, ssl=ssl_context)
        except OSError:  # ssl.SSLError is one: plain HTTP on a TLS port, an untrusted client certificate
            self.close("tls_handshake")

    def _adopt(self) -> Connection:
        """The protocol factory, called as the transport takes the socket: from here the transport closes it."""
        self._socket = None
        return self

    # --- asyncio.Protocol -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a stream server: TCP or TLS
        self._transport = transport
        self._opening = None
        if self._closing:  # closed by the guard while the transport was being made
            transport.abort()
            return
        allowed = self._guard.allowed_sans()
        if allowed is not None and not _has_allowed_san(transport.get_extra_info("peercert"), allowed):
            self.close("tls_san")

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self.state == "idle":  # the next request begins: its head has header_timeout to arrive
            self._set_state("head")
            self._arm(self._guard.header_timeout, "header_timeout")
        self._buffer += data
        if len(self._buffer) > MAX_HEAD + MAX_BODY and self._transport is not None:
            self._transport.pause_reading()  # a client sending faster than we answer: wait for us
        if self._task is None:
            self._next()

    def eof_received(self) -> bool | None:
        if self._task is None:
            self.close(None)
        # keep the transport open until the request in flight is answered; TLS cannot stay half-open (asyncio
        # closes it, and warns if asked otherwise)
        return self._transport is not None and self._transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    # --- the guard's view ---------------------------------------------------------------------------------

    def close(self, reason: str | None) -> None:
        """Close the connection now; ``reason`` (if any) is counted by the guard."""
        self._forget()
        if reason is not None:
            self._guard.on_close(reason)
        if self._transport is not None:
            self._transport.abort()
            return
        if self._socket is not None:  # the transport was not made yet: the socket is still ours to close
            self._socket.close()
            self._socket = None
        if self._opening is not None:  # else the transport (mid TLS handshake) closes the socket as it stops
            self._opening.cancel()
            self._opening = None

    def _forget(self) -> None:
        """No more requests, no more deadlines, and no longer one of the guard's open connections."""
        self._closing = True
        self._disarm()
        self._guard.release(self)

    @property
    def flushed(self) -> bool:
        return self._transport is None or self._transport.get_write_buffer_size() == 0

    # --- requests -------------------------------------------------------------------------------------------

    def _next(self) -> None:
        """Start serving the next complete request in the buffer, if there is one."""
        try:
            request = self._parse()
        except _BadRequest as exc:
            self._write(Response.text(f"{exc}\n", exc.status), keep_alive=False, head=False)
            return
        if request is None:
            if len(self._buffer) > MAX_HEAD and b"\r\n\r\n" not in self._buffer[:MAX_HEAD]:
                self._write(Response.text("request head too large\n", 431), keep_alive=False, head=False)
            return
        self._set_state("busy")
        self._disarm()
        self._task = asyncio.get_running_loop().create_task(self._serve(request))

    def _parse(self) -> tuple[Request, bool] | None:
        end = self._buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        if end < 0:
            return None
        head = bytes(self._buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _BadRequest(505 if version.startswith("HTTP/") else 400, "only HTTP/1.0 and HTTP/1.1 are served")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or line[0] in " \t":
                raise _BadRequest(400, "malformed header line")
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _BadRequest(501, "chunked request bodies are not accepted")
        length = headers.get("content-length", "0")
        if not length.isdigit():
            raise _BadRequest(400, "invalid Content-Length")
        if int(length) > MAX_BODY:
            raise _BadRequest(413, f"request bodies are limited to {MAX_BODY} bytes")
        start = end + 4
        if len(self._buffer) < start + int(length):
            return None
        body = bytes(self._buffer[start:start + int(length)])
        del self._buffer[:start + int(length)]
        if self._transport is not None and len(self._buffer) <= MAX_HEAD + MAX_BODY:
            self._transport.resume_reading()
        path, _, query = target.partition("?")
        keep_alive = (headers.get("connection", "").lower() != "close" if version == "HTTP/1.1"
                      else headers.get("connection", "").lower() == "keep-alive")
        request = Request(method, urllib.parse.unquote(path), dict(urllib.parse.parse_qsl(query)), headers, body)
        return request, keep_alive

    async def _serve(self, parsed: tuple[Request, bool]) -> None:
        request, keep_alive = parsed
        try:
            response = await self._handler(request)
        except Exception:
            log.exception("error while answering a request", extra={"path": request.path[:200]})
            response = Response.text("internal server error\n", 500)
        self._task = None
        if self._closing:
            return
        self._write(response, keep_alive, head=request.method == "HEAD")
        if keep_alive and not self._closing:
            self._set_state("idle")
            self._arm(self._guard.idle_timeout, "idle_timeout")
            if self._buffer:  # a pipelined request is waiting
                self.data_received(b"")

    def _write(self, response: Response, keep_alive: bool, head: bool) -> None:
        if self._transport is None or self._closing:
            return
        reason = REASONS.get(response.status, "Unknown")
        lines = [f"HTTP/1.1 {response.status} {reason}", f"Content-Type: {response.content_type}",
                 f"Content-Length: {len(response.body)}"]
        lines += [f"{name}: {value}" for name, value in response.headers.items()]
        if not keep_alive:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # head and body in one send: a small page (most of them) then costs one system call and one TCP segment
        self._transport.writelines([head_bytes] if head else [head_bytes, response.body])
        if not keep_alive:
            self._forget()
            self._transport.close()  # after the buffered response is sent

    # --- timers ---------------------------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        self.state, self.since = state, time.monotonic()

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self.close, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def _has_allowed_san(peercert: dict[str, Any] | None, allowed: list[str]) -> bool:
    """exporter-toolkit's check: some DNS, IP, e-mail or URI SAN of the client certificate is in the list."""
    if not peercert:
        return False
    values = {value for kind, value in peercert.get("subjectAltName", ())
              if kind in ("DNS", "IP Address", "email", "URI")}
    return bool(values & set(allowed))
