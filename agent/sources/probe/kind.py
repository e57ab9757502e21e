"""The shape of a prober kind (issue 20): what one provides, and everything the framework does with it.

A kind (http, tcp, dns, ...) is a ``ProberKind``: the keys of its module (blackbox_exporter's, flat in the
source), the families it may write, how its targets are written, and a ``Prober`` per source whose ``probe``
makes one attempt against one target and records into a ``ProbeResult``. Everything else is here and in this
package, written once for every kind: the common keys (``target``, ``interval``, ``timeout``, ``retries``,
``labels``, ``omit_series``, discovery), the families every probe writes, scheduling, probe slots, retries,
failure reasons, the status page. /work/plan/PROBER_API.md (and the README's "Probes") describe the contract.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from agent.config.fields import Fields
from agent.config.model import SourceDefaults
from agent.config.problems import Problem
from agent.runtime.shard import UNSHARDED, Shard
from agent.series.family import FamilySpec
from agent.series.store import Group, Member
from agent.series.table import Table, TableRow
from agent.sources.base import IDENTITY_LABEL as SOURCE_LABEL
from agent.sources.base import (
    DeclaredFamily,
    Shared,
    Source,
    SourceContext,
    SourceKind,
    SourceStats,
)
from agent.sources.probe.config import TARGET_LABEL, ProbeConfig, ProbeSettings, parse_probe_source
from agent.sources.probe.families import COMMON_FAMILIES, COMMON_RESULTS, PROBES_SKIPPED, RETRY_FAMILIES

if TYPE_CHECKING:
    from agent.discovery.targets import TargetRules
    from agent.sources.probe.result import ProbeResult

ModuleT = TypeVar("ModuleT")
SharedT = TypeVar("SharedT", bound=Shared)


class Prober(Protocol):
    """A kind's probe of one source's module, shared by every target of the source."""

    async def probe(self, target: str, result: ProbeResult) -> None:
        """One attempt: return for success, raise ProbeFailed for a failure of the target (or let OSError,
        ssl.SSLError, TimeoutError propagate: the framework words them). Never catch CancelledError."""
        ...


class ProberKind(SourceKind[ProbeConfig[ModuleT]], Generic[ModuleT, SharedT]):
    name: ClassVar[str]
    identity = TARGET_LABEL
    target_key: ClassVar[str] = "target"  # the key of a source's one target (http: url)
    results: ClassVar[tuple[str, ...]] = ()  # probes_total{result} values beyond COMMON_RESULTS
    probe_families: ClassVar[tuple[FamilySpec, ...]] = ()  # every family the kind may write
    always: ClassVar[Mapping[FamilySpec, float]] = {}  # unlabelled gauges always present, at this value unless set
    # label sets of the kind's labelled families known in advance (phases): kept in 8-byte cells of the target's
    # row; others (TLS versions, a JSON body's labels) take a small dict per target
    known_labels: ClassVar[Mapping[FamilySpec, tuple[tuple[str, ...], ...]]] = {}

    # --- what a kind provides ------------------------------------------------------------------------------

    @abstractmethod
    def parse_target(self, value: Any, module: ModuleT) -> str:
        """A target as written in the config or discovered (``__address__``), checked and normalised (a port
        filled in, which may depend on the module); raises ValueError saying why it cannot be probed."""

    @abstractmethod
    def parse_module(self, fields: Fields, settings: ProbeSettings) -> ModuleT | None:
        """The kind's own keys; problems go to ``fields.report``; never call ``fields.finish()``."""

    def module_families(self, module: ModuleT) -> list[DeclaredFamily]:
        """Families that depend on the module (http's json_metrics, tcp's probe_expect_info)."""
        return []

    def module_self_families(self, module: ModuleT) -> list[FamilySpec]:
        """Self-metric families of a source (``source`` label) its prober writes into its ``own`` group."""
        return []

    @abstractmethod
    def prober(self, module: ModuleT, shared: SharedT, own: Group) -> Prober:
        """The module compiled once per source (may import heavy libraries; on the event loop, no blocking I/O).
        ``own`` is the source's self-metrics group, for the families of ``module_self_families``."""

    def open_shared(self, context: SourceContext) -> SharedT:
        """The kind's resources in a running agent (see Shared); made when its first source is built."""
        return Shared()  # type: ignore[return-value]  # a kind with SharedT other than Shared overrides this

    def prepare_modules(self, modules: list[ModuleT], shared: SharedT) -> list[Any]:
        """Blocking work before these modules' sources are built (SSL contexts); runs in a worker thread."""
        return []

    def environment_problems(self, module: ModuleT) -> list[str]:
        """Why a source of this module cannot probe on this machine (no ping socket, say): ``kpi-agent check``
        errors at the source's line. Cheap, no network."""
        return []

    def discovery_defaults(self, module: ModuleT) -> Mapping[str, str]:
        """Labels a discovered target starts with, before relabelling (http: __scheme__, __metrics_path__)."""
        return {}

    def discovered_target(self, labels: Mapping[str, str], module: ModuleT) -> str:
        """What a discovered target probes, from its relabelled labels; raises ValueError."""
        return self.parse_target(labels["__address__"], module)

    def describe_target(self, target: str) -> str:
        """A target as the status page shows it (no credentials)."""
        return target

    # --- what the framework derives ------------------------------------------------------------------------

    @property
    def result_labels(self) -> tuple[str, ...]:
        return (*COMMON_RESULTS, *self.results)

    @property
    def builtin(self) -> tuple[FamilySpec, ...]:  # type: ignore[override]  # derived, not a constant
        return (*COMMON_FAMILIES, *RETRY_FAMILIES, *self.probe_families)

    @property
    def address_key(self) -> str:
        """What /api/v1/sources calls a failing target's address (http: url)."""
        return "address" if self.target_key == "target" else self.target_key

    def shared(self, context: SourceContext) -> SharedT:
        return context.shared(self.name, self.open_shared)

    def all_families(self, module: ModuleT) -> list[FamilySpec]:
        """Every family a source of this module may export (before omit_series)."""
        return [*COMMON_FAMILIES, *RETRY_FAMILIES, *self.probe_families,
                *(declared.spec for declared in self.module_families(module))]

    def reserved_labels(self, module: ModuleT) -> frozenset[str]:
        """Label names the agent sets on this kind's series: ``labels:`` may not take them, and a discovered
        target's own label of that name becomes exported_<name>."""
        return frozenset({TARGET_LABEL, SOURCE_LABEL, "le",
                          *(name for spec in self.all_families(module) for name in spec.labelnames)})

    def parse(self, fields: Fields, defaults: SourceDefaults) -> ProbeConfig[ModuleT] | None:
        return parse_probe_source(self, fields, defaults)

    def identity_of(self, config: ProbeConfig[ModuleT]) -> str:
        """target="<name>" for a source of one target; a discovering source is source="<name>", and each of
        its targets adds target="<address>"."""
        return SOURCE_LABEL if config.discovery is not None else TARGET_LABEL

    def families(self, config: ProbeConfig[ModuleT]) -> list[DeclaredFamily]:
        line, path = config.where
        fixed = (*COMMON_FAMILIES, *(RETRY_FAMILIES if config.retries else ()), *self.probe_families)
        declared = [DeclaredFamily(spec, line, path) for spec in fixed]
        declared += self.module_families(config.module)
        return [family for family in declared if family.spec.name not in config.omit_series]

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

    def target_rules(self, config: ProbeConfig[ModuleT]) -> TargetRules:
        from agent.discovery.targets import TargetRules

        assert config.discovery is not None
        module = config.module
        return TargetRules(config.name, config.labels, config.discovery.relabel,
                           lambda labels: self.discovered_target(labels, module),
                           self.discovery_defaults(config.module), self.reserved_labels(config.module))

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
