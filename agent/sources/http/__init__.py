"""HTTP sources: blackbox_exporter-style probes and json_exporter-style metrics from a response body.

config (what to probe, the families it writes) -> timing (phases from aiohttp's hooks) and jsonmetrics
(values from the body) -> source (one probe per interval, recorded into the store).
"""

from __future__ import annotations

from agent.sources.base import DeclaredFamily, SourceContext, SourceDefaults, SourceKind, SourceStats
from agent.sources.http.config import (
    EXPORTED_SERIES,
    IDENTITY_LABEL,
    JSON_ERRORS,
    PROBE_FAMILIES,
    RESULTS,
    HttpSourceConfig,
    declared_families,
    parse_http_source,
)
from agent.sources.http.source import HttpSource
from agent.sources.http.timing import trace_config
from agent.store import FamilySpec, Group
from agent.yamlsrc import Fields


class HttpKind(SourceKind[HttpSourceConfig]):
    name = "http"
    identity = IDENTITY_LABEL
    builtin = PROBE_FAMILIES

    def parse(self, fields: Fields, defaults: SourceDefaults) -> HttpSourceConfig | None:
        return parse_http_source(fields, defaults)

    def data_labels(self, config: HttpSourceConfig) -> dict[str, str]:
        return {IDENTITY_LABEL: config.name, **config.labels}

    def families(self, config: HttpSourceConfig) -> list[DeclaredFamily]:
        return declared_families(config)

    def self_families(self, config: HttpSourceConfig) -> list[FamilySpec]:
        return [JSON_ERRORS]

    def build(self, config: HttpSourceConfig, group: Group, stats: SourceStats,
              context: SourceContext) -> HttpSource:
        return HttpSource(config, group, stats, context)


KIND = HttpKind()

__all__ = ["EXPORTED_SERIES", "KIND", "RESULTS", "HttpSource", "HttpSourceConfig", "trace_config"]
