"""``file_sd_configs``: target files matched by glob patterns, polled (one stat per file per second), read
again when they change, appear or vanish, and every ``refresh_interval`` in any case, as Prometheus does."""

from __future__ import annotations

import asyncio
import glob
import math
from typing import Any

from agent.config.files import file_stamp
from agent.config.problems import ConfigError
from agent.discovery.config import FileSdConfig
from agent.discovery.discoverer import Up, Update
from agent.discovery.targetgroup import read_target_file

WATCH_INTERVAL = 1.0  # seconds between two looks at the files


def target_files(patterns: tuple[str, ...]) -> dict[str, tuple[int, int, int, int]]:
    """The files the file_sd patterns match now, each with its stamp (blocking: a glob and a stat)."""
    found = {}
    for pattern in patterns:
        for path in glob.glob(pattern):
            stamp = file_stamp(path, regular_only=True)
            if stamp is not None:
                found[path] = stamp
    return found


def problems_text(exc: ConfigError) -> str:
    return "; ".join(str(p) for p in exc.problems[:3])[:500]


class FileDiscoverer:
    mechanism = "file"

    def __init__(self, config: FileSdConfig, watch_interval: float = WATCH_INTERVAL):
        self.config = config
        self.watch_interval = watch_interval

    async def run(self, up: Up) -> None:
        loop = asyncio.get_running_loop()
        stamps: dict[str, Any] = {}
        last_full = -math.inf
        while True:
            found = await asyncio.to_thread(target_files, self.config.files)
            full = loop.time() - last_full >= self.config.refresh_interval
            if full:
                last_full = loop.time()
            for path in stamps.keys() - found.keys():
                del stamps[path]
                up(Update(self.mechanism, path))
            for path, stamp in found.items():
                if full or stamps.get(path) != stamp:
                    stamps[path] = stamp  # a bad file is read again when it changes, not every second
                    up(await self._read(path))
            await asyncio.sleep(self.watch_interval)

    async def _read(self, path: str) -> Update:
        try:
            groups = await asyncio.to_thread(read_target_file, path)
        except ConfigError as exc:
            return Update(self.mechanism, path, error=problems_text(exc))
        return Update(self.mechanism, path, groups)
