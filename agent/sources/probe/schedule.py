"""When probes start: one schedule for every probed target of the agent, of every kind.

Each target has a tick every ``interval``, at a stable offset from when it joined (hashed from its key, so ten
thousand targets spread over the interval instead of firing together). One timer wakes the scheduler at the
next tick, and a probe task is started per target due; between probes a target holds no task, no timer and no
coroutine. (With a sleeping task per target, ten thousand targets kept a hundred thousand short-lived objects
alive at any time, enough for Python's full garbage collections to block the event loop for 50 to 170 ms every
few seconds.)

Ticks fall on a 10 ms grid of the loop's clock, so targets due within the same 10 ms start in one turn of the
loop, which cut the CPU a probe costs at 667 probes/s by a fifth; a target's ticks stay one interval apart.
A tick that comes while the target's previous probe is still running starts it right away once that one ends,
late; further ticks lost meanwhile, or lost to a stall of the whole process, are skipped and counted
(``kpi_agent_probes_skipped_total``), never recorded against the target.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import zlib
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

TICK = 0.01  # seconds: probes start on this grid of the loop's clock


def on_grid(when: float) -> float:
    return math.ceil(when / TICK) * TICK


def offset(key: str, interval: float) -> float:
    """Where in the interval a target fires: stable per key, spread evenly over many keys."""
    return (zlib.crc32(key.encode("utf-8", "surrogatepass")) / 2**32) * interval


class Scheduled(Protocol):
    """What the scheduler needs of a target."""

    interval: float

    @property
    def key(self) -> str: ...  # its hash places the target in the interval

    def probe(self, due: float) -> Coroutine[Any, Any, object]: ...

    def skipped(self, ticks: int) -> None: ...


class _Entry:
    """A target's place in the schedule."""

    __slots__ = ("target", "on_crash", "first", "tick", "task", "late", "active")

    def __init__(self, target: Scheduled, on_crash: Callable[[BaseException], None], first: float):
        self.target = target
        self.on_crash = on_crash
        self.first = first
        self.tick = 0
        self.task: asyncio.Task[object] | None = None
        self.late: float | None = None  # a tick that came while the previous probe ran
        self.active = True

    def due(self) -> float:
        return on_grid(self.first + self.tick * self.target.interval)


class ProbeScheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Entry]] = []
        self._entries: dict[int, _Entry] = {}  # id(target) -> entry
        self._order = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None

    def add(self, target: Scheduled, on_crash: Callable[[BaseException], None]) -> None:
        """Probe ``target`` from now on; ``on_crash`` gets what a probe raised (a bug, not a target's fault)."""
        loop = asyncio.get_running_loop()
        entry = _Entry(target, on_crash, loop.time() + offset(target.key, target.interval))
        self._entries[id(target)] = entry
        self._push(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="probe scheduler")
        elif self._wake is not None and not self._wake.done() and self._heap[0][2] is entry:
            self._wake.set_result(None)  # due before the timer the scheduler sleeps on

    def remove(self, target: Scheduled) -> None:
        """Stop probing ``target``; a probe of it in flight is cancelled."""
        entry = self._entries.pop(id(target), None)
        if entry is None:
            return
        entry.active = False  # its place in the heap is dropped when it comes up
        if entry.task is not None:
            entry.task.cancel()
        if not self._entries and self._task is not None:
            self._task.cancel()
            self._task = None
            self._heap.clear()

    def _push(self, entry: _Entry) -> None:
        heapq.heappush(self._heap, (entry.due(), next(self._order), entry))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while heap:
            wake_at = heap[0][0]
            if wake_at > loop.time():
                self._wake = loop.create_future()
                timer = loop.call_at(wake_at, _release, self._wake)
                try:
                    await self._wake
                finally:
                    timer.cancel()
            now = loop.time()
            while heap and heap[0][0] <= now:
                due, _, entry = heapq.heappop(heap)
                if entry.active:
                    self._tick(entry, due, now)

    def _tick(self, entry: _Entry, due: float, now: float) -> None:
        interval = entry.target.interval
        missed = math.floor((now - due) / interval)
        if missed > 0:  # the whole process stalled: those ticks are gone
            entry.target.skipped(missed)
            entry.tick += missed
            due = entry.due()
        entry.tick += 1
        self._push(entry)
        if entry.task is None:
            self._start(entry, due)
        elif entry.late is None:
            entry.late = due
        else:
            entry.target.skipped(1)

    def _start(self, entry: _Entry, due: float) -> None:
        entry.task = asyncio.create_task(entry.target.probe(due))
        entry.task.add_done_callback(lambda task: self._done(entry, task))

    def _done(self, entry: _Entry, task: asyncio.Task[object]) -> None:
        entry.task = None
        if task.cancelled() or not entry.active:
            return
        crash = task.exception()
        if crash is not None:
            entry.on_crash(crash)
            return
        if entry.late is not None:
            due, entry.late = entry.late, None
            self._start(entry, due)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
