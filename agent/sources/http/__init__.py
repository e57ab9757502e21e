"""HTTP sources: blackbox_exporter-style probes and json_exporter-style metrics from a response body, of one URL
or of targets discovered Prometheus's way (static_configs, file_sd_configs, http_sd_configs, relabel_configs).

config (what to probe, the families it writes) -> tls (shared SSL contexts), timing (phases from aiohttp's
hooks) and jsonmetrics (values from the body) -> source (one probe per interval, recorded into the store);
discovery (target groups -> targets, pure) -> targets (a source that keeps a prober per discovered target).
"""

from __future__ import annotations

from typing import Any

from agent.sources.base import (
    IDENTITY_LABEL as SOURCE_LABEL,
)
from agent.sources.base import (
    DeclaredFamily,
    Source,
    SourceContext,
    SourceDefaults,
    SourceKind,
    SourceStats,
)
from agent.sources.http.config import (
    EXPORTED_SERIES,
    IDENTITY_LABEL,
    JSON_ERRORS,
    PROBE_FAMILIES,
    PROBES_SKIPPED,
    RESULTS,
    SD_FAMILIES,
    HttpSourceConfig,
    declared_families,
    parse_http_source,
)
from agent.store import FamilySpec, Group
from agent.yamlsrc import Fields


class HttpKind(SourceKind[HttpSourceConfig]):
    name = "http"
    identity = IDENTITY_LABEL
    builtin = PROBE_FAMILIES

    def parse(self, fields: Fields, defaults: SourceDefaults) -> HttpSourceConfig | None:
        return parse_http_source(fields, defaults)

    def identity_of(self, config: HttpSourceConfig) -> str:
        """target="<name>" for a source of one URL; a discovering source is source="<name>", and each of its
        targets adds target="<address>"."""
        return SOURCE_LABEL if config.discovery is not None else IDENTITY_LABEL

    def families(self, config: HttpSourceConfig) -> list[DeclaredFamily]:
        return declared_families(config)

    def self_families(self, config: HttpSourceConfig) -> list[FamilySpec]:
        return [JSON_ERRORS, PROBES_SKIPPED, *(SD_FAMILIES if config.discovery is not None else ())]

    def shard_key(self, config: HttpSourceConfig) -> str | None:
        """A source of one URL runs on one replica; a discovering source runs on all and shards its targets."""
        return config.name if config.discovery is None else None

    def prepare(self, configs: list[HttpSourceConfig], context: SourceContext) -> list[Any]:
        tls = [config.tls for config in configs]
        tls += [sd.tls for config in configs if config.discovery for sd in config.discovery.http]
        return context.tls.prepare(tls)

    def build(self, config: HttpSourceConfig, group: Group, stats: SourceStats,
              context: SourceContext) -> Source[HttpSourceConfig]:
        # imported here: they load aiohttp (19 MiB), which an agent without HTTP sources never needs
        from agent.sources.http.source import HttpSource
        from agent.sources.http.targets import DiscoveringHttpSource

        if config.discovery is not None:
            return DiscoveringHttpSource(config, group, stats, context)
        return HttpSource(config, group, stats, context)


KIND = HttpKind()

__all__ = ["EXPORTED_SERIES", "KIND", "RESULTS", "HttpSourceConfig"]
