"""gRPC health checks: ``grpc.health.v1.Health/Check`` with ``service``, as blackbox_exporter's grpc prober makes
it, over a new connection per probe.

The client is the agent's own (agent/sources/grpc/wire.py): one HTTP/2 stream on an asyncio connection, the
request written in one piece and the response read frame by frame, with ALPN ``h2`` under TLS. A general HTTP/2
stack (grpclib over h2, as before) cost as much CPU per probe as blackbox_exporter's Go client; a health check
needs one stream and no flow control. This module is imported only when a gRPC source is built.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING

from agent.sources.grpc.config import DURATION, HEALTH, PHASES, SERVING_STATUSES, SSL, STATUS_CODE, GrpcModule
from agent.sources.grpc.wire import (
    DEADLINE_EXCEEDED,
    MAX_FRAME,
    UNAVAILABLE,
    Broken,
    CallFailed,
    HeaderBlocks,
    Request,
    Response,
)
from agent.sources.probe.net import resolve, split_host_port
from agent.sources.probe.result import ProbeFailed
from agent.sources.probe.stream import Stream
from agent.sources.probe.tls import record_tls

if TYPE_CHECKING:
    from agent.sources.probe.result import ProbeResult

_PHASE_KEYS = {phase: (phase,) for phase in PHASES}
_STATUS_KEYS = {status: (status,) for status in SERVING_STATUSES}
_REQUESTS_KEPT = 256  # per source: the request bytes of this many targets are kept made


class _Connection(Stream):
    """A probe's HTTP/2 connection: the stream; a close before the call ended is the connection breaking."""

    __slots__ = ()

    def closed_early(self) -> Exception:
        return Broken("the server closed the connection before the call ended")


async def _call(connection: _Connection, response: Response) -> None:
    """Read frames until the call ended."""
    buffer = connection.buffer
    at = 0
    while True:
        while len(buffer) - at >= 9:
            length = int.from_bytes(buffer[at:at + 3], "big")
            if length > MAX_FRAME:
                raise Broken("a frame longer than the 16 KiB allowed" if response.settled
                             else "the server did not start with HTTP/2 SETTINGS (not an HTTP/2 server?)")
            end = at + 9 + length
            if len(buffer) < end:
                break
            reply = response.receive(buffer[at + 3], buffer[at + 4],
                                     int.from_bytes(buffer[at + 5:at + 9], "big") & 0x7FFFFFFF,
                                     bytes(buffer[at + 9:end]))
            at = end
            if reply:
                connection.write(reply)
            if response.done:
                return
        del buffer[:at]
        at = 0
        await connection.more()


class GrpcProber:
    """The settings of one source, shared by its targets."""

    def __init__(self, module: GrpcModule, ssl_context: ssl.SSLContext | None):
        self.module = module
        self.ssl_context = ssl_context if module.tls else None
        if self.ssl_context is not None:
            self.ssl_context.set_alpn_protocols(["h2"])
        self.default_port = 443 if module.tls else 80
        self.requests: dict[str, Request] = {}
        self.header_blocks = HeaderBlocks()

    def request(self, authority: str) -> Request:
        request = self.requests.get(authority)
        if request is None:
            if len(self.requests) >= _REQUESTS_KEPT:
                self.requests.clear()
            request = self.requests[authority] = Request(authority, self.ssl_context is not None,
                                                         self.module.metadata, self.module.service)
        return request

    async def probe(self, target: str, result: ProbeResult) -> None:
        module = self.module
        result.set(DURATION, 0.0, _PHASE_KEYS["resolve"])
        result.set(SSL, 0)
        result.set(STATUS_CODE, 0)
        for key in _STATUS_KEYS.values():
            result.set(HEALTH, 0, key)
        for prefix in ("http://", "https://"):  # blackbox takes a URL's host and port too
            target = target.removeprefix(prefix)
        host, port = split_host_port(target.rstrip("/"), self.default_port)
        started = time.perf_counter()
        address = await resolve(host, module.ip, result)
        checking = time.perf_counter()
        result.add(DURATION, checking - started, _PHASE_KEYS["resolve"])
        request = self.request(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")  # the name, not the address
        loop = asyncio.get_running_loop()
        # the call's own deadline ends it just before ours, so its status (DEADLINE_EXCEEDED) is recorded
        remaining = max(result.deadline - loop.time() - min(0.05, result.timeout * 0.1), 0.001)
        connection = _Connection()
        response = Response(self.header_blocks)
        try:
            async with asyncio.timeout(remaining):
                await loop.create_connection(lambda: connection, address, port)
                if self.ssl_context is not None and \
                        await connection.start_tls(self.ssl_context, module.tls_config.server_name or host) is None:
                    raise Broken("the server closed the connection during the TLS handshake")
                connection.write(request.bytes(remaining))
                await _call(connection, response)
        except (CallFailed, TimeoutError) as exc:
            # TimeoutError: the call's own deadline (before ours) passed; Go's client says DEADLINE_EXCEEDED
            failed = exc if isinstance(exc, CallFailed) else CallFailed(DEADLINE_EXCEEDED)
            result.set(STATUS_CODE, failed.code)
            if failed.code == DEADLINE_EXCEEDED:  # the server's word for it, or ours
                raise ProbeFailed("timeout", f"no answer to the health check within {result.timeout:g}s") from None
            message = f": {failed.message}" if failed.message else ""
            raise ProbeFailed("grpc_status", f"the health check failed with status {failed.name}{message}"[:300]
                              ) from None
        except OSError:  # refused, reset, TLS refused: what Go's client reports as UNAVAILABLE
            result.set(STATUS_CODE, UNAVAILABLE)
            raise
        except Broken as exc:
            result.set(STATUS_CODE, UNAVAILABLE)
            raise ProbeFailed("connection_error", f"the connection broke: {exc}"[:300]) from None
        finally:
            result.add(DURATION, time.perf_counter() - checking, ("check",))
            transport = connection.transport
            if transport is not None:
                tls_object = transport.get_extra_info("ssl_object") if self.ssl_context else None
                if tls_object is not None:
                    result.set(SSL, 1)
                    record_tls(result, tls_object)
                    # close() would wait for the server's close_notify, which gRPC servers do not send: the
                    # socket would outlive the probe by up to 30 s (asyncio's ssl_shutdown_timeout)
                    transport.abort()
                else:
                    transport.close()
        status = SERVING_STATUSES[response.status] if 0 <= response.status < len(SERVING_STATUSES) else "UNKNOWN"
        result.set(HEALTH, 1, _STATUS_KEYS[status])
        if status != "SERVING":
            raise ProbeFailed("not_serving", f"the server answers {status} for "
                              f"{repr(module.service) if module.service else 'the whole server'}")
