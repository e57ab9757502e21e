"""The agent's configuration as the running parts read it: plain frozen dataclasses, parsed by
``agent.config.agent`` (the top level and the ``global`` block) and each kind's own parser (its sources).

It imports nothing of the sources, so a source may name the running config without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SourceDefaults:
    """What the top-level ``global`` block lends every source."""

    interval: float = 15.0
    timeout: float = 10.0


@dataclass(frozen=True)
class GlobalConfig:
    interval: float = 15.0
    timeout: float = 10.0
    labels: dict[str, str] = field(default_factory=dict)
    max_concurrent_probes: int = 64
    scrape_timeout: float = 10.0  # what the Prometheus scraping the agent gives a scrape (its default)

    def defaults(self) -> SourceDefaults:
        return SourceDefaults(self.interval, self.timeout)


@dataclass(frozen=True)
class AgentConfig:
    file: str
    global_: GlobalConfig
    sources: tuple[tuple[str, Any], ...] = ()  # (kind, source config), in the file's order
    positions_file: str | None = None
    remote_write: tuple[Any, ...] = ()  # agent.push.config.RemoteWriteConfig, in the file's order
    remote_write_buffer: str | None = None  # where each endpoint's unsent samples wait (a directory)
    external_labels: dict[str, str] = field(default_factory=dict)  # added to every pushed series

    def of_kind(self, kind: str) -> list[Any]:
        return [config for source_kind, config in self.sources if source_kind == kind]
