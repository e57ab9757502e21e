"""gRPC sources: the standard health check (``grpc.health.v1.Health/Check``) per probe, blackbox_exporter's grpc
prober (a prober kind, agent.sources.probe). config (blackbox's module keys, the families) -> prober (its own HTTP/2
client, wire; loaded only when a gRPC source is built)"""

from __future__ import annotations

from typing import Any

from agent.config import values
from agent.config.fields import Fields
from agent.formatting import excerpt
from agent.series.store import Group
from agent.sources.base import Shared, SourceContext
from agent.sources.grpc.config import (
    DURATION,
    FAMILIES,
    HEALTH,
    PHASES,
    RESULTS,
    SERVING_STATUSES,
    GrpcModule,
    parse_module,
)
from agent.sources.probe.families import NET_FAMILIES, TLS_FAMILIES
from agent.sources.probe.kind import ProberKind
from agent.sources.probe.model import Prober, ProbeSettings
from agent.sources.probe.net import split_host_port
from agent.sources.probe.tls import TlsContexts


class GrpcShared(Shared):
    """The SSL contexts of gRPC sources with ``tls: true``."""

    def __init__(self, context: SourceContext):
        self.tls = TlsContexts()


def grpc_target(value: Any) -> str:
    """``host:port`` (the port may be left out: 80, or 443 with TLS); an ``http://`` or ``https://`` prefix is
    taken and dropped, as blackbox_exporter does."""
    text = values.nonempty_string(value)
    address = text.removeprefix("http://").removeprefix("https://").rstrip("/")
    if "/" in address:
        raise ValueError(f"{excerpt(text)} is not host:port (a gRPC target has no path)")
    split_host_port(address, 0)
    return address


class GrpcKind(ProberKind[GrpcModule, GrpcShared]):
    name = "grpc"
    known_labels = {DURATION: tuple((phase,) for phase in PHASES),
                    HEALTH: tuple((status,) for status in SERVING_STATUSES)}
    results = RESULTS
    probe_families = (*FAMILIES, *NET_FAMILIES, *TLS_FAMILIES)

    def parse_target(self, value: Any, module: GrpcModule) -> str:
        return grpc_target(value)

    def parse_module(self, fields: Fields, settings: ProbeSettings) -> GrpcModule:
        return parse_module(fields)

    def open_shared(self, context: SourceContext) -> GrpcShared:
        return GrpcShared(context)

    def prepare_modules(self, modules: list[GrpcModule], shared: GrpcShared) -> list[Any]:
        return shared.tls.prepare(module.tls_config for module in modules if module.tls)

    def prober(self, module: GrpcModule, shared: GrpcShared, own: Group | None) -> Prober:
        from agent.sources.grpc.prober import GrpcProber  # here: it loads hpack

        return GrpcProber(module, shared.tls.get(module.tls_config) if module.tls else None)


KIND = GrpcKind()

__all__ = ["KIND", "GrpcModule"]
