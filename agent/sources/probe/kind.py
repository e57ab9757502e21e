"""The shape of a prober kind (issue 20): what one provides, and everything the framework does with it.

A kind (http, tcp, dns, ...) is a ``ProberKind``: the keys of its module (blackbox_exporter's, flat in the
source), the families it may write, how its targets are written, and a ``Prober`` per source whose ``probe``
makes one attempt against one target and records into a ``ProbeResult``. Everything else is here and in this
package, written once for every kind: the common keys (``target``, ``interval``, ``timeout``, ``retries``,
``labels``, ``omit_series``, discovery), the families every probe writes, scheduling, probe slots, retries,
failure reasons, the status page. /work/plan/PROBER_API.md (and the README's "Probes") describe the contract.
"""

from __future__ import annotations

from typing import Any

from agent.config.fields import Fields
from agent.config.model import SourceDefaults
from agent.config.problems import Problem
from agent.runtime.shard import UNSHARDED, Shard
from agent.series.family import FamilySpec
from agent.series.store import Member
from agent.series.table import Table, TableRow
from agent.sources.base import IDENTITY_LABEL as SOURCE_LABEL
from agent.sources.base import (
    RowStats,
    Source,
    SourceContext,
    SourceKind,
    SourceStats,
    stats_schema,
)
from agent.sources.probe.config import parse_probe_source
from agent.sources.probe.families import COMMON_FAMILIES, PROBES_SKIPPED, RETRY_FAMILIES
from agent.sources.probe.model import TARGET_LABEL, ModuleT, ProbeConfig, ProberPlugin, SharedT


class ProberKind(ProberPlugin[ModuleT, SharedT], SourceKind[ProbeConfig[ModuleT]]):
    """A prober kind as the agent runs every kind of source: its sources parsed, checked and built."""

    identity = TARGET_LABEL

    @property
    def builtin(self) -> tuple[FamilySpec, ...]:  # type: ignore[override]  # derived, not a constant
        return (*COMMON_FAMILIES, *RETRY_FAMILIES, *self.probe_families)

    def parse(self, fields: Fields, defaults: SourceDefaults) -> ProbeConfig[ModuleT] | None:
        return parse_probe_source(self, fields, defaults)

    def identity_of(self, config: ProbeConfig[ModuleT]) -> str:
        """target="<name>" for a source of one target; a discovering source is source="<name>", and each of
        its targets adds target="<address>"."""
        return SOURCE_LABEL if config.discovery is not None else TARGET_LABEL

    def self_families(self, config: ProbeConfig[ModuleT]) -> list[FamilySpec]:
        from agent.discovery.manager import SD_FAMILIES

        return [*self.module_self_families(config.module), PROBES_SKIPPED,
                *(SD_FAMILIES if config.discovery is not None else ())]

    def data_group(self, config: ProbeConfig[ModuleT], owner: str) -> Member:
        """A discovering source's targets are the rows of its table (``source="<name>"`` on every row); a
        one-target source is a row of the store's table for its layout (``target="<name>"``)."""
        from agent.sources.probe.target import layout

        schema = layout(self, tuple(declared.spec for declared in self.families(config))).schema
        if config.discovery is not None:
            return Table(owner, schema, {SOURCE_LABEL: config.name}, SOURCE_LABEL)
        return TableRow(owner, schema, self.data_labels(config))

    def source_stats(self, config: ProbeConfig[ModuleT], owner: str) -> SourceStats:
        """A one-target source whose prober writes no self family of its own (http without json_metrics) keeps
        its self-metrics in a row of the store's table of this kind's such sources; other sources, a group."""
        if config.discovery is None and not self.module_self_families(config.module):
            row = TableRow(owner, stats_schema(self.name, (PROBES_SKIPPED,)), {SOURCE_LABEL: config.name})
            return RowStats(row, self.name)
        return super().source_stats(config, owner)

    def shard_key(self, config: ProbeConfig[ModuleT]) -> str | None:
        """A source of one target runs on one replica; a discovering source runs on all and shards its
        targets."""
        return config.name if config.discovery is None else None

    def prepare(self, configs: list[ProbeConfig[ModuleT]], context: SourceContext) -> list[Any]:
        return self.prepare_modules([config.module for config in configs], self.shared(context))

    def build(self, config: ProbeConfig[ModuleT], group: Member, stats: SourceStats,
              context: SourceContext) -> Source[ProbeConfig[ModuleT]]:
        from agent.sources.probe.source import DiscoveringProbeSource, ProbeSource

        if config.discovery is not None:
            return DiscoveringProbeSource(self, config, group, stats, context)
        return ProbeSource(self, config, group, stats, context)

    def check(self, config: ProbeConfig[ModuleT], file: str, shard: Shard = UNSHARDED
              ) -> tuple[list[Problem], int | None]:
        line, field_path = config.where
        where = field_path.removesuffix(".name")
        problems = [Problem(file, line, where, text) for text in self.environment_problems(config.module)]
        if config.discovery is None:
            return problems, None
        from agent.discovery.manager import check_discovery

        found, result = check_discovery(config.discovery, self.target_rules(config), shard)
        problems += found
        problems += [Problem(file, line, where, f"refused target {reason}", warning=True)
                     for reason in result.refusals]
        return problems, result.counts["probed"]
