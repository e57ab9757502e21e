"""gRPC health checks: ``grpc.health.v1.Health/Check`` with ``service``, as blackbox_exporter's grpc prober makes
it, over a new connection per probe.

The client is grpclib (pure asyncio over h2, with protobuf for the messages): it runs on the agent's own event
loop, and costs about 6 MiB when loaded, against 19 MiB and C-core threads for grpcio's asyncio API. This module
is imported only when a gRPC source is built, so an agent without one never loads either.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING, Any

import h2.exceptions
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest

from agent.sources.grpc.config import DURATION, HEALTH, PHASES, SERVING_STATUSES, SSL, STATUS_CODE, GrpcModule
from agent.sources.probe.net import resolve, split_host_port
from agent.sources.probe.result import ProbeFailed
from agent.sources.probe.tls import record_tls

if TYPE_CHECKING:
    from agent.sources.probe.result import ProbeResult

_PHASE_KEYS = {phase: (phase,) for phase in PHASES}
_STATUS_KEYS = {status: (status,) for status in SERVING_STATUSES}
_BROKEN = (StreamTerminatedError, ProtocolError, h2.exceptions.ProtocolError)


def _ssl_object(channel: Channel) -> Any:
    """The TLS state of the channel's connection. grpclib keeps the transport on its protocol's connection
    object and has no public accessor; the TLS test reads every series this feeds, so a grpclib that moves it
    fails there, not silently."""
    protocol = getattr(channel, "_protocol", None)
    transport = getattr(getattr(protocol, "connection", None), "_transport", None)
    return transport.get_extra_info("ssl_object") if transport is not None else None


class GrpcProber:
    """The settings of one source, shared by its targets."""

    def __init__(self, module: GrpcModule, ssl_context: ssl.SSLContext | None):
        self.module = module
        self.ssl_context = ssl_context if module.tls else None
        if self.ssl_context is not None:
            self.ssl_context.set_alpn_protocols(["h2"])
        self.default_port = 443 if module.tls else 80
        self.request = HealthCheckRequest(service=module.service)

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
        config = Configuration(ssl_target_name_override=module.tls_config.server_name or host) \
            if self.ssl_context else None
        channel = Channel(address, port, ssl=self.ssl_context, config=config)
        channel._authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # the name, not the address
        try:
            # grpclib's own deadline ends the call just before ours, so its status (DEADLINE_EXCEEDED) is recorded
            remaining = result.deadline - asyncio.get_running_loop().time() - min(0.05, result.timeout * 0.1)
            try:
                response = await HealthStub(channel).Check(self.request, timeout=max(remaining, 0.001),
                                                           metadata=module.metadata)
            except GRPCError as exc:
                result.set(STATUS_CODE, exc.status.value)
                if exc.status is Status.DEADLINE_EXCEEDED:
                    raise ProbeFailed("timeout", f"no answer to the health check within {result.timeout:g}s"
                                      ) from None
                if exc.status is Status.UNAVAILABLE and isinstance(exc.__cause__, OSError):
                    raise exc.__cause__ from None
                message = f": {exc.message}" if exc.message else ""
                raise ProbeFailed("grpc_status", f"the health check failed with status {exc.status.name}"
                                  f"{message}"[:300]) from None
            except TimeoutError:  # grpclib's deadline (before ours): Go's client says DEADLINE_EXCEEDED
                result.set(STATUS_CODE, Status.DEADLINE_EXCEEDED.value)
                raise ProbeFailed("timeout", f"no answer to the health check within {result.timeout:g}s") from None
            except OSError:  # refused, reset, TLS refused: what Go's client reports as UNAVAILABLE
                result.set(STATUS_CODE, Status.UNAVAILABLE.value)
                raise
            except _BROKEN as exc:
                result.set(STATUS_CODE, Status.UNAVAILABLE.value)
                raise ProbeFailed("connection_error", f"the connection broke: {type(exc).__name__}: {exc}"[:300]
                                  ) from None
            finally:
                result.add(DURATION, time.perf_counter() - checking, ("check",))
                tls_object = _ssl_object(channel) if self.ssl_context else None
                if tls_object is not None:
                    result.set(SSL, 1)
                    record_tls(result, tls_object)
        finally:
            channel.close()
        status = SERVING_STATUSES[response.status] if 0 <= response.status < len(SERVING_STATUSES) else "UNKNOWN"
        result.set(HEALTH, 1, _STATUS_KEYS[status])
        if status != "SERVING":
            raise ProbeFailed("not_serving", f"the server answers {status} for "
                              f"{repr(module.service) if module.service else 'the whole server'}")
