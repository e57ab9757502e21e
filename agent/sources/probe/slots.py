"""Probe slots: at most ``global.max_concurrent_probes`` probes in flight, a bound a reload can change.

A probe waits for a slot before its timeout starts, and waits at most its timeout: one that gets no slot in
that time is skipped (the agent is saturated, not the target down). Waiters are served first come, first
served. Lowering the capacity lets probes in flight finish; new ones wait until fewer than the new capacity
are running.
"""

from __future__ import annotations

import asyncio
from collections import deque


class ProbeSlots:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.in_use = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._pending = 0  # waiters neither served nor expired

    async def acquire(self, timeout: float) -> bool:
        """Take a slot; False if none freed up within ``timeout`` seconds."""
        if self.in_use < self.capacity and not self._pending:
            self.in_use += 1
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        self._pending += 1
        expiry = loop.call_later(timeout, self._expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # served as we were cancelled: hand the slot on
            elif not waiter.done():
                self._pending -= 1
                waiter.cancel()
            raise
        finally:
            expiry.cancel()

    def release(self) -> None:
        self.in_use -= 1
        self._serve()

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._serve()

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            self._pending -= 1
            waiter.set_result(False)

    def _serve(self) -> None:
        while self._waiters and self.in_use < self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._pending -= 1
                self.in_use += 1
                waiter.set_result(True)
