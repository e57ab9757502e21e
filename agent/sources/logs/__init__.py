"""Log files turned into metrics: tailer (files, rotation) -> pipeline (lines -> aggregates) -> store."""

from agent.sources.logs.source import LogSource

__all__ = ["LogSource"]
