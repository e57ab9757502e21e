"""DNS sources: one query per probe to a DNS server, blackbox_exporter's dns prober (a prober kind,
agent.sources.probe). config (blackbox's module keys, the families) -> prober (the query, with dnspython, loaded
only when a DNS source is built)."""

from __future__ import annotations

from typing import Any

from agent.config.fields import Fields
from agent.series.store import Group
from agent.sources.base import Shared, SourceContext
from agent.sources.dns.config import (
    ADDITIONAL_RRS,
    ANSWER_RRS,
    AUTHORITY_RRS,
    DURATION,
    FAMILIES,
    PHASES,
    QUERY_SUCCEEDED,
    RESULTS,
    DnsModule,
    parse_module,
)
from agent.sources.probe.families import NET_FAMILIES, TLS_FAMILIES
from agent.sources.probe.kind import ProberKind
from agent.sources.probe.model import Prober, ProbeSettings
from agent.sources.probe.net import split_host_port
from agent.sources.probe.tls import TlsContexts


class DnsShared(Shared):
    """The SSL contexts of DNS over TLS sources."""

    def __init__(self, context: SourceContext):
        self.tls = TlsContexts()


def host_and_optional_port(value: Any) -> str:
    """``host``, ``host:port`` or ``[v6]:port``: the port may be left out (53, or 853 for DNS over TLS)."""
    from agent.config import values

    text = values.nonempty_string(value)
    split_host_port(text, 0)  # raises ValueError with the reason
    return text


class DnsKind(ProberKind[DnsModule, DnsShared]):
    name = "dns"
    results = RESULTS
    probe_families = (*FAMILIES, *NET_FAMILIES, *TLS_FAMILIES)
    # blackbox registers these before it queries: a failed probe shows them at 0
    known_labels = {DURATION: tuple((phase,) for phase in PHASES)}
    always = {ANSWER_RRS: 0.0, AUTHORITY_RRS: 0.0, ADDITIONAL_RRS: 0.0, QUERY_SUCCEEDED: 0.0}

    def parse_target(self, value: Any, module: DnsModule) -> str:
        return host_and_optional_port(value)

    def parse_module(self, fields: Fields, settings: ProbeSettings) -> DnsModule | None:
        return parse_module(fields)

    def open_shared(self, context: SourceContext) -> DnsShared:
        return DnsShared(context)

    def prepare_modules(self, modules: list[DnsModule], shared: DnsShared) -> list[Any]:
        return shared.tls.prepare(module.tls for module in modules if module.dns_over_tls)

    def prober(self, module: DnsModule, shared: DnsShared, own: Group | None) -> Prober:
        from agent.sources.dns.prober import DnsProber  # here: it loads dnspython

        return DnsProber(module, shared.tls.get(module.tls) if module.dns_over_tls else None)


KIND = DnsKind()

__all__ = ["KIND", "DnsModule"]
