"""HTTP module config: how to probe (blackbox_exporter's http module keys, flat in the source) and the families
an HTTP probe writes. The keys every prober shares (url, interval, timeout, retries, labels, discovery) are
read by agent.sources.probe.config."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from agent.config import regex, values
from agent.config.fields import Fields
from agent.config.validation import family_problems, metric_name
from agent.formatting import cut, excerpt
from agent.series.family import FamilySpec, counter, gauge
from agent.sources.base import DeclaredFamily
from agent.sources.probe.client import BasicAuth, TlsConfig, parse_client
from agent.sources.probe.config import ProbeSettings
from agent.sources.probe.families import CERT_EXPIRY, FAILED_DUE_TO_REGEX, TLS_VERSION

# probes_total{result} values of HTTP probes beyond the common ones (success, timeout, dns_error,
# connection_refused, connection_error, tls_error)
RESULTS = (
    "too_many_redirects",   # more than 10 hops
    "status_code",          # status not in valid_status_codes
    "body_too_large",       # body longer than body_size_limit
    "body_regex",           # a fail_if_body_* regexp decided
    "invalid_json",         # json_metrics configured and the body is not JSON
    "auth_file_error",      # password_file or bearer_token_file unreadable at probe time
)
PHASES = ("resolve", "connect", "tls", "processing", "transfer")
MAX_REDIRECTS = 10
DEFAULT_BODY_SIZE_LIMIT = 10 * 1024 * 1024

STATUS_CODE = gauge("probe_http_status_code", "Response HTTP status code")
CONTENT_LENGTH = gauge("probe_http_content_length", "Content-Length of the response, -1 unknown")
BODY_LENGTH = gauge("probe_http_uncompressed_body_length", "Length of the uncompressed body")
REDIRECTS = gauge("probe_http_redirects", "Redirects followed")
SSL = gauge("probe_http_ssl", "Whether the final response came over TLS")
VERSION = gauge("probe_http_version", "HTTP version of the response")
PHASE_DURATION = gauge("probe_http_duration_seconds", "Duration of each phase, summed over redirects", ["phase"])
# Every family an HTTP probe writes besides the common ones, blackbox_exporter's names.
HTTP_FAMILIES = (STATUS_CODE, CONTENT_LENGTH, BODY_LENGTH, REDIRECTS, SSL, VERSION, FAILED_DUE_TO_REGEX,
                 PHASE_DURATION, CERT_EXPIRY, TLS_VERSION)
ALWAYS = {STATUS_CODE: 0.0, CONTENT_LENGTH: -1.0, BODY_LENGTH: 0.0, REDIRECTS: 0.0, SSL: 0.0, VERSION: 0.0,
          FAILED_DUE_TO_REGEX: 0.0}
JSON_ERRORS = counter("kpi_agent_json_extract_errors_total", "JSON values that could not be extracted", ["metric"])


@dataclass(frozen=True)
class JsonMetric:
    name: str  # as exported; counters end in _total
    help: str
    type: str  # counter | gauge
    path: str
    value: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # value starting with "$" = JSONPath
    where: tuple[int | None, str] = field(default=(None, ""), compare=False)  # (line, field path) for errors

    @functools.cached_property
    def spec(self) -> FamilySpec:
        """Built once: every target of a discovering source shares its sources' specs."""
        make = counter if self.type == "counter" else gauge
        return make(self.name, self.help, self.labels)


@dataclass(frozen=True)
class HttpModule:
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may carry credentials
    body: str = ""
    valid_status_codes: tuple[int, ...] = ()  # empty = any 2xx
    follow_redirects: bool = True
    fail_if_body_matches_regexp: tuple[str, ...] = ()
    fail_if_body_not_matches_regexp: tuple[str, ...] = ()
    body_size_limit: int = DEFAULT_BODY_SIZE_LIMIT
    tls: TlsConfig = field(default_factory=TlsConfig)
    basic_auth: BasicAuth | None = None
    bearer_token_file: str | None = None
    json_metrics: tuple[JsonMetric, ...] = ()


def json_families(module: HttpModule) -> list[DeclaredFamily]:
    return [DeclaredFamily(metric.spec, *metric.where) for metric in module.json_metrics]


# --- parsing ------------------------------------------------------------------------------------------------


def _status_codes(value: Any) -> tuple[int, ...]:
    codes = values.list_of(values.integer)(value)
    for code in codes:
        if not 100 <= code <= 599:
            raise ValueError(f"{excerpt(code)} is not an HTTP status code")
    return tuple(codes)


def _regexes(value: Any) -> tuple[str, ...]:
    return tuple(p.pattern for p in values.list_of(regex.parse)(value))


def jsonpath(value: Any) -> str:
    text = values.nonempty_string(value)
    if not text.startswith("$"):
        raise ValueError(f"{excerpt(text)} is not a JSONPath (it starts with $)")
    from jsonpath_ng.ext import parse as parse_jsonpath  # lazily: an agent without json_metrics never loads it

    try:
        parse_jsonpath(text)
    except Exception as exc:  # jsonpath-ng raises its own errors, and plain Exception for some inputs
        raise ValueError(f"JSONPath {excerpt(text)} does not parse: {cut(str(exc))}") from None
    return text


def _parse_json_metric(item: Fields, reserved: set[str]) -> JsonMetric | None:
    name = item.get("name", metric_name)
    kind = item.get("type", values.one_of("counter", "gauge"), "gauge")
    help_text = item.get("help", values.string, None)
    path = item.get("path", jsonpath)
    value = item.get("value", jsonpath, None)
    raw_labels = item.get("labels", values.label_map, {})
    for label, expression in raw_labels.items():
        if expression.startswith("$"):
            try:
                jsonpath(expression)
            except ValueError as exc:
                item.error("labels", f"label {label!r}: {exc}")
    if name is not None and kind is not None:
        for key, message in family_problems(name, kind, tuple(raw_labels),
                                            dict.fromkeys(reserved, "is already set by the source")):
            item.error(key, message)
    item.finish()
    if name is None or path is None:
        return None
    return JsonMetric(name, help_text or f"{name} read from JSON", kind, path, value, raw_labels,
                      (item.line_of("name"), item.field("name")))


def parse_module(fields: Fields, settings: ProbeSettings, reserved: frozenset[str]) -> HttpModule:
    """The http module keys of a source; ``reserved``: label names json_metrics labels may not take."""
    method = fields.get("method", values.one_of("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"), "GET")
    headers = fields.get("headers", values.string_map, {})
    body = fields.get("body", values.string, "")
    valid = fields.get("valid_status_codes", _status_codes, ())
    follow = fields.get("follow_redirects", values.boolean, True)
    fail_match = fields.get("fail_if_body_matches_regexp", _regexes, ())
    fail_not_match = fields.get("fail_if_body_not_matches_regexp", _regexes, ())
    limit = fields.get("body_size_limit", values.size, DEFAULT_BODY_SIZE_LIMIT)
    tls, basic_auth, bearer = parse_client(fields)
    json_metrics = []
    seen: set[str] = set()
    for item, path, line in fields.items("json_metrics"):
        entry = Fields(item, path, fields.report, line)
        metric = _parse_json_metric(entry, {*reserved, *settings.labels}) if entry.ok else None
        if metric and metric.name in seen:
            fields.report.error(line, f"{path}.name", f"{metric.name!r} is defined twice")
        elif metric:
            seen.add(metric.name)
            json_metrics.append(metric)
    return HttpModule(method, headers, body, valid, follow, fail_match, fail_not_match, limit, tls, basic_auth,
                      bearer, tuple(json_metrics))
