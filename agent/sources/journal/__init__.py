"""The systemd journal turned into metrics: journalctl follows it, the log pipeline counts its entries."""

from __future__ import annotations

from agent.config.fields import Fields
from agent.config.model import SourceDefaults
from agent.series.family import FamilySpec
from agent.series.store import Group, Member
from agent.sources.base import IDENTITY_LABEL, DeclaredFamily, SourceContext, SourceKind, SourceStats
from agent.sources.journal.config import JournalSourceConfig, parse_journal_source
from agent.sources.journal.source import JournalSource
from agent.sources.logs.config import PIPELINE_FAMILIES, declared_families


class JournalKind(SourceKind[JournalSourceConfig]):
    name = "journal"
    identity = IDENTITY_LABEL

    def parse(self, fields: Fields, defaults: SourceDefaults) -> JournalSourceConfig | None:
        return parse_journal_source(fields)

    def families(self, config: JournalSourceConfig) -> list[DeclaredFamily]:
        return declared_families(config.metrics)

    def self_families(self, config: JournalSourceConfig) -> list[FamilySpec]:
        return list(PIPELINE_FAMILIES)

    def build(self, config: JournalSourceConfig, group: Member, stats: SourceStats,
              context: SourceContext) -> JournalSource:
        assert isinstance(group, Group)  # data_group's
        return JournalSource(config, group, stats, context)


KIND = JournalKind()

__all__ = ["KIND", "JournalSource", "JournalSourceConfig"]
