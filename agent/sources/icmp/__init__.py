"""ICMP sources: echo requests per probe, blackbox_exporter's icmp prober plus loss and jitter (a prober kind,
agent.sources.probe). config (the module keys, the families) -> sockets (the agent's shared ping or raw sockets)
-> prober (one probe: requests, replies, statistics)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from agent.config import values
from agent.config.fields import Fields
from agent.formatting import excerpt
from agent.series.store import Group
from agent.sources.base import Shared, SourceContext
from agent.sources.icmp.config import DURATION, FAMILIES, PHASES, RESULTS, RTT, STATS, IcmpModule, parse_module
from agent.sources.probe.families import NET_FAMILIES
from agent.sources.probe.kind import ProberKind
from agent.sources.probe.model import Prober, ProbeSettings

if TYPE_CHECKING:
    from agent.sources.icmp.sockets import EchoSockets


class IcmpShared(Shared):
    """The agent's echo sockets, opened on first use and closed when it stops."""

    def __init__(self, context: SourceContext):
        from agent.sources.icmp.sockets import EchoSockets

        self.sockets: EchoSockets = EchoSockets()

    async def close(self) -> None:
        self.sockets.close()


def icmp_target(value: Any) -> str:
    """A host name or an IP address, with no port."""
    text = values.nonempty_string(value)
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if "/" in host or " " in host or (host.count(":") == 1):
        raise ValueError(f"{excerpt(text)} is not a host name or an IP address (ICMP has no port)")
    return host


class IcmpKind(ProberKind[IcmpModule, IcmpShared]):
    name = "icmp"
    known_labels = {DURATION: tuple((phase,) for phase in PHASES), RTT: tuple((stat,) for stat in STATS)}
    results = RESULTS
    probe_families = (*FAMILIES, *NET_FAMILIES)

    def parse_target(self, value: Any, module: IcmpModule) -> str:
        return icmp_target(value)

    def parse_module(self, fields: Fields, settings: ProbeSettings) -> IcmpModule:
        return parse_module(fields, settings.timeout)

    def open_shared(self, context: SourceContext) -> IcmpShared:
        return IcmpShared(context)

    def environment_problems(self, module: IcmpModule) -> list[str]:
        from agent.sources.icmp.sockets import socket_problem

        families = {"ip4": [socket.AF_INET], "ip6": [socket.AF_INET6]}[module.ip.preferred]
        if module.ip.fallback:
            families = [socket.AF_INET, socket.AF_INET6]
        problems = [socket_problem(family) for family in families]
        if any(problem is None for problem in problems):  # one family can probe: fallback finds it
            return []
        return [problems[0] or ""]

    def prober(self, module: IcmpModule, shared: IcmpShared, own: Group | None) -> Prober:
        from agent.sources.icmp.prober import IcmpProber

        return IcmpProber(module, shared.sockets)


KIND = IcmpKind()

__all__ = ["KIND", "IcmpModule"]
