"""TCP sources: blackbox_exporter's tcp prober (connect, TLS, STARTTLS, banners and query_response checks) as a
prober kind (agent.sources.probe): config (the module keys and families) -> prober (one attempt on asyncio
streams)."""

from __future__ import annotations

from typing import Any

from agent.config import values
from agent.series.store import Group
from agent.sources.base import DeclaredFamily, Shared, SourceContext
from agent.sources.probe.families import COMMON_FAMILIES, RETRY_FAMILIES
from agent.sources.probe.kind import ProberKind
from agent.sources.probe.model import Prober, ProbeSettings
from agent.sources.probe.net import split_host_port
from agent.sources.probe.tls import TlsContexts
from agent.sources.tcp.config import ALWAYS, RESULTS, TCP_FAMILIES, TcpModule, module_families, parse_module

_RESERVED = frozenset({"target", "source", "le", *(name for spec in (*COMMON_FAMILIES, *RETRY_FAMILIES, *TCP_FAMILIES)
                                                   for name in spec.labelnames)})


class TcpShared(Shared):
    """The SSL contexts of every TCP source's tls_config."""

    def __init__(self, context: SourceContext | None = None):
        self.tls = TlsContexts()


class TcpKind(ProberKind[TcpModule, TcpShared]):
    name = "tcp"
    results = RESULTS
    probe_families = TCP_FAMILIES
    always = ALWAYS

    def parse_target(self, value: Any, module: TcpModule) -> str:
        """host:port, [v6]:port (blackbox's tcp targets: a port is required)."""
        text = values.nonempty_string(value)
        split_host_port(text)
        return text

    def parse_module(self, fields: Any, settings: ProbeSettings) -> TcpModule:
        return parse_module(fields, settings, _RESERVED)

    def module_families(self, module: TcpModule) -> list[DeclaredFamily]:
        return module_families(module, (None, ""))

    def open_shared(self, context: SourceContext) -> TcpShared:
        return TcpShared(context)

    def prepare_modules(self, modules: list[TcpModule], shared: TcpShared) -> list[Any]:
        return shared.tls.prepare(module.tls_config for module in modules if module.uses_tls)

    def prober(self, module: TcpModule, shared: TcpShared, own: Group | None) -> Prober:
        from agent.sources.tcp.prober import TcpProber

        return TcpProber(module, shared.tls.get(module.tls_config) if module.uses_tls else None)


KIND = TcpKind()

__all__ = ["KIND", "TcpModule"]
