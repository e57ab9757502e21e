"""What every source kind shares: the context it runs in, the self-metrics reported for it, and the shape of
a kind.

A source is one configured thing to collect from (an HTTP target, a set of log files). Each kind is one
``SourceKind`` (``agent.sources.kinds`` lists them): it parses its config section, declares every family its
sources will write before any exists (config checks and ``rules check`` read those declarations), and builds
a source. What the sources of a kind share in a running agent (a client session, SSL contexts, probe slots,
the positions file) is a ``Shared`` the kind asks the ``SourceContext`` for: made when its first source is
built, told of reloads, closed at stop; the context and the runtime name no kind. The runtime, not the source,
owns the common self-metrics: it creates a ``SourceStats`` and hands it in, so a kind's own attributes can
never shadow them. A fault in what a source collects from (a dead target, a bad line) is recorded as data,
never raised: one source can never stop another.
"""

from __future__ import annotations

import functools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from agent.config.fields import Fields
from agent.config.model import AgentConfig, SourceDefaults
from agent.config.problems import Problem
from agent.runtime.shard import UNSHARDED, Shard
from agent.series.family import FamilySpec, counter, gauge
from agent.series.store import Group, Member, Store
from agent.series.table import AnyTableFamily, Declared, RowSchema, TableFamily, TableRow


class Shared:
    """Resources the sources of one kind (or every prober kind) share in a running agent: a client session,
    SSL contexts, probe slots, the log positions file. Made on the event loop when the first source that needs
    them is built, told of every reload, closed when the agent stops."""

    def reconfigure(self, config: AgentConfig) -> None:
        """The agent's config after a reload (a new ``global`` block, say); the sources are already swapped."""

    async def close(self) -> None:
        """Release what the resources hold; the agent is stopping and every source has stopped."""


SharedT = TypeVar("SharedT", bound=Shared)


@dataclass
class SourceContext:
    """Shared by all sources of one running agent; names no kind."""

    store: Store | None = None  # sources that discover targets attach their targets' groups to it
    shard: Shard = UNSHARDED  # the share of the targets this replica probes
    config: AgentConfig | None = None  # the running config (the ``global`` block shared resources read)
    resources: dict[str, Shared] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # kinds prepare in worker threads

    def shared(self, key: str, make: Callable[[SourceContext], SharedT]) -> SharedT:
        """The resources under ``key``, made by ``make(self)`` the first time they are asked for (from the event
        loop or a kind's ``prepare`` thread: making them must not need the loop)."""
        with self._lock:
            found = self.resources.get(key)
            if found is None:
                found = self.resources[key] = make(self)
        return found  # type: ignore[return-value]  # one key, one maker: the same type

    def reconfigure(self, config: AgentConfig) -> None:
        self.config = config
        for resources in list(self.resources.values()):
            resources.reconfigure(config)

    async def close(self) -> None:
        resources, self.resources = list(self.resources.values()), {}
        for shared in reversed(resources):
            await shared.close()


@dataclass(frozen=True)
class DeclaredFamily:
    """A family a source will write, with where the config asked for it (for errors)."""

    spec: FamilySpec
    line: int | None
    field: str


IDENTITY_LABEL = "source"  # self-metrics of every kind carry source="<name>"

STATS_FAMILIES = (
    gauge("kpi_agent_source_last_collection_duration_seconds", "How long the source's last collection took",
          ["kind"]),
    counter("kpi_agent_source_collections_total", "Collections run by the source (probes, log batches)", ["kind"]),
    counter("kpi_agent_source_collection_errors_total",
            "Collections that failed (target down, unreadable file, bad data)", ["kind"]),
)


@functools.lru_cache(maxsize=32)
def stats_schema(kind: str, counters: tuple[FamilySpec, ...] = ()) -> RowSchema:
    """The self-metrics of one source of ``kind`` as a row of a table (``source="<name>"`` its row label): the
    ``STATS_FAMILIES``, then ``counters`` (unlabelled, born at 0). One object per kind and set of counters, so the
    store keeps one table of such rows."""
    labels = ((kind,),)
    duration, collections, errors = STATS_FAMILIES
    return RowSchema(f"{kind} sources", (Declared(duration, labels), Declared(collections, labels, labels),
                                         Declared(errors, labels, labels),
                                         *(Declared(spec, ((),), ((),)) for spec in counters)), IDENTITY_LABEL)


class SourceStats(ABC):
    """The ``kpi_agent_source_*`` series of one source, and the facts the status page shows about it.

    Two homes, one class each, picked by the source's kind when the runtime builds the source
    (``SourceKind.source_stats``): ``GroupStats``, the source's self-metrics group (``source="<name>"``), where
    its kind may write families of its own; ``RowStats``, a row of the store's table of such rows
    (``stats_schema``), for a source whose self-metrics are known in advance (a one-target prober's): the same
    series without a group of four families per source (about 2 KiB of the 10 that one-URL sources cost at ten
    thousand).
    """

    __slots__ = ("_labels", "last_result", "last_success", "last_error", "last_error_text")

    def __init__(self, kind: str):
        self._labels = _kind_labels(kind)
        self.last_result: str | None = None
        self.last_success: float | None = None  # Unix time
        self.last_error: float | None = None
        self.last_error_text: str | None = None

    @property
    @abstractmethod
    def member(self) -> Group | TableRow:
        """What the runtime attaches to the store (and detaches when the source goes)."""

    @property
    def group(self) -> Group:
        """The self-metrics group, where a source's kind writes families of its own."""
        raise TypeError(f"{type(self).__name__} has no group: its source writes no self-metric family of its own")

    def record(self, started: float, ok: bool, result: str | None = None, error: str | None = None) -> None:
        """One collection that began at ``started`` (``time.perf_counter()``). ``error`` is shown to operators:
        it must hold no secret."""
        self._write(time.perf_counter() - started, ok)
        self.last_result = result or ("success" if ok else "error")
        if ok:
            self.last_success = time.time()
        else:
            self.last_error = time.time()
            self.last_error_text = error

    @abstractmethod
    def _write(self, duration: float, ok: bool) -> None:
        """The series of one collection: its duration, one more collection, one more error unless ``ok``."""

    @abstractmethod
    def ensure(self, spec: FamilySpec) -> None:
        """Make the unlabelled counter ``spec`` exist at 0."""

    @abstractmethod
    def count(self, spec: FamilySpec, amount: float = 1.0) -> None:
        """Add to the unlabelled counter ``spec`` (declared with ``ensure``)."""

    @property
    @abstractmethod
    def collections(self) -> float:
        """Collections run so far."""


class GroupStats(SourceStats):
    """A source's self-metrics in its own group (``source="<name>"``), created by the runtime with it."""

    __slots__ = ("_group", "_duration", "_collections", "_errors")

    def __init__(self, group: Group, kind: str):
        super().__init__(kind)
        self._group = group
        duration, collections, errors = STATS_FAMILIES
        self._duration = group.gauge(duration)
        self._collections = group.counter(collections)
        self._errors = group.counter(errors)
        self._collections.ensure(self._labels)
        self._errors.ensure(self._labels)

    @property
    def member(self) -> Group:
        return self._group

    @property
    def group(self) -> Group:
        return self._group

    def _write(self, duration: float, ok: bool) -> None:
        self._duration.set(self._labels, duration)
        self._collections.inc(self._labels)
        if not ok:
            self._errors.inc(self._labels)

    def ensure(self, spec: FamilySpec) -> None:
        self._group.counter(spec).ensure(())

    def count(self, spec: FamilySpec, amount: float = 1.0) -> None:
        self._group.counter(spec).inc((), amount)

    @property
    def collections(self) -> float:
        return self._collections.values.get(self._labels, 0.0)


class RowStats(SourceStats):
    """A source's self-metrics as a row of a ``stats_schema`` table: its counters are born at 0 with the row;
    writes while the row is not attached are dropped."""

    __slots__ = ("row",)

    def __init__(self, row: TableRow, kind: str):
        super().__init__(kind)
        self.row = row

    @property
    def member(self) -> TableRow:
        return self.row

    def _write(self, duration: float, ok: bool) -> None:
        if (table := self.row.table) is None:
            return
        slot, families = self.row.slot, table.ordered
        _cells(families[0]).set(slot, self._labels, duration)
        _cells(families[1]).inc(slot, self._labels)
        if not ok:
            _cells(families[2]).inc(slot, self._labels)

    def ensure(self, spec: FamilySpec) -> None:
        """Nothing to do: the row's counters are born at 0."""

    def count(self, spec: FamilySpec, amount: float = 1.0) -> None:
        if (table := self.row.table) is not None:
            _cells(table.families[spec.name]).inc(self.row.slot, (), amount)

    @property
    def collections(self) -> float:
        table = self.row.table
        found = _cells(table.ordered[1]).value(self.row.slot, self._labels) if table is not None else None
        return found or 0.0


@functools.lru_cache(maxsize=32)
def _kind_labels(kind: str) -> tuple[str]:
    return (kind,)  # one tuple per kind, not per source


def _cells(family: AnyTableFamily) -> TableFamily:
    assert isinstance(family, TableFamily)
    return family


ConfigT = TypeVar("ConfigT")


class Source(ABC, Generic[ConfigT]):
    __slots__ = ("config", "name", "group", "stats", "context", "__weakref__")  # kinds may add theirs (or a __dict__)

    kind: str  # the kind's name (a class attribute of most kinds' sources)

    def __init__(self, config: ConfigT, group: Member, stats: SourceStats, context: SourceContext):
        self.config = config
        self.name: str = config.name  # type: ignore[attr-defined]
        self.group = group  # the source's data series (a group; a prober's: a table, or a row of one)
        self.stats = stats  # the source's self-metrics (group: stats.group)
        self.context = context

    @abstractmethod
    async def run(self) -> None:
        """Collect until cancelled. Must not raise for faults of the target or the data."""

    def start(self, crashed: Callable[[BaseException], None]) -> bool:
        """Start collecting without a task of its own, if the source has nothing to do between collections that
        something else starts (a one-target prober: the agent's probe schedule); ``crashed`` gets what a
        collection raised (a bug). False: the runtime runs ``run`` in a task instead."""
        return False

    def stop(self) -> None:
        """Stop what ``start`` started (collections in flight are cancelled)."""

    def details(self) -> dict[str, Any]:
        """Kind-specific facts for the status page (what is collected from, how it is going); no secrets."""
        return {}


class SourceKind(ABC, Generic[ConfigT]):
    """One kind of source: its config section, the families it declares, and how to build one."""

    name: ClassVar[str]  # the config section (``http:``) and the ``kind`` label
    identity: ClassVar[str]  # the label naming a source on its data series (``identity_of`` may vary it)
    builtin: ClassVar[tuple[FamilySpec, ...]] = ()  # families every source of the kind writes: no other may

    @abstractmethod
    def parse(self, fields: Fields, defaults: SourceDefaults) -> ConfigT | None:
        """Validate one item of the section; every problem goes to ``fields.report``."""

    def identity_of(self, config: ConfigT) -> str:
        """The label naming this source on its data series."""
        return self.identity

    def data_labels(self, config: Any) -> dict[str, str]:
        """Constant labels on every data series of the source: its identity label, then its ``labels:``."""
        return {self.identity_of(config): config.name, **config.labels}

    @abstractmethod
    def families(self, config: ConfigT) -> list[DeclaredFamily]:
        """Every data family the source writes."""

    def self_families(self, config: ConfigT) -> list[FamilySpec]:
        """Self-metric families beyond ``STATS_FAMILIES`` (labelled by ``source``)."""
        return []

    def shard_key(self, config: ConfigT) -> str | None:
        """What decides which replica runs the source when the agent is sharded; None: every replica runs it
        (log files are local; a discovering source shards its targets itself)."""
        return None

    def prepare(self, configs: list[ConfigT], context: SourceContext) -> list[Any]:
        """Blocking work the sources of these configs need before they are built (reading CA bundles): the
        runtime runs it in a worker thread. Returns what must stay referenced until they are built."""
        return []

    def check(self, config: ConfigT, file: str, shard: Shard = UNSHARDED) -> tuple[list[Problem], int | None]:
        """What ``kpi-agent check`` says of a valid source beyond its config: problems of what it reads now
        (target files, permissions; no network), and how many targets it would probe (None: not a
        discovering source)."""
        return [], None

    @abstractmethod
    def build(self, config: ConfigT, group: Member, stats: SourceStats, context: SourceContext) -> Source[ConfigT]:
        """A ready source writing to ``group`` (data) and ``stats``; raises only for what changed on disk
        since the config was checked."""

    def data_group(self, config: Any, owner: str) -> Member:
        """The detached, empty data group of one source."""
        return Group(owner, self.data_labels(config), self.identity_of(config))

    def stats_group(self, config: Any, owner: str) -> Group:
        """The detached, empty self-metrics group of one source (what config checks register its self
        families in)."""
        return Group(owner, {IDENTITY_LABEL: config.name}, IDENTITY_LABEL)

    def source_stats(self, config: Any, owner: str) -> SourceStats:
        """The detached self-metrics of one source, as the runtime attaches them (``member``): in its group;
        a kind whose sources' self-metrics are known in advance may keep them in a row instead."""
        return GroupStats(self.stats_group(config, owner), self.name)
