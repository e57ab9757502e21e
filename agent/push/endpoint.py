"""One ``remote_write`` endpoint at work, and the set of them the runtime starts, reloads and stops.

An endpoint runs two tasks of its own, so a slow endpoint never delays another, nor the agent:

- **rounds**: every ``interval`` it samples the store (``Sampler``), and queues the batches in its buffer;
- **sending**: it reads the buffer in order and posts each record until the receiver takes it or refuses it
  for good. The records of one round (one timestamp) go out up to ``max_shards`` at a time; the next round
  starts only when the whole round is acknowledged, so every series' samples arrive in timestamp order, also
  while catching up after an outage.

Disk work (appending, reading, compressing, the cursor) runs in the endpoint's own I/O thread: a full, slow or
hung disk stalls that endpoint's queue, never the event loop. Trouble is logged once when it starts (with its
reason) and once when it ends, and counted all along in the ``kpi_agent_remote_storage_*`` families.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent.push import wire
from agent.push.buffer import Buffer, Position, Record
from agent.push.config import RemoteWriteConfig
from agent.push.sampler import RoundStats, Sampler
from agent.push.sender import Outcome, Sender
from agent.series import selfmetrics as m
from agent.series.store import Group, Store

log = logging.getLogger(__name__)

T = TypeVar("T")
_APPENDS_IN_FLIGHT = 8  # batches handed to the I/O thread before the round waits for the oldest
_READ_AHEAD = 64  # records read from the buffer per trip to the I/O thread (about 2 MB)
Item = tuple[Position, Record]


@dataclass
class _Trouble:
    """What is wrong with the endpoint now, and since when (None while all is well)."""

    text: str
    since: float


class Endpoint:
    def __init__(self, config: RemoteWriteConfig, store: Store, buffer_dir: Path | None,
                 extra_labels: dict[str, str], ssl_context: object | None = None):
        self.config = config
        self.store = store
        self.sender = Sender(config, ssl_context)
        self.sampler = Sampler(extra_labels, config.write_relabel, config.queue.max_samples_per_send)
        self.buffer = Buffer(buffer_dir / config.name if buffer_dir is not None else None, config.max_buffer_size,
                             config.queue.capacity)
        self.group = Group(f"remote_write/{config.name}", {"remote_name": config.name, "url": self.sender.url},
                           identity="remote_name")
        g = self.group
        self._samples, self._samples_in = g.counter(m.REMOTE_SAMPLES), g.counter(m.REMOTE_SAMPLES_IN)
        self._failed, self._retried = g.counter(m.REMOTE_FAILED), g.counter(m.REMOTE_RETRIED)
        self._dropped, self._pending = g.counter(m.REMOTE_DROPPED), g.gauge(m.REMOTE_PENDING)
        self._highest_in, self._highest_sent = g.gauge(m.REMOTE_HIGHEST_IN), g.gauge(m.REMOTE_HIGHEST_SENT)
        self._bytes, self._duration = g.counter(m.REMOTE_BYTES), g.histogram(m.REMOTE_DURATION)
        self._buffer_bytes, self._buffer_max = g.gauge(m.REMOTE_BUFFER_BYTES), g.gauge(m.REMOTE_BUFFER_MAX)
        self._on_disk, self._buffer_errors = g.gauge(m.REMOTE_BUFFER_ON_DISK), g.counter(m.REMOTE_BUFFER_ERRORS)
        self._round_duration, self._skipped = g.gauge(m.REMOTE_ROUND_DURATION), g.counter(m.REMOTE_ROUNDS_SKIPPED)
        for family in (self._samples, self._samples_in, self._failed, self._retried, self._skipped, self._bytes):
            family.ensure(())
        for reason in ("write_relabel", "buffer_full"):
            self._dropped.ensure((reason,))
        for reason in ("disk", "corrupted"):
            self._buffer_errors.ensure((reason,))
        self._buffer_max.set((), config.max_buffer_size)
        self._io_pool = ThreadPoolExecutor(1, thread_name_prefix=f"remote-write-{config.name}")
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_timestamp_ms = 0
        self.trouble: _Trouble | None = None
        self.last_success: float | None = None
        self.last_error: float | None = None
        self._buffer_reason: str | None = None  # the disk problem last logged

    async def _io(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, func, *args)

    async def start(self) -> None:
        await self._io(self.buffer.open)
        self._last_timestamp_ms = self.buffer.newest_timestamp_ms
        self._refresh()
        self._tasks = [asyncio.create_task(self._rounds(), name=f"remote_write/{self.config.name}/rounds"),
                       asyncio.create_task(self._send(), name=f"remote_write/{self.config.name}/send")]
        log.info("remote_write endpoint started", extra={
            "remote_name": self.config.name, "url": self.sender.url, "pending_samples": self.buffer.pending_samples,
            "buffer": str(self.buffer.directory) if self.buffer.directory else "memory"})

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.sender.close()
        await self._io(self.buffer.close)
        self._io_pool.shutdown(wait=False)

    # --- rounds ---------------------------------------------------------------------------------------------

    async def _rounds(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.interval
        due = loop.time()
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            started = loop.time()
            try:
                await self.round()
            except Exception:  # a bug: logged and counted as a crash would be, the next round tries again
                log.exception("remote_write round failed", extra={"remote_name": self.config.name})
            self._round_duration.set((), loop.time() - started)
            due += interval
            now = loop.time()
            if due < now:  # the round took longer than the interval: skip the rounds it overran
                missed = int((now - due) // interval) + 1
                self._skipped.inc((), missed)
                due += missed * interval

    async def round(self) -> int:
        """Sample the store once and queue the batches; returns the samples queued."""
        # never a timestamp at or before the last one queued (a clock stepping back, a restart's buffer)
        timestamp_ms = max(int(time.time() * 1000), self._last_timestamp_ms + 1)
        self._last_timestamp_ms = timestamp_ms
        stats = RoundStats()
        loop = asyncio.get_running_loop()
        appends: deque[asyncio.Future[None]] = deque()
        async for batch in self.sampler.round(self.store.snapshot(), timestamp_ms, stats):
            # compressed here (a fraction of a millisecond per batch), appended in the I/O thread, in order; a
            # few appends in flight rather than a round trip per batch, which costs two GIL hand-overs each on
            # a busy machine
            record = Record(wire.compress(batch.body), batch.samples, batch.timestamp_ms)
            appends.append(loop.run_in_executor(self._io_pool, self.buffer.append, record))
            if len(appends) >= _APPENDS_IN_FLIGHT:
                await appends.popleft()
                self._wake.set()
        for append in appends:
            await append
        self._wake.set()
        log.debug("remote_write round queued", extra={"remote_name": self.config.name, "timestamp_ms": timestamp_ms,
                                                       "samples": stats.samples, "stale": stats.stale})
        self._samples_in.inc((), stats.samples)
        self._dropped.inc(("write_relabel",), stats.dropped_by_relabel)
        self._highest_in.set((), timestamp_ms / 1000)
        self._refresh()
        return stats.samples

    # --- sending --------------------------------------------------------------------------------------------

    async def _send(self) -> None:
        while True:
            try:
                await self._send_rounds()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: logged; what was not acknowledged is read again from the buffer
                log.exception("remote_write sending failed; starting over", extra={"remote_name": self.config.name})
                await self._io(self.buffer.rewind)
                await asyncio.sleep(1.0)

    async def _send_rounds(self) -> None:
        waiting: list[Item] = []  # read from the buffer, not yet sent: the start of the next round
        while True:
            if not waiting:
                self._wake.clear()
                waiting = await self._io(self.buffer.read, _READ_AHEAD)
                if not waiting:
                    self._refresh()
                    await self._wake.wait()
                    continue
            timestamp = waiting[0][1].timestamp_ms
            count = next((i for i, (_, record) in enumerate(waiting) if record.timestamp_ms != timestamp),
                         len(waiting))
            batch, waiting = waiting[:count], waiting[count:]
            await self._deliver_all(batch)
            await self._io(self.buffer.ack, batch)
            self._refresh()

    async def _deliver_all(self, items: list[Item]) -> None:
        """Every record of ``items`` (one round), up to max_shards at once."""
        slots = asyncio.Semaphore(self.config.queue.max_shards)

        async def one(record: Record) -> None:
            async with slots:
                await self._deliver(record)

        await asyncio.gather(*(one(record) for _, record in items))

    async def _deliver(self, record: Record) -> None:
        queue = self.config.queue
        backoff = queue.min_backoff
        while True:
            outcome = await self.sender.post(record.payload)
            self._duration.observe((), outcome.seconds)
            if outcome.verdict == "sent":
                self._samples.inc((), record.samples)
                self._bytes.inc((), len(record.payload))
                self._highest_sent.set((), max(self._highest_sent.values.get((), 0.0), record.timestamp_ms / 1000))
                self.last_success = time.time()
                self._recovered()
                return
            self.last_error = time.time()
            if outcome.verdict == "refused":
                self._failed.inc((), record.samples)
                log.error("remote_write batch refused: dropped", extra={
                    "remote_name": self.config.name, "url": self.sender.url, "samples": record.samples,
                    "error": outcome.message})
                self.trouble = _Trouble(f"refused a batch ({outcome.message})", time.time())
                return
            self._retried.inc((), record.samples)
            self._failing(outcome)
            wait = outcome.retry_after if outcome.retry_after is not None else backoff
            backoff = min(backoff * 2, queue.max_backoff)
            await asyncio.sleep(wait)

    def _failing(self, outcome: Outcome) -> None:
        text = f"retrying: {outcome.message}"
        if self.trouble is None or self.trouble.text != text:
            if self.trouble is None or not self.trouble.text.startswith("retrying"):
                log.warning("remote_write endpoint failing; samples wait in the buffer", extra={
                    "remote_name": self.config.name, "url": self.sender.url, "error": outcome.message})
            self.trouble = _Trouble(text, self.trouble.since if self.trouble else time.time())

    def _recovered(self) -> None:
        if self.trouble is not None and self.trouble.text.startswith("retrying"):
            log.info("remote_write endpoint recovered", extra={
                "remote_name": self.config.name, "url": self.sender.url,
                "failing_seconds": round(time.time() - self.trouble.since, 1),
                "pending_samples": self.buffer.pending_samples})
            self.trouble = None

    # --- reporting ------------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        buffer = self.buffer
        self._pending.set((), max(0, buffer.pending_samples))
        self._buffer_bytes.set((), buffer.disk_bytes)
        self._on_disk.set((), 0.0 if buffer.disk_problem else 1.0)
        self._dropped.set(("buffer_full",), buffer.losses.dropped_full)
        self._buffer_errors.set(("disk",), buffer.losses.disk_errors)
        self._buffer_errors.set(("corrupted",), buffer.losses.corrupted)
        if buffer.disk_problem != self._buffer_reason and buffer.directory is not None:
            if buffer.disk_problem:
                log.warning("remote_write buffer cannot use the disk; samples wait in memory", extra={
                    "remote_name": self.config.name, "reason": buffer.disk_problem,
                    "memory_capacity_samples": self.config.queue.capacity})
            else:
                log.info("remote_write buffer is on disk again", extra={"remote_name": self.config.name})
            self._buffer_reason = buffer.disk_problem

    def status(self) -> dict[str, Any]:
        """What the status page and /api/v1/remote_write show."""
        buffer = self.buffer
        state = "failing" if self.trouble and self.trouble.text.startswith("retrying") else \
            "behind" if buffer.pending_samples > 0 else "up to date"
        return {
            "name": self.config.name, "url": self.sender.url, "state": state,
            "error": self.trouble.text if self.trouble else None,
            "failing_since": self.trouble.since if self.trouble else None,
            "last_success": self.last_success, "last_error": self.last_error,
            "pending_samples": max(0, buffer.pending_samples), "buffer_bytes": buffer.disk_bytes,
            "buffer_max_bytes": buffer.max_bytes, "buffer": str(buffer.directory) if buffer.directory else None,
            "buffer_problem": buffer.disk_problem,
            "samples_sent": self._samples.values.get((), 0.0), "samples_failed": self._failed.values.get((), 0.0),
            "samples_dropped": buffer.losses.dropped_full,
        }


class RemoteWrite:
    """Every configured endpoint. ``apply`` makes exactly the given configs run: an unchanged endpoint keeps
    its task and queue across a reload, a changed one restarts on the same buffer (same name), a removed one
    stops (its buffer directory stays on disk, for when it comes back)."""

    def __init__(self, store: Store):
        self.store = store
        self.endpoints: dict[str, Endpoint] = {}
        self._settings: tuple[Path | None, tuple[tuple[str, str], ...]] | None = None

    async def apply(self, configs: tuple[RemoteWriteConfig, ...], buffer_dir: str | None,
                    extra_labels: dict[str, str]) -> None:
        directory = Path(buffer_dir) if buffer_dir else None
        settings = (directory, tuple(sorted(extra_labels.items())))
        if settings != self._settings:  # every endpoint restarts on its buffer: its labels or directory changed
            await self.stop()
            self._settings = settings
        wanted = {config.name: config for config in configs}
        stale = [name for name, endpoint in self.endpoints.items() if wanted.get(name) != endpoint.config]
        fresh = [config for name, config in wanted.items() if name not in self.endpoints or name in stale]
        loop = asyncio.get_running_loop()
        contexts = [await loop.run_in_executor(None, _ssl_context, config) for config in fresh]
        stopped = [self.endpoints.pop(name) for name in stale]
        for endpoint in stopped:
            await endpoint.stop()
        started = [Endpoint(config, self.store, directory, extra_labels, context)
                   for config, context in zip(fresh, contexts, strict=True)]
        self.store.swap(remove=[endpoint.group.owner for endpoint in stopped],
                        add=[endpoint.group for endpoint in started])
        for endpoint in started:
            await endpoint.start()
            self.endpoints[endpoint.config.name] = endpoint

    async def stop(self) -> None:
        for endpoint in self.endpoints.values():
            await endpoint.stop()
        self.store.swap(remove=[endpoint.group.owner for endpoint in self.endpoints.values()])
        self.endpoints.clear()

    def status(self) -> list[dict[str, Any]]:
        return [endpoint.status() for endpoint in self.endpoints.values()]


def _ssl_context(config: RemoteWriteConfig) -> object | None:
    """The endpoint's SSL context (blocking: it reads the CA bundle), or None for http://."""
    if not config.url.startswith("https"):
        return None
    from agent.sources.probe.client import make_ssl_context

    return make_ssl_context(config.tls)
