"""HTTP source: probes a URL (blackbox-style) and extracts JSON metrics. STUB: to be written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent import yamlsrc
from agent.sources.base import Source
from agent.yamlsrc import Fields

if TYPE_CHECKING:
    from agent.config import GlobalConfig


@dataclass(frozen=True)
class HttpSourceConfig:
    name: str
    url: str
    interval: float
    timeout: float


def parse_http_source(fields: Fields, global_: GlobalConfig) -> HttpSourceConfig | None:
    name = fields.get("name", yamlsrc.nonempty_string)
    url = fields.get("url", yamlsrc.nonempty_string)
    interval = fields.get("interval", yamlsrc.duration, global_.interval)
    timeout = fields.get("timeout", yamlsrc.duration, global_.timeout)
    fields.finish()
    if None in (name, url, interval, timeout):
        return None
    return HttpSourceConfig(name, url, interval, timeout)


class HttpSource(Source):
    kind = "http"

    async def run(self) -> None:
        raise NotImplementedError
