"""The one table of source kinds. Config parsing, the runtime and ``rules check`` all read it, so a new kind
is one entry here and one package under ``agent/sources/``.

A kind's package is imported the first time the table is asked for it, so an agent loads only the kinds its
config has sources of: an HTTP-only agent never imports the dns, icmp or grpc packages (they added about 9% to
its start-up CPU; ``tests/benchmarks/bench_kinds_footprint.py``)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from agent.sources.base import IDENTITY_LABEL, SourceKind

# The kinds, in the order config sections are read and listed: each is agent.sources.<name>.KIND
NAMES = ("http", "tcp", "dns", "icmp", "grpc", "logs", "journal")
# The labels naming a source on its series (each kind's ``identity``): known without loading every kind
# (tests/test_contract.py holds each kind to it)
IDENTITY_LABELS = frozenset({IDENTITY_LABEL, "target"})
# Every kind's ``builtin`` family names start with one of these (test_contract holds them to it): a family a
# source declares itself (a log metric, a JSON metric) can only clash with a kind's builtin one if it does
BUILTIN_PREFIXES = ("probe_", "probes")


class KindTable(Mapping[str, SourceKind[Any]]):
    """``KINDS[name]``: the kind, its package imported on first use; iterating gives the names only."""

    def __init__(self, names: tuple[str, ...]):
        self._names = names
        self._loaded: dict[str, SourceKind[Any]] = {}

    def __getitem__(self, name: str) -> SourceKind[Any]:
        kind = self._loaded.get(name)
        if kind is None:
            if name not in self._names:
                raise KeyError(name)
            kind = self._loaded[name] = importlib.import_module(f"agent.sources.{name}").KIND
        return kind

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names


KINDS = KindTable(NAMES)


def exported_samples(sources: list[tuple[str, Any]]) -> set[str]:
    """Every sample name the data families of these (kind, config) sources expose."""
    return {name for kind, config in sources for declared in KINDS[kind].families(config)
            for name in declared.spec.sample_names}
