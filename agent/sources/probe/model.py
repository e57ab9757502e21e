"""What a prober source is, for every part of the framework that runs one (config reading, sources, targets):
its config (``ProbeConfig``), the common settings a kind's module may read, and ``ProberPlugin``, what a kind
provides (its module keys, families and ``Prober``) with what the framework derives from that.

``agent.sources.probe.kind.ProberKind`` adds how the agent parses, checks and builds such sources; this module
imports none of the modules that do, so each of them can name the kind it serves without an import cycle.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from agent.config.fields import Fields
from agent.discovery.config import DiscoveryConfig
from agent.series.family import FamilySpec
from agent.series.store import Group
from agent.sources.base import IDENTITY_LABEL as SOURCE_LABEL
from agent.sources.base import DeclaredFamily, Shared, SourceContext
from agent.sources.probe.families import COMMON_FAMILIES, COMMON_RESULTS, RETRY_FAMILIES

if TYPE_CHECKING:
    from agent.discovery.targets import TargetRules
    from agent.sources.probe.result import ProbeResult

ModuleT = TypeVar("ModuleT")
SharedT = TypeVar("SharedT", bound=Shared)

TARGET_LABEL = "target"  # names a target on its series: the source's name, or a discovered target's address


@dataclass(frozen=True)
class ProbeSettings:
    """The common keys of a source, as its kind's ``parse_module`` may need them (to refuse a label clash)."""

    name: str | None
    interval: float
    timeout: float
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)  # ten thousand one-URL sources hold ten thousand
class ProbeConfig(Generic[ModuleT]):
    name: str
    target: str | None  # one target (http: its url); or, with discovery, none and the discovered targets
    interval: float
    timeout: float  # per attempt
    module: ModuleT  # the kind's own settings (blackbox's module), shared by every target of the source
    retries: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    omit_series: frozenset[str] = frozenset()  # family names this source does not export
    discovery: DiscoveryConfig | None = None
    where: tuple[int | None, str] = field(default=(None, ""), compare=False)  # (line, field path) for errors


class Prober(Protocol):
    """A kind's probe of one source's module, shared by every target of the source."""

    async def probe(self, target: str, result: ProbeResult) -> None:
        """One attempt: return for success, raise ProbeFailed for a failure of the target (or let OSError,
        ssl.SSLError, TimeoutError propagate: the framework words them). Never catch CancelledError."""
        ...


class ProberPlugin(Generic[ModuleT, SharedT]):
    """What a prober kind provides, and what the framework derives from it (see ``agent.sources.probe.kind``)."""

    name: ClassVar[str]
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
    def prober(self, module: ModuleT, shared: SharedT, own: Group | None) -> Prober:
        """The module compiled (may import heavy libraries; on the event loop, no blocking I/O). ``own`` is the
        source's self-metrics group, for the families of ``module_self_families``; a module without any gets
        None and one prober serves every source of that module (it must keep ``module`` referenced and allow
        weak references: no ``__slots__`` without ``__weakref__``)."""

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

    def families(self, config: ProbeConfig[ModuleT]) -> list[DeclaredFamily]:
        line, path = config.where
        fixed = (*COMMON_FAMILIES, *(RETRY_FAMILIES if config.retries else ()), *self.probe_families)
        declared = [DeclaredFamily(spec, line, path) for spec in fixed]
        declared += self.module_families(config.module)
        return [family for family in declared if family.spec.name not in config.omit_series]

    def target_rules(self, config: ProbeConfig[ModuleT]) -> TargetRules:
        from agent.discovery.targets import TargetRules

        assert config.discovery is not None
        module = config.module
        return TargetRules(config.name, config.labels, config.discovery.relabel,
                           lambda labels: self.discovered_target(labels, module),
                           self.discovery_defaults(config.module), self.reserved_labels(config.module))
