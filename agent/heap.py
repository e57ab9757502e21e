"""How the agent treats Python's cyclic garbage collector.

Ten thousand targets are a few hundred thousand long-lived objects (series, families, probers). Built with the
collector running, each of its full collections scans all that were built so far: building 10,000 sources took
twice as long as building them with it paused. Once running, a full collection over that heap blocks the event
loop for tens of milliseconds, delaying every probe due meanwhile. So the long-lived objects are built with the
collector paused and then frozen (``gc.freeze``: moved out of the collector's view); collections then scan only
what probes allocate. A reload first unfreezes and collects once, so whatever a replaced source left in
reference cycles is freed, then freezes the new set.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def building_long_lived() -> Iterator[None]:
    """Pause the collector while long-lived objects are built; freeze them once built."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.freeze()


def release_replaced() -> None:
    """Collect once over everything (the objects of replaced sources among them), then freeze what is left."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
