"""What every prober kind of one running agent shares: the probe slots (``global.max_concurrent_probes``
bounds probes of every kind together), the one schedule that starts every probe, and the histogram of how late
probes start. Made when the first prober source is built: an agent without probes has none of it."""

from __future__ import annotations

from typing import Any

from agent.series.selfmetrics import PROBE_DELAY
from agent.series.store import Group
from agent.sources.base import Shared, SourceContext
from agent.sources.probe.schedule import ProbeScheduler
from agent.sources.probe.slots import ProbeSlots

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

    def reconfigure(self, config: Any) -> None:
        self.slots.resize(_slots(config))  # takes effect at once, without restarting a source


def probe_resources(context: SourceContext) -> ProbeResources:
    return context.shared(KEY, ProbeResources)
