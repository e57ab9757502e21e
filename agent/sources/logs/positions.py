"""Read offsets of log files. STUB: to be written."""

from __future__ import annotations


class Positions:
    def __init__(self, path: str | None):
        self.path = path

    async def run(self) -> None:
        """Flush periodically until cancelled."""

    def flush(self) -> None:
        """Write atomically now (called on shutdown)."""
