"""Log source: follows the files its globs match and feeds their lines through the pipeline into the store.

Reading and parsing run on the event loop in bounded chunks with a yield after each, so a flood of lines
never holds up probes; with nothing to read, polling backs off to once a second (mtail PR #603).
"""

from __future__ import annotations

import asyncio
import glob
import logging
import time

from agent.sources.base import Source
from agent.sources.logs.config import LogSourceConfig
from agent.sources.logs.pipeline import Pipeline
from agent.sources.logs.tailer import FileTail

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024  # per read: about 2,500 access-log lines, a few milliseconds of parsing
CHUNKS_PER_ROUND = 16  # per file per round, so one busy file cannot starve the others
POLL_MIN, POLL_MAX = 0.05, 1.0  # seconds between rounds: fastest while busy, slowest when idle


class LogSource(Source):
    kind = "logs"

    def __init__(self, config: LogSourceConfig, group, context):
        super().__init__(config, group, context)
        labels = ("source",)
        self._labels = (config.name,)
        self._lines = group.counter("kpi_agent_log_lines", "Complete log lines read", labels)
        self._unmatched = group.counter("kpi_agent_log_lines_unmatched",
                                        "Lines the pattern did not match (or logfmt lines with no field)", labels)
        self._malformed = group.counter("kpi_agent_log_lines_malformed",
                                        "Lines skipped as malformed: bad JSON, invalid UTF-8, a non-numeric value",
                                        labels)
        self._bytes = group.counter("kpi_agent_log_bytes", "Bytes of complete lines read", labels)
        self._rotations = group.counter("kpi_agent_log_rotations", "Rotations and truncations detected", labels)
        self._watched = group.gauge("kpi_agent_log_files_watched", "Files open for reading", labels)
        self._lag = group.gauge("kpi_agent_log_lag_bytes", "Bytes written to the files but not read yet", labels)
        for family in (self._lines, self._unmatched, self._malformed, self._bytes, self._rotations):
            family.ensure(self._labels)
        self.pipeline = Pipeline(config, group)
        self.tails: dict[str, FileTail] = {}
        self._started = False

    async def run(self) -> None:
        delay = POLL_MIN
        try:
            while True:
                started = time.perf_counter()
                self._discover()
                progressed = False
                for tail in list(self.tails.values()):
                    for _ in range(CHUNKS_PER_ROUND):
                        data = tail.read(CHUNK_BYTES)
                        if not data:
                            break
                        self._consume(tail, data)
                        progressed = True
                        await asyncio.sleep(0)
                    self._retire_if_gone(tail)
                self._update_gauges()
                if progressed:
                    self.record_collection(started, True)
                delay = POLL_MIN if progressed else min(delay * 2, POLL_MAX)
                await asyncio.sleep(0 if progressed else delay)
        finally:
            for tail in self.tails.values():
                tail.close()

    def _discover(self) -> None:
        """Start following paths the globs match now; at the very start, honour start_at and saved offsets."""
        for pattern in self.config.paths:
            for path in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
                if path in self.tails:
                    continue
                saved = self.context.positions.get(self.name, path)
                tail, warning = FileTail.open(path, saved, self.config.start_at == "end" and not self._started)
                if not tail.watching:
                    continue
                if warning:
                    log.warning(warning, extra={"source": self.name, "path": path})
                self.tails[path] = tail
                self._save(tail)
        self._started = True

    def _consume(self, tail: FileTail, data: bytes) -> None:
        try:
            text = data.decode("utf-8")
            malformed = 0
            lines = text.split("\n")
            lines.pop()  # data ends with a newline: the last piece is empty
        except UnicodeDecodeError:
            lines, malformed = [], 0
            for raw in data.split(b"\n")[:-1]:
                try:
                    lines.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    malformed += 1
        if b"\r" in data:
            lines = [line.rstrip("\r") for line in lines]
        result = self.pipeline.process(lines)
        labels = self._labels
        self._lines.inc(labels, result.lines + malformed)
        self._unmatched.inc(labels, result.unmatched)
        self._malformed.inc(labels, result.malformed + malformed)
        self._bytes.inc(labels, len(data))
        self._save(tail)

    def _save(self, tail: FileTail) -> None:
        position = tail.position()
        if position is not None:
            self.context.positions.set(self.name, tail.path, position)

    def _retire_if_gone(self, tail: FileTail) -> None:
        if tail.rotations:
            self._rotations.inc(self._labels, tail.rotations)
            tail.rotations = 0
        if not tail.watching:
            self.tails.pop(tail.path, None)
            self.context.positions.forget(self.name, tail.path)

    def _update_gauges(self) -> None:
        self._watched.set(self._labels, sum(1 for t in self.tails.values() if t.current is not None))
        self._lag.set(self._labels, sum(t.lag() for t in self.tails.values()))
