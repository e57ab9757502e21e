"""What every prober kind of one running agent shares: the probe slots (``global.max_concurrent_probes``
bounds probes of every kind together), the one schedule that starts every probe, and the histogram of how late
probes start. Made when the first prober source is built: an agent without probes has none of it."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from agent.series.selfmetrics import PROBE_DELAY
from agent.series.store import Group
from agent.sources.base import Shared, SourceContext
from agent.sources.probe.schedule import ProbeScheduler
from agent.sources.probe.slots import ProbeSlots

if TYPE_CHECKING:
    from agent.sources.probe.model import Prober, ProberPlugin

DEFAULT_SLOTS = 64
KEY = "probe"


def _slots(config: Any) -> int:
    return config.global_.max_concurrent_probes if config is not None else DEFAULT_SLOTS


class ProbeResources(Shared):
    def __init__(self, context: SourceContext):
        self.slots = ProbeSlots(_slots(context.config))
        self.schedule = ProbeScheduler()
        group = context.store.group("agent/probes") if context.store is not None else Group("agent/probes")
        self.delay = group.histogram(PROBE_DELAY)
        # (kind, id of a module) -> its prober, while a source uses it (the prober keeps its module, so the id is
        # not reused meanwhile)
        self._probers: weakref.WeakValueDictionary[tuple[str, int], Prober] = weakref.WeakValueDictionary()

    def prober(self, kind: ProberPlugin[Any, Any], module: Any, context: SourceContext) -> Prober:
        """The prober of ``module``, shared by every source with that module object whose prober writes no
        self family of its own (ten thousand one-URL sources configured alike compile one)."""
        key = (kind.name, id(module))
        found = self._probers.get(key)
        if found is None:
            found = self._probers[key] = kind.prober(module, kind.shared(context), None)
        return found

    def reconfigure(self, config: Any) -> None:
        self.slots.resize(_slots(config))  # takes effect at once, without restarting a source


def probe_resources(context: SourceContext) -> ProbeResources:
    return context.shared(KEY, ProbeResources)
