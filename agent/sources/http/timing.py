"""Per-probe timings of blackbox_exporter's phases, read from aiohttp's tracing hooks and the SSL context.

aiohttp times DNS + TCP connect + TLS handshake as one step; the moment each TLS handshake began splits it into
``connect`` and ``tls``. Hooks act only on requests that carry a ``Timings`` as their trace context, so one
client session can serve every source. One SSL context serves every probe with the same TLS settings, so it
cannot hold a probe's state: it hands each TLS object it creates, and the moment, to the ``Timings`` of the
probe that is running in the current context (a context variable: each probe runs in its own task, and asyncio
runs the callbacks that start a connection's handshake in the context of the task that opened it).
"""

from __future__ import annotations

import contextvars
import ssl
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp


class Timings:
    """Per-probe phase durations, filled by aiohttp's tracing hooks and summed over redirects."""

    __slots__ = ("resolve", "connect", "tls", "processing", "transfer", "_dns_start", "_conn_start", "_sent_at",
                 "_headers_at", "_resolve_before", "_connections", "handshakes", "tls_object")

    def __init__(self) -> None:
        self.resolve = self.connect = self.tls = self.processing = self.transfer = 0.0
        self._dns_start = self._conn_start = self._sent_at = self._headers_at = self._resolve_before = 0.0
        self._connections: list[tuple[float, float, float]] = []  # (start, end, resolve time inside)
        self.handshakes: list[float] = []  # when each TLS handshake of the probe began
        self.tls_object: ssl.SSLObject | None = None  # the TLS state of the probe's last connection

    def split_connections(self) -> None:
        """Connection setup -> connect and tls phases: aiohttp times DNS + TCP + TLS as one step, so the
        moment each TLS handshake began marks where TCP connect ended."""
        for start, end, resolve in self._connections:
            began = next((h for h in self.handshakes if start <= h <= end), None)
            if began is None:
                self.connect += max(0.0, end - start - resolve)
            else:
                self.connect += max(0.0, began - start - resolve)
                self.tls += end - began

    def body_done(self) -> None:
        if self._headers_at:
            self.transfer += time.perf_counter() - self._headers_at


def _timings(ctx: SimpleNamespace) -> Timings | None:
    timings = ctx.trace_request_ctx
    return timings if isinstance(timings, Timings) else None


async def _on_dns_start(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
    if t := _timings(ctx):
        t._dns_start = time.perf_counter()


async def _on_dns_end(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
    if (t := _timings(ctx)) and t._dns_start:
        t.resolve += time.perf_counter() - t._dns_start


async def _on_conn_start(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
    if t := _timings(ctx):
        t._conn_start = time.perf_counter()
        t._resolve_before = t.resolve
        t._dns_start = 0.0


async def _on_conn_end(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
    if (t := _timings(ctx)) and t._conn_start:
        t._connections.append((t._conn_start, time.perf_counter(), t.resolve - t._resolve_before))


async def _on_headers_sent(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
    if t := _timings(ctx):
        now = time.perf_counter()
        if t._headers_at:  # a redirect hop: the previous response's body (if any) ended here
            t.transfer += now - t._headers_at
            t._headers_at = 0.0
        t._sent_at = now


async def _on_request_end(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: Any) -> None:
    if (t := _timings(ctx)) and t._sent_at:
        now = time.perf_counter()
        t.processing += now - t._sent_at
        t._headers_at = now


def trace_config() -> aiohttp.TraceConfig:
    """Tracing hooks for the shared client session; they act only on requests that carry a Timings."""
    import aiohttp

    config = aiohttp.TraceConfig()
    config.on_dns_resolvehost_start.append(_on_dns_start)
    config.on_dns_resolvehost_end.append(_on_dns_end)
    config.on_connection_create_start.append(_on_conn_start)
    config.on_connection_create_end.append(_on_conn_end)
    config.on_request_headers_sent.append(_on_headers_sent)
    config.on_request_end.append(_on_request_end)
    return config


# The Timings of the probe running in this context; set by the probe around its request.
current_probe: contextvars.ContextVar[Timings | None] = contextvars.ContextVar("current_probe", default=None)


class ProbeSSLContext(ssl.SSLContext):
    """An SSL context shared by every probe with the same TLS settings. Each TLS object it creates, and when,
    goes to the Timings of the probe that opened the connection; the context itself keeps nothing."""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        began = time.perf_counter()
        tls_object = super().wrap_bio(*args, **kwargs)
        timings = current_probe.get()
        if timings is not None:
            timings.handshakes.append(began)
            timings.tls_object = tls_object
        return tls_object
