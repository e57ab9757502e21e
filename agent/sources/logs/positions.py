"""Read offsets of log files and journal cursors, persisted so a restart neither loses nor re-reads lines.

Only offsets of lines (and cursors of journal entries) already counted into the store are recorded. The file
is written atomically and privately (``write_atomically``: an exclusive temp file no planted link can redirect,
readable by the owner only, fsync, rename), every few seconds when something changed and on shutdown. A
corrupt or unreadable file is a warning, never a crash (promtail once crash-looped on a truncated one: loki #1457).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config.files import write_atomically
from agent.sources.base import Shared, SourceContext

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 5.0


@dataclass(frozen=True)
class Position:
    dev: int
    ino: int
    offset: int


class Positions:
    def __init__(self, path: str | None, flush_interval: float = FLUSH_INTERVAL):
        self.path = Path(path) if path else None
        self.flush_interval = flush_interval
        self._files: dict[str, dict[str, Position]] = {}
        self._cursors: dict[str, str] = {}  # journal source -> cursor of the last entry counted
        self._dirty = False
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            for source, files in raw["sources"].items():
                self._files[source] = {p: Position(int(v["dev"]), int(v["ino"]), int(v["offset"]))
                                       for p, v in files.items()}
            self._cursors = {str(source): str(cursor) for source, cursor in raw.get("cursors", {}).items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._files, self._cursors = {}, {}
            log.warning("positions file unreadable or corrupt; starting without saved offsets",
                        extra={"path": str(self.path), "error": str(exc)})

    def get(self, source: str, path: str) -> Position | None:
        return self._files.get(source, {}).get(path)

    def set(self, source: str, path: str, position: Position) -> None:
        files = self._files.setdefault(source, {})
        if files.get(path) != position:
            files[path] = position
            self._dirty = True

    def forget(self, source: str, path: str) -> None:
        if self._files.get(source, {}).pop(path, None) is not None:
            self._dirty = True

    def cursor(self, source: str) -> str | None:
        return self._cursors.get(source)

    def set_cursor(self, source: str, cursor: str | None) -> None:
        if self._cursors.get(source) != cursor:
            if cursor is None:
                del self._cursors[source]
            else:
                self._cursors[source] = cursor
            self._dirty = True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            self.flush()

    def flush(self) -> None:
        if self.path is None or not self._dirty:
            return
        document = {"version": 1, "sources": {
            source: {p: {"dev": v.dev, "ino": v.ino, "offset": v.offset} for p, v in sorted(files.items())}
            for source, files in sorted(self._files.items())}, "cursors": dict(sorted(self._cursors.items()))}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(document).encode())
            self._dirty = False
        except OSError as exc:
            log.warning("cannot write positions file; will retry", extra={"path": str(self.path),
                                                                          "error": str(exc)})


class SharedPositions(Shared):
    """The positions file of a running agent, shared by its log and journal sources: loaded when the first one
    is built, written every few seconds while something changed, and when the agent stops."""

    def __init__(self, context: SourceContext | None = None, positions: Positions | None = None):
        config = context.config if context is not None else None
        self.positions = positions or Positions(config.positions_file if config is not None else None)
        self.configured = config.positions_file if config is not None else None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.positions.run(), name="positions")

    def reconfigure(self, config: Any) -> None:
        if config.positions_file != self.configured:
            log.warning("positions_file changed: it takes effect at the next restart",
                        extra={"running": self.configured, "configured": config.positions_file})
            self.configured = config.positions_file

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.positions.flush()


def positions_of(context: SourceContext) -> Positions:
    """The agent's positions (made and started on first use, on the event loop)."""
    shared = context.shared("positions", SharedPositions)
    shared.start()
    return shared.positions
