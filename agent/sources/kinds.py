"""The one table of source kinds. Config parsing, the runtime and ``rules check`` all read it, so a new kind
is one entry here and one package under ``agent/sources/``."""

from __future__ import annotations

from typing import Any

from agent.sources import dns, grpc, http, icmp, journal, logs, tcp
from agent.sources.base import SourceKind

KINDS: dict[str, SourceKind[Any]] = {kind.name: kind for kind in (http.KIND, tcp.KIND, dns.KIND, icmp.KIND, grpc.KIND,
                                                                  logs.KIND, journal.KIND)}


def exported_samples(sources: list[tuple[str, Any]]) -> set[str]:
    """Every sample name the data families of these (kind, config) sources expose."""
    return {name for kind, config in sources for declared in KINDS[kind].families(config)
            for name in declared.spec.sample_names}
