"""HTTP module config: how to probe (blackbox_exporter's http module keys, flat in the source) and the families
an HTTP probe writes. The keys every prober shares (url, interval, timeout, retries, labels, discovery) are
read by agent.sources.probe.config."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from agent.config import regex, values
from agent.config.fields import Fields
from agent.config.validation import family_problems, metric_name
from agent.formatting import cut, excerpt
from agent.series.family import FamilySpec, counter, gauge
from agent.sources.base import DeclaredFamily
from agent.sources.probe.client import (
    Authorization,
    BasicAuth,
    ProxyConfig,
    TlsConfig,
    existing_file,
    parse_authorizations,
    parse_client,
    parse_proxy,
)
from agent.sources.probe.families import FAILED_DUE_TO_REGEX, NET_FAMILIES, TLS_FAMILIES
from agent.sources.probe.model import ProbeSettings
from agent.sources.probe.net import IpConfig, parse_ip_config

# probes_total{result} values of HTTP probes beyond the common ones (success, timeout, dns_error,
# connection_refused, connection_error, tls_error)
RESULTS = (
    "too_many_redirects",   # more than 10 hops
    "status_code",          # status not in valid_status_codes
    "body_too_large",       # body longer than body_size_limit
    "body_regex",           # a fail_if_body_* regexp decided
    "invalid_json",         # json_metrics configured and the body is not JSON
    "auth_file_error",      # password_file, bearer_token_file or body_file unreadable at probe time
    "header_regex",         # a fail_if_header_* regexp decided, or the header it reads is missing
    "http_version",         # the response's HTTP version is not in valid_http_versions
    "ssl",                  # fail_if_ssl or fail_if_not_ssl decided
    "invalid_response",     # the target's answer is not HTTP/1.x (garbage, a head too long, a lying chunk size)
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
LAST_MODIFIED = gauge("probe_http_last_modified_timestamp_seconds", "The Last-Modified header of the response, "
                      "in Unix time")
# Every family an HTTP probe writes besides the common ones, blackbox_exporter's names.
HTTP_FAMILIES = (STATUS_CODE, CONTENT_LENGTH, BODY_LENGTH, REDIRECTS, SSL, VERSION, FAILED_DUE_TO_REGEX,
                 PHASE_DURATION, LAST_MODIFIED, *NET_FAMILIES, *TLS_FAMILIES)
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
class HeaderMatch:
    """One item of fail_if_header_matches / fail_if_header_not_matches."""

    header: str
    regexp: str
    allow_missing: bool = False


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
    authorization: Authorization | None = None
    ip: IpConfig = field(default_factory=IpConfig)
    fail_if_header_matches: tuple[HeaderMatch, ...] = ()
    fail_if_header_not_matches: tuple[HeaderMatch, ...] = ()
    fail_if_ssl: bool = False
    fail_if_not_ssl: bool = False
    valid_http_versions: tuple[str, ...] = ()
    compression: str | None = None  # gzip | deflate | br; None: the body is read as it comes
    body_file: str | None = None
    proxy: ProxyConfig | None = None
    skip_resolve_phase_with_proxy: bool = False
    header_files: tuple[tuple[str, str], ...] = ()  # http_headers' files: (header, path), read at every probe


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


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
HTTP_VERSIONS = ("HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/3.0")
COMPRESSIONS = ("gzip", "deflate", "br", "identity")
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# blackbox_exporter keys we refuse, with why (an unknown key would only say "unknown field")
NOT_SUPPORTED = {
    "enable_http3": "HTTP/3 is not spoken by the agent's HTTP client (HTTP/1.1 only)",
    "oauth2": "OAuth 2.0 client credentials are not supported yet; use authorization with credentials_file",
    "fail_if_body_json_matches_cel": "CEL expressions are not supported; use json_metrics and an alert, or "
                                     "fail_if_body_matches_regexp",
    "fail_if_body_json_not_matches_cel": "CEL expressions are not supported; use json_metrics and an alert, or "
                                         "fail_if_body_not_matches_regexp",
}


def _headers(value: Any) -> dict[str, str]:
    """Request headers: names are tokens, values hold no line break (one header cannot smuggle another)."""
    headers = values.string_map(value)
    for name, text in headers.items():
        if not name or not set(name) <= _TOKEN_CHARS:
            raise ValueError(f"{excerpt(name)} is not a header name")
        if any(char in text for char in "\r\n\0"):
            raise ValueError(f"the value of {name} holds a line break or NUL")
    return headers


# Headers http_headers may not set: the probe sets them itself, or they are credentials with keys of their own
_NOT_HTTP_HEADERS = frozenset({"authorization", "host", "connection", "content-length", "transfer-encoding",
                               "proxy-authorization", "user-agent"})


def _http_headers(fields: Fields) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """Prometheus's ``http_headers``: ``{Name: {values: [...], secrets: [...], files: [...]}}`` -> (fixed
    headers, (name, file) pairs read at every probe). Several values of a name are joined with ", "."""
    section = fields.section("http_headers")
    if section is None:
        return {}, ()
    fixed: dict[str, str] = {}
    files: list[tuple[str, str]] = []
    for name in list(section.node):
        entry = section.section(name)
        if entry is None:
            continue
        if not set(str(name)) <= _TOKEN_CHARS:
            section.error(str(name), f"{excerpt(name)} is not a header name")
        elif str(name).lower() in _NOT_HTTP_HEADERS:
            section.error(str(name), f"{name} cannot be set with http_headers")
        texts = [*entry.get("values", values.list_of(values.string), []),
                 *entry.get("secrets", values.list_of(values.string), [])]
        if any(char in text for text in texts for char in "\r\n\0"):
            entry.error("values", "a value holds a line break or NUL")
        if texts:
            fixed[str(name)] = ", ".join(texts)
        files += [(str(name), path) for path in entry.get("files", values.list_of(existing_file), [])]
        entry.finish()
    section.finish()
    return fixed, tuple(files)


def _header_matches(fields: Fields, key: str) -> tuple[HeaderMatch, ...]:
    found = []
    for item, path, line in fields.items(key):
        entry = Fields(item, path, fields.report, line)
        if not entry.ok:
            continue
        header = entry.get("header", values.nonempty_string)
        pattern = entry.get("regexp", regex.parse)
        allow_missing = entry.get("allow_missing", values.boolean, False)
        entry.finish()
        if header is not None and pattern is not None:
            if not set(header) <= _TOKEN_CHARS:
                entry.error("header", f"{excerpt(header)} is not a header name")
            found.append(HeaderMatch(header, pattern.pattern, allow_missing))
    return tuple(found)


def _http_versions(value: Any) -> tuple[str, ...]:
    versions = values.list_of(values.one_of(*HTTP_VERSIONS))(value)
    if "HTTP/3.0" in versions:
        raise ValueError("HTTP/3.0 needs enable_http3, which the agent's client does not speak")
    if versions and not {"HTTP/1.0", "HTTP/1.1"} & set(versions):
        raise ValueError("the agent's client speaks HTTP/1.1 (and reads HTTP/1.0 answers): with only "
                         f"{', '.join(versions)} every probe would fail")
    return tuple(versions)


def _accepts(encoding: str, accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value lets the server answer in ``encoding`` (blackbox's check)."""
    weighted = []
    for part in accept_encoding.split(","):
        name, _, quality = part.partition(";")
        try:
            weight = float(quality.strip().removeprefix("q=")) if quality else 1.0
        except ValueError:
            weight = 0.0
        weighted.append((name.strip(), round(weight, 3)))
    weighted.sort(key=lambda pair: -pair[1])
    for name, weight in weighted:
        if name in (encoding, "*"):
            return weight > 0
    return False


def _body_size_limit(value: Any) -> int:
    limit = values.size(value)
    return limit if limit > 0 else values.MAX_SIZE  # blackbox: 0 is no limit


def parse_module(fields: Fields, settings: ProbeSettings, reserved: frozenset[str]) -> HttpModule:
    """The http module keys of a source; ``reserved``: label names json_metrics labels may not take."""
    for key, why in NOT_SUPPORTED.items():
        if fields.has(key) and fields.raw(key) not in (None, False):
            fields.error(key, why)
    fields.get("enable_http2", values.boolean, True)  # blackbox's default; the client speaks HTTP/1.1 either way
    method = fields.get("method", values.one_of(*METHODS), "GET")
    headers = fields.get("headers", _headers, {})
    extra_headers, header_files = _http_headers(fields)
    headers = {**headers, **extra_headers}
    body = fields.get("body", values.string, "")
    body_file = fields.get("body_file", existing_file, None)
    if body and body_file:
        fields.error("body_file", "use body or body_file, not both")
    valid = fields.get("valid_status_codes", _status_codes, ())
    versions = fields.get("valid_http_versions", _http_versions, ())
    follow = fields.get("follow_redirects", values.boolean, True)
    if fields.has("no_follow_redirects"):
        no_follow = fields.get("no_follow_redirects", values.boolean, False)
        if fields.has("follow_redirects"):
            fields.error("no_follow_redirects", "use follow_redirects or no_follow_redirects, not both")
        follow = not no_follow
    fail_ssl = fields.get("fail_if_ssl", values.boolean, False)
    fail_not_ssl = fields.get("fail_if_not_ssl", values.boolean, False)
    if fail_ssl and fail_not_ssl:
        fields.error("fail_if_not_ssl", "with fail_if_ssl too, every probe would fail")
    fail_match = fields.get("fail_if_body_matches_regexp", _regexes, ())
    fail_not_match = fields.get("fail_if_body_not_matches_regexp", _regexes, ())
    header_match = _header_matches(fields, "fail_if_header_matches")
    header_not_match = _header_matches(fields, "fail_if_header_not_matches")
    limit = fields.get("body_size_limit", _body_size_limit, DEFAULT_BODY_SIZE_LIMIT)
    compression = fields.get("compression", values.one_of(*COMPRESSIONS, ""), "") or None
    if compression == "identity":
        compression = None
    accept = next((value for name, value in headers.items() if name.lower() == "accept-encoding"), None)
    if compression and accept is not None and not _accepts(compression, accept):
        fields.error("compression", f"the Accept-Encoding header {excerpt(accept)} does not accept {compression}")
    if compression == "br" and importlib.util.find_spec("brotli") is None:
        fields.error("compression", "br needs the brotli package (pip install brotli)")
    tls, basic_auth, bearer = parse_client(fields)
    authorization = parse_authorizations(fields, basic_auth, bearer)
    ip = parse_ip_config(fields)
    proxy = parse_proxy(fields)
    skip_resolve = fields.get("skip_resolve_phase_with_proxy", values.boolean, False)
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
    if compression and accept is None:
        headers = {**headers, "Accept-Encoding": compression}  # ask for what the body will be decoded as
    return HttpModule(method, headers, body, valid, follow, fail_match, fail_not_match, limit, tls, basic_auth,
                      bearer, tuple(json_metrics), authorization, ip, header_match, header_not_match, fail_ssl,
                      fail_not_ssl, versions, compression, body_file, proxy, skip_resolve, header_files)
