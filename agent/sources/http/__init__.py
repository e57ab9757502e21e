"""HTTP sources: blackbox_exporter-style probes and json_exporter-style metrics from a response body, of one URL
or of targets discovered Prometheus's way. A prober kind (agent.sources.probe): config (the module keys and the
families) -> prober (one attempt, redirects followed) on an HTTP/1.1 client of its own (request, connection,
head, body, proxy) -> checks (what decides the probe, JSON metrics); client (the SSL contexts every HTTP source
shares)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.config.fields import Fields
from agent.formatting import excerpt
from agent.series.family import FamilySpec
from agent.series.store import Group
from agent.sources.base import DeclaredFamily, SourceContext
from agent.sources.http.config import (
    ALWAYS,
    HTTP_FAMILIES,
    JSON_ERRORS,
    PHASE_DURATION,
    PHASES,
    RESULTS,
    HttpModule,
    json_families,
    parse_module,
)
from agent.sources.probe.families import COMMON_FAMILIES, COMMON_RESULTS, RETRY_FAMILIES
from agent.sources.probe.kind import ProberKind
from agent.sources.probe.model import Prober, ProbeSettings

if TYPE_CHECKING:
    from agent.sources.http.client import HttpShared

# Label names json_metrics labels may not take (the agent sets them on every HTTP series)
_RESERVED = frozenset({"target", "source", "le", *(name for spec in (*COMMON_FAMILIES, *RETRY_FAMILIES, *HTTP_FAMILIES)
                                                   for name in spec.labelnames)})


class HttpKind(ProberKind[HttpModule, "HttpShared"]):
    name = "http"
    target_key = "url"
    results = RESULTS
    probe_families = HTTP_FAMILIES
    always = ALWAYS
    known_labels = {PHASE_DURATION: tuple((phase,) for phase in PHASES)}

    def parse_target(self, value: Any, module: HttpModule) -> str:
        from agent.config import values

        return _probe_url(values.nonempty_string(value))

    def parse_module(self, fields: Fields, settings: ProbeSettings) -> HttpModule:
        return parse_module(fields, settings, _RESERVED)

    def module_families(self, module: HttpModule) -> list[DeclaredFamily]:
        return json_families(module)

    def module_self_families(self, module: HttpModule) -> list[FamilySpec]:
        return [JSON_ERRORS] if module.json_metrics else []

    def open_shared(self, context: SourceContext) -> HttpShared:
        from agent.sources.http.client import HttpShared

        return HttpShared(context)

    def prepare_modules(self, modules: list[HttpModule], shared: HttpShared) -> list[Any]:
        return shared.tls.prepare(module.tls for module in modules)

    def prober(self, module: HttpModule, shared: HttpShared, own: Group | None) -> Prober:
        from agent.sources.http.prober import HttpProber  # here: an agent without HTTP sources never loads it

        return HttpProber(module, shared, own)

    def discovery_defaults(self, module: HttpModule) -> Mapping[str, str]:
        return {"__scheme__": "http", "__metrics_path__": "/"}

    def discovered_target(self, labels: Mapping[str, str], module: HttpModule) -> str:
        """``__address__`` when it is an http(s) URL, else ``<__scheme__>://<__address__><__metrics_path__>``
        (``host:port`` from a service registry)."""
        address = labels["__address__"]
        if "://" in address:
            url = address
        else:
            path = labels.get("__metrics_path__", "/")
            url = f"{labels.get('__scheme__', 'http')}://{address}{path if path.startswith('/') else '/' + path}"
        return _probe_url(url)

    def describe_target(self, target: str) -> str:
        from agent.sources.http.request import without_credentials

        return without_credentials(target)


def _probe_url(url: str) -> str:
    """``url`` if a probe can request it (read by the probe's own URL parser), else ValueError saying why."""
    import ipaddress
    import re

    from agent.sources.http.request import parse_url, without_credentials

    host = parse_url(url).host
    valid = re.match(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$", host) is not None
    if not valid:
        try:
            ipaddress.ip_address(host.split("%")[0])
            valid = True
        except ValueError:
            pass
    if not valid:
        raise ValueError(f"{excerpt(without_credentials(url))} is not an http:// or https:// URL with a host")
    return url


KIND = HttpKind()
EXPORTED_SERIES = tuple(name for spec in (*COMMON_FAMILIES, *HTTP_FAMILIES) for name in spec.sample_names)
ALL_RESULTS = (*COMMON_RESULTS, *RESULTS)

__all__ = ["ALL_RESULTS", "EXPORTED_SERIES", "KIND", "HttpModule"]
