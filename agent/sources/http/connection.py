"""One probe's connection: the stream every probe client reads (agent.sources.probe.stream), with the moments
blackbox_exporter's phases need (connection made, TLS done, first response byte).

Every probe opens its own connection (as blackbox does), so connect and TLS are measured and a stale
keep-alive connection cannot hide a dead target; the request asks the server to close it after the response
(``Connection: close``). Nothing here retries or re-sends: a failure is the probe's result.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from typing import Any

from agent.sources.http.head import MAX_HEAD_BYTES, Head, InvalidResponse, head_end, parse_head
from agent.sources.probe.result import ProbeFailed
from agent.sources.probe.stream import Stream


class Connection(Stream):
    """A probe's HTTP/1.1 connection: the stream, and when the first byte of a response arrived."""

    __slots__ = ("first_byte",)

    def __init__(self) -> None:
        super().__init__()
        self.first_byte = 0.0  # perf_counter when the first byte of a response arrived (0: none yet)

    def data_received(self, data: bytes) -> None:
        if not self.first_byte:
            self.first_byte = time.perf_counter()
        super().data_received(data)

    async def read_head(self) -> Head:
        """The next response head (whatever follows it stays in the buffer)."""
        searched = 0
        while True:
            end = head_end(self.buffer, searched)
            if end >= 0:
                break
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise InvalidResponse(f"response head longer than {MAX_HEAD_BYTES // 1024} KiB")
            searched = max(0, len(self.buffer) - 2)
            if self.closed:
                if self.buffer:
                    raise InvalidResponse(f"the target closed the connection in the middle of the response head "
                                          f"({len(self.buffer)} bytes)")
                raise ConnectionResetError(0, "the target closed the connection without a response")
            await self.more()
        if end > MAX_HEAD_BYTES:
            raise InvalidResponse(f"response head longer than {MAX_HEAD_BYTES // 1024} KiB")
        head = parse_head(bytes(self.buffer[:end]))
        del self.buffer[:end]
        return head


def shown_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def connect(ip: str, port: int, address: str, source_ip: str | None = None) -> Connection:
    """A TCP connection to ``ip`` (an IP address); ``address`` (host:port as the URL names it) words a failure.
    The socket is made here rather than by create_connection, which would look the address up again."""
    connection = Connection()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source_ip:
            sock.bind((source_ip, 0))
        await loop.sock_connect(sock, (ip, port))
        await loop.create_connection(lambda: connection, sock=sock)
    except OSError as exc:
        sock.close()
        result = "connection_refused" if isinstance(exc, ConnectionRefusedError) else "connection_error"
        raise ProbeFailed(result, f"cannot connect to {address}: {_strerror(exc)}") from None
    except BaseException:
        sock.close()
        raise
    return connection


async def start_tls(connection: Connection, context: ssl.SSLContext, server_hostname: str | None,
                    address: str) -> Any:
    """The TLS handshake on ``connection``; returns the handshaken ssl.SSLObject (its certificates and
    version are the TLS series)."""
    try:
        transport = await connection.start_tls(context, server_hostname)
    except ssl.SSLCertVerificationError as exc:
        raise ProbeFailed("tls_error", f"certificate of {address} not accepted: {exc.verify_message or exc.reason}"
                          ) from None
    except ssl.SSLError as exc:
        raise ProbeFailed("tls_error", f"TLS handshake with {address} failed: {exc.reason or exc}") from None
    except (ConnectionError, EOFError) as exc:
        reason = _strerror(exc) if isinstance(exc, OSError) else "the target closed the connection"
        raise ProbeFailed("connection_error", f"TLS handshake with {address} failed: {reason}") from None
    if transport is None:  # the connection was lost as the handshake ended
        raise ProbeFailed("connection_error", f"TLS handshake with {address} failed: the target closed the "
                                              "connection")
    return transport.get_extra_info("ssl_object")


def _strerror(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc) or type(exc).__name__)
