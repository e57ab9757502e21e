"""Log files turned into metrics: tailer (files, rotation) -> pipeline (lines -> aggregates) -> store."""

from __future__ import annotations

from agent.config.fields import Fields
from agent.config.model import SourceDefaults
from agent.config.problems import Problem
from agent.runtime.shard import UNSHARDED, Shard
from agent.series.family import FamilySpec
from agent.series.store import Group, Member
from agent.sources.base import DeclaredFamily, SourceContext, SourceKind, SourceStats
from agent.sources.logs.config import (
    IDENTITY_LABEL,
    SELF_FAMILIES,
    LogSourceConfig,
    declared_families,
    parse_log_source,
)
from agent.sources.logs.source import LogSource, matches_a_file


class LogKind(SourceKind[LogSourceConfig]):
    name = "logs"
    identity = IDENTITY_LABEL

    def parse(self, fields: Fields, defaults: SourceDefaults) -> LogSourceConfig | None:
        return parse_log_source(fields)

    def families(self, config: LogSourceConfig) -> list[DeclaredFamily]:
        return declared_families(config.metrics, config.file_labels)

    def self_families(self, config: LogSourceConfig) -> list[FamilySpec]:
        return list(SELF_FAMILIES)

    def check(self, config: LogSourceConfig, file: str, shard: Shard = UNSHARDED) -> tuple[list[Problem], int | None]:
        """A path that matches no file now is valid (the file may come later) but is most often a typo: said."""
        line, name_field = config.where
        field = name_field.rsplit(".", 1)[0] + ".paths"
        problems = [Problem(file, line, field, f"{pattern!r} matches no file now; the agent reads it once one "
                                               "exists", warning=True)
                    for pattern in config.paths if not matches_a_file(pattern)]
        return problems, None

    def build(self, config: LogSourceConfig, group: Member, stats: SourceStats,
              context: SourceContext) -> LogSource:
        assert isinstance(group, Group)  # data_group's
        return LogSource(config, group, stats, context)


KIND = LogKind()

__all__ = ["KIND", "LogSource", "LogSourceConfig"]
