"""What every source kind shares: the context it runs in and the self-metrics it reports.

A source is one configured thing to collect from (an HTTP target, a set of log files). Each kind lives in its
own module and subclasses ``Source``: it gets its validated config, the store group it alone writes to, and
the shared context, and runs until cancelled. A fault in what it collects from (a dead target, a bad line)
is recorded as data, never raised: one source can never stop another.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp

from agent.store import Group

if TYPE_CHECKING:
    from agent.sources.logs.positions import Positions


@dataclass
class SourceContext:
    """Shared by all sources of one running agent."""

    session: aiohttp.ClientSession  # one client session (connection pool, DNS cache) for every HTTP source
    probe_slots: asyncio.Semaphore  # bounds how many probes are in flight at once
    positions: Positions  # read offsets of log files, persisted across restarts


class Source(ABC):
    kind: ClassVar[str]

    def __init__(self, config: Any, group: Group, context: SourceContext):
        self.config = config
        self.name: str = config.name
        self.group = group
        self.context = context
        labels = ("source", "kind")
        self._stat_labels = (self.name, self.kind)
        self._duration = group.gauge("kpi_agent_source_last_collection_duration_seconds",
                                     "How long the source's last collection took", labels)
        self._collections = group.counter("kpi_agent_source_collections",
                                          "Collections run by the source", labels)
        self._errors = group.counter("kpi_agent_source_collection_errors",
                                     "Collections that failed (target down, unreadable file, bad data)", labels)
        self._collections.ensure(self._stat_labels)
        self._errors.ensure(self._stat_labels)

    def record_collection(self, started: float, ok: bool) -> None:
        """Report one collection that began at ``started`` (a ``time.perf_counter()`` value)."""
        self._duration.set(self._stat_labels, time.perf_counter() - started)
        self._collections.inc(self._stat_labels)
        if not ok:
            self._errors.inc(self._stat_labels)

    @abstractmethod
    async def run(self) -> None:
        """Collect until cancelled. Must not raise for faults of the target or the data."""
