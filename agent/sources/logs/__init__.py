"""Log files turned into metrics: tailer (files, rotation) -> pipeline (lines -> aggregates) -> store."""

from __future__ import annotations

from agent.config.fields import Fields
from agent.series.family import FamilySpec
from agent.series.store import Group
from agent.sources.base import DeclaredFamily, SourceContext, SourceDefaults, SourceKind, SourceStats
from agent.sources.logs.config import (
    IDENTITY_LABEL,
    SELF_FAMILIES,
    LogSourceConfig,
    declared_families,
    parse_log_source,
)
from agent.sources.logs.source import LogSource


class LogKind(SourceKind[LogSourceConfig]):
    name = "logs"
    identity = IDENTITY_LABEL

    def parse(self, fields: Fields, defaults: SourceDefaults) -> LogSourceConfig | None:
        return parse_log_source(fields)

    def families(self, config: LogSourceConfig) -> list[DeclaredFamily]:
        return declared_families(config.metrics, config.file_labels)

    def self_families(self, config: LogSourceConfig) -> list[FamilySpec]:
        return list(SELF_FAMILIES)

    def build(self, config: LogSourceConfig, group: Group, stats: SourceStats,
              context: SourceContext) -> LogSource:
        return LogSource(config, group, stats, context)


KIND = LogKind()

__all__ = ["KIND", "LogSource", "LogSourceConfig"]
