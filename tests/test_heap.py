"""agent.runtime.heap: what the agent builds is frozen out of the collector's view; garbage is not."""

import gc
import weakref

from agent.runtime import heap


class _Node:
    """An object in a reference cycle of its own: only the collector frees it."""

    def __init__(self) -> None:
        self.itself = self


def test_garbage_that_reached_the_oldest_generation_is_not_frozen_with_what_was_built():
    gc.disable()
    try:
        node = _Node()
        gc.collect(1)  # it survives a collection of the young generations: now in the oldest
        garbage = weakref.ref(node)
        del node
        with heap.building_long_lived():
            built = _Node()
        assert garbage() is None  # frozen, it would have stayed for good
        kept = weakref.ref(built)
        del built
        gc.collect()
        assert kept() is not None  # frozen: the collector no longer sees it
    finally:
        gc.enable()
