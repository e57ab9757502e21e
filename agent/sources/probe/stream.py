"""The receiving side of a probe's connection, for the clients that read a stream themselves (HTTP/1.1 and the
gRPC health check's HTTP/2): an asyncio protocol that buffers what the target sends and lets the prober wait
for more.

The prober parses ``buffer`` in place and deletes what it has read. While more than ``READ_PAUSE_BYTES`` sit
unread the socket is not read (``pause_reading``), so a target sending faster than the prober parses cannot
fill the agent's memory; ``more`` reads on again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a plain-HTTP prober never loads ssl
    import ssl

READ_PAUSE_BYTES = 1024 * 1024  # unread bytes beyond which the socket is not read until the prober catches up


class Stream(asyncio.Protocol):
    """A connection's received bytes (``buffer``) and state; ``transport`` is where requests are written."""

    __slots__ = ("transport", "buffer", "closed", "error", "_waiter", "_paused", "_socket_transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False  # the target closed its side (or the connection was lost)
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._socket_transport: asyncio.BaseTransport | None = None  # the first (TLS may wrap it: start_tls)

    # --- asyncio.Protocol ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport: create_connection's
        self._socket_transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_PAUSE_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()
        if self._socket_transport is not None:
            release(self._socket_transport)  # under TLS too: the socket's, not the TLS one over it

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- what the prober uses ------------------------------------------------------------------------------

    async def more(self) -> None:
        """Wait until more bytes arrived or the connection closed; raises ``closed_error()`` when it had closed."""
        if self.closed:
            raise self.closed_error()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def closed_error(self) -> Exception:
        """What to raise when more was needed and the target had closed: the connection's error if it broke, else
        ``closed_early()``."""
        return self.error if isinstance(self.error, OSError) else self.closed_early()

    def closed_early(self) -> Exception:
        """The target closed its side while more was needed (a client that knows what that means says so)."""
        return ConnectionResetError(0, "the target closed the connection")

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str | None) -> asyncio.Transport | None:
        """The TLS handshake over this stream's socket transport; ``transport`` becomes the TLS one, returned (None:
        the connection was lost as the handshake ended). A prober connects first and shakes hands here, never with
        ``create_connection(ssl=)``: that hides the socket's transport under its TLS one, out of ``release``'s
        reach."""
        plain = self.transport
        assert plain is not None, "connection_made gave it"
        try:
            tls = await asyncio.get_running_loop().start_tls(plain, self, context, server_hostname=server_hostname)
        except BaseException:
            if plain.is_closing():  # start_tls closed it, and a failed handshake never reaches connection_lost
                release(plain)
            raise
        if tls is not None:
            self.transport = tls
        return tls

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def start_tls_over(writer: asyncio.StreamWriter, context: ssl.SSLContext, server_hostname: str | None,
                         **options: float) -> None:
    """``writer.start_tls``, for the probers that read through asyncio's streams (TCP, DNS over TCP). A connection
    lost just as its handshake ends leaves asyncio with no TLS transport: StreamWriter.start_tls then sets
    ``transport`` to None and fails on it (AttributeError). That is the target closing the connection (EOFError),
    not a bug of the prober; the writer keeps its closed socket transport, for the caller's abort and release."""
    plain = writer.transport
    try:
        await writer.start_tls(context, server_hostname=server_hostname, **options)
    except AttributeError:
        if writer.transport is not None:
            raise
    if writer.transport is None:
        writer._transport = plain  # StreamWriter.__del__ reads it too
        raise EOFError("the connection ended as the TLS handshake did")


def release(transport: asyncio.BaseTransport) -> None:
    """Break the reference cycle Python 3.11 leaves in a closed socket transport (its ``_read_ready_cb``: CPython
    gh-100348, fixed in 3.12), so a probe's connection is freed by reference counting once closed. The collector
    would free it too, unless the agent froze it while the probe was in flight (agent.runtime.heap). Call it once
    the transport is closed: it reads nothing more."""
    if getattr(transport, "_read_ready_cb", None) is not None:
        transport._read_ready_cb = None  # type: ignore[attr-defined]
