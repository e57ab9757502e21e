"""Log source config. STUB: to be written."""

from __future__ import annotations

from dataclasses import dataclass

from agent import yamlsrc
from agent.yamlsrc import Fields


@dataclass(frozen=True)
class LogSourceConfig:
    name: str


def parse_log_source(fields: Fields) -> LogSourceConfig | None:
    name = fields.get("name", yamlsrc.nonempty_string)
    fields.finish()
    return LogSourceConfig(name) if name else None
