"""Log source: follows the files its globs match and feeds their lines through the pipeline into the store.

Reading and parsing run on the event loop in bounded chunks with a yield after each, so a flood of lines
never holds up probes; with nothing to read, polling backs off to once a second (mtail PR #603).

Each ``run()`` opens its files afresh from the saved offsets, so a source restarted after a crash neither
re-reads nor skips a line. A path that is not a regular file (a directory a glob matched) is skipped with one
warning; a file that fails to read is closed, logged and retried later, never stopping the other files.

Plain lines go to the pipeline a chunk at a time as text; with ``container`` or ``multiline``, each open file
has a framer that first assembles its lines into records (``framing``).
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
import time
from typing import Any

from agent.series.store import Group
from agent.sources.base import Source, SourceContext, SourceStats
from agent.sources.logs.config import (
    EXPIRED,
    LAG,
    ROTATIONS,
    SKIPPED,
    WATCHED,
    LogSourceConfig,
)
from agent.sources.logs.fields import BatchResult
from agent.sources.logs.framing import Framed, Framer
from agent.sources.logs.pipeline import LineCounts, Pipeline, drop_too_long
from agent.sources.logs.positions import positions_of
from agent.sources.logs.tailer import Chunk, FileTail, NotAFile

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024  # per read: about 600 access-log lines, under a millisecond of parsing
CHUNKS_PER_ROUND = 16  # per file per round, so one busy file cannot starve the others
POLL_MIN, POLL_MAX = 0.05, 1.0  # seconds between rounds: fastest while busy, slowest when idle
RETRY_SECONDS = 10.0  # before reopening a file that failed to read

# The kubelet's layouts: /var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log, and the symlinks
# /var/log/containers/<pod>_<namespace>_<container>-<64 hex id>.log. Namespace and pod names hold no "_".
_POD_LOG_RE = re.compile(r"(?:^|/)(?P<namespace>[^/_]+)_(?P<pod>[^/_]+)_[^/_]+/(?P<container>[^/]+)/[^/]+$")
_CONTAINER_LOG_RE = re.compile(r"(?:^|/)(?P<pod>[^/_]+)_(?P<namespace>[^/_]+)_(?P<container>[^/]+)-[0-9a-f]{64}"
                               r"\.log$")


def kubernetes_labels(path: str) -> tuple[str, str, str] | None:
    """(namespace, pod, container) from a container log's path, or None for another layout."""
    found = _POD_LOG_RE.search(path) or _CONTAINER_LOG_RE.search(path)
    return (found["namespace"], found["pod"], found["container"]) if found else None


def _may_hold_a_line_over(data: bytes, limit: int) -> bool:
    """False when no line of ``data`` is longer than ``limit`` bytes, found without splitting it: a line that
    long would fill a whole window of limit // 2 bytes, aligned on multiples of limit // 2, with no newline."""
    if len(data) <= limit:
        return False
    step = limit // 2
    return any(data.find(b"\n", start, start + step) < 0 for start in range(0, len(data) - step + 1, step))


def matches_a_file(pattern: str) -> bool:
    """Whether a log path (a glob, or a plain path) matches anything now."""
    return bool(glob.glob(pattern)) if glob.has_magic(pattern) else os.path.lexists(pattern)


class LogSource(Source[LogSourceConfig]):
    kind = "logs"

    def __init__(self, config: LogSourceConfig, group: Group, stats: SourceStats, context: SourceContext):
        super().__init__(config, group, stats, context)
        own = stats.group
        self.counts = LineCounts(own)
        self._rotations = own.counter(ROTATIONS)
        self._rotations.ensure(())
        self._watched, self._lag = own.gauge(WATCHED), own.gauge(LAG)
        self.pipeline = Pipeline(config.metrics, group, own.counter(SKIPPED), own.counter(EXPIRED),
                                 fmt=config.format, pattern=config.pattern, max_series=config.max_series_per_metric,
                                 file_labels=config.file_labels)
        self._new_framer = (lambda: Framer(config.container, config.multiline, config.max_line_bytes)) \
            if config.framed else None
        self.positions = positions_of(context)
        self.tails: dict[str, FileTail] = {}
        self._file_labels: dict[str, tuple[str, ...]] = {}  # label values of each followed path
        self._first_discovery = True  # start_at applies to files found when the source first starts
        self._refused: set[str] = set()  # paths already warned about, so a bad glob match logs once
        self._never_matched = set(config.paths)  # patterns no file has matched yet: warned about once, at start
        self._retry_at: dict[str, float] = {}  # files that failed to read, and when to try them again

    async def run(self) -> None:
        delay = POLL_MIN
        self.tails = {}
        try:
            while True:
                started = time.perf_counter()
                self._discover()
                progressed, failed = False, None
                for tail in list(self.tails.values()):
                    try:
                        read_to_end = True
                        for _ in range(CHUNKS_PER_ROUND):
                            chunk = tail.read(CHUNK_BYTES)
                            self._count_too_long(tail)
                            if chunk is None:
                                break
                            self._consume(tail, chunk)
                            progressed = True
                            await asyncio.sleep(0)
                        else:
                            read_to_end = False
                        if read_to_end and self._new_framer is not None:
                            self._complete_waiting_records(tail)
                    except OSError as exc:  # unreadable now (I/O error, permissions changed): retry later
                        failed = f"{tail.path}: {exc.strerror or exc}"
                        log.warning("cannot read log file; retrying from its saved offset in "
                                    f"{RETRY_SECONDS:g}s", extra={"source": self.name, "error": failed})
                        tail.close()
                        del self.tails[tail.path]
                        self._retry_at[tail.path] = time.monotonic() + RETRY_SECONDS
                        continue
                    self._retire_if_gone(tail)
                self._update_gauges()
                if progressed or failed:
                    self.stats.record(started, failed is None, error=failed)
                self.pipeline.expire(time.monotonic())
                delay = POLL_MIN if progressed else min(delay * 2, POLL_MAX)
                await asyncio.sleep(0 if progressed else delay)
        finally:
            for tail in self.tails.values():
                tail.close()

    def details(self) -> dict[str, Any]:
        files = []
        for path, tail in sorted(self.tails.items()):
            handle = tail.current
            if handle is None:
                files.append({"path": path, "offset": None, "size": None, "lag_bytes": tail.lag()})
                continue
            try:
                size: int | None = handle.size()
            except OSError:
                size = None
            files.append({"path": path, "offset": handle.offset, "size": size, "lag_bytes": tail.lag(),
                          "draining_rotated": len(tail.draining)})
        return {"paths": list(self.config.paths), "files": files}

    def _discover(self) -> None:
        """Start following paths the globs match now; at the very start, honour start_at and saved offsets."""
        for pattern in self.config.paths:
            paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            if pattern in self._never_matched:
                if paths if glob.has_magic(pattern) else os.path.lexists(pattern):
                    self._never_matched.discard(pattern)
                elif self._first_discovery:
                    log.warning("no file matches the path; reading it once one does", extra={"source": self.name,
                                                                                              "path": pattern})
            for path in paths:
                if path in self.tails or path in self._refused or self._retry_at.get(path, 0) > time.monotonic():
                    continue
                saved = self.positions.get(self.name, path)
                at_end = self.config.start_at == "end" and self._first_discovery
                try:
                    tail, warning = FileTail.open(path, saved, at_end, self.config.max_line_bytes, self._new_framer)
                except NotAFile as exc:
                    self._refused.add(path)
                    log.warning("skipping a path that is not a regular file", extra={"source": self.name,
                                                                                      "path": path,
                                                                                      "error": str(exc)})
                    continue
                if not tail.watching:
                    continue
                if warning:
                    log.warning(warning, extra={"source": self.name, "path": path})
                self.tails[path] = tail
                self._file_labels[path] = labels = self._labels_of(path)
                self.pipeline.ensure(labels)
                self._save(tail)
        self._first_discovery = False

    def _labels_of(self, path: str) -> tuple[str, ...]:
        values: tuple[str, ...] = (path,) if self.config.filename_label else ()
        if self.config.kubernetes_labels:
            found = kubernetes_labels(path)
            if found is None:
                log.warning("not a Kubernetes container log path: namespace, pod and container are empty",
                            extra={"source": self.name, "path": path})
            values += found or ("", "", "")
        return values

    def _consume(self, tail: FileTail, chunk: Chunk) -> None:
        labels = self._file_labels[tail.path]
        framer = chunk.handle.framer
        if framer is None:
            if chunk.data:
                self._consume_lines(chunk.data, labels)
        else:
            lines = chunk.data.split(b"\n")
            lines.pop()  # data ends with a newline (or is empty): the last piece is empty
            framed = framer.feed(lines, chunk.start, time.monotonic())
            if chunk.ends:
                framed.extend(framer.flush())
            self.counts.read(len(lines), len(chunk.data))
            self._count_records(framed, labels)
        self._save(tail)

    def _consume_lines(self, data: bytes, labels: tuple[str, ...]) -> None:
        limit = self.config.max_line_bytes
        if self.config.format == "json" and not _may_hold_a_line_over(data, limit):
            parsed = self.pipeline.process_json_chunk(data, labels)
            if parsed is not None:
                self.counts.read(parsed.lines, len(data))
                self.counts.parsed(parsed)
                return
        try:
            text: str | None = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        malformed = too_long = 0
        if text is not None and not _may_hold_a_line_over(data, limit):
            # lines counted in the bytes: bytes.replace() finds them with memchr(), str.count() tests every character
            newlines = len(data) - len(data.replace(b"\n", b"")) if self.pipeline.scans_chunks else None
            result = self.pipeline.process_text(text, labels, newlines=newlines)
        else:
            if text is not None:
                lines = text.split("\n")
                lines.pop()  # data ends with a newline: the last piece is empty
            else:
                lines = []
                for raw in data.split(b"\n")[:-1]:
                    try:
                        lines.append(raw.decode("utf-8"))
                    except UnicodeDecodeError:
                        malformed += 1
            if b"\r" in data:
                lines = [line.rstrip("\r") for line in lines]
            lines, too_long = drop_too_long(lines, limit)
            result = self.pipeline.process(lines, labels)
        self.counts.read(result.lines + malformed + too_long, len(data))
        self.counts.parsed(result, malformed, too_long)

    def _count_records(self, framed: Framed, labels: tuple[str, ...]) -> None:
        result = self.pipeline.process(framed.records, labels) if framed.records else BatchResult()
        self.counts.parsed(result, framed.malformed, framed.too_long)

    def _complete_waiting_records(self, tail: FileTail) -> None:
        """Records whose next line has not come within the framer's timeout, in files read to their end."""
        now = time.monotonic()
        labels = self._file_labels[tail.path]
        for handle in tail.handles():
            if handle.framer is not None and handle.framer.pending and handle.read_to_end():
                self._count_records(handle.framer.expire(now), labels)
        self._save(tail)

    def _count_too_long(self, tail: FileTail) -> None:
        skipped = tail.collect_too_long()
        if skipped:
            self.counts.skipped_too_long(skipped)

    def _save(self, tail: FileTail) -> None:
        position = tail.position()
        if position is not None:
            self.positions.set(self.name, tail.path, position)

    def _retire_if_gone(self, tail: FileTail) -> None:
        if tail.rotations:
            self._rotations.inc((), tail.rotations)
            tail.rotations = 0
        if not tail.watching:
            self.tails.pop(tail.path, None)
            self._file_labels.pop(tail.path, None)
            self.positions.forget(self.name, tail.path)

    def _update_gauges(self) -> None:
        self._watched.set((), sum(1 for t in self.tails.values() if t.current is not None))
        self._lag.set((), sum(t.lag() for t in self.tails.values()))
