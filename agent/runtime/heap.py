"""How the agent treats Python's cyclic garbage collector.

Ten thousand targets are a few hundred thousand long-lived objects (series, families, probers). Built with the
collector running, each of its full collections scans all that were built so far: building 10,000 sources took
twice as long as building them with it paused. Once running, a full collection over that heap would block the
event loop for about half a second, delaying every probe due meanwhile. So long-lived objects are built with
the collector paused, then frozen (``gc.freeze``: moved out of its view); collections scan only what probes
allocate. Before each freeze, one full collection of what is not frozen yet (what was just built, and what probes
left since the last freeze: it never scans the frozen heap) frees the garbage waiting there, so it is not frozen
with them; a collection of the young generations only left what had reached the oldest (half of the probe
connections found frozen after reloads under load).

The collector never looks at a frozen object again, so what becomes garbage after a freeze must be freed by
reference counting alone. What a reload replaces: a source and its parts hold no reference cycle (a discovering
source and its discovery held each other, which kept every replaced source's table and probers: 2.7 MiB per
reload of 3,000 targets; tests/sources/test_discovery.py replaces a source of every prober kind with the
collector off). What was in flight at a freeze: a probe's connection (agent.sources.probe.stream breaks the
cycle Python 3.11 leaves in a closed socket transport).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_paused_for_start = False


def pause_for_start() -> None:
    """``kpi-agent run`` calls this before importing its modules: they and the first config are long-lived too,
    and the collections their allocations set off (about 50 while a log agent imports, 4-8 ms of its start)
    find next to nothing. The first ``building_long_lived`` freezes what was built until then as it begins,
    without the full collection every other freeze does: over the 23,000 objects of a log agent's imports that
    took 6-12 ms, for 560 objects of garbage (pure-Python classes that their C versions replaced, enums
    converted on import: 120 KB, +32 KB of resident memory), which stay. It resumes the collector, as does
    ``resume_after_start``."""
    global _paused_for_start
    if gc.isenabled():
        gc.disable()
        _paused_for_start = True


def resume_after_start() -> None:
    """The collector runs again if ``pause_for_start`` paused it and nothing has resumed it yet (a command that
    stopped before building anything: a flag refused, an in-process test)."""
    global _paused_for_start
    if _paused_for_start:
        _paused_for_start = False
        gc.enable()


@contextmanager
def building_long_lived() -> Iterator[None]:
    """Pause the collector while long-lived objects are built; collect what is garbage, then freeze the rest."""
    global _paused_for_start
    starting, _paused_for_start = _paused_for_start, False
    enabled = gc.isenabled() or starting
    if starting:
        gc.freeze()  # what importing built, without a full collection over it (pause_for_start says why)
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()
        gc.freeze()
