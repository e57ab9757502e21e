"""HTTP source config: what to probe and how, blackbox_exporter's module keys, and the families it writes."""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import yamlsrc
from agent.sources.base import DeclaredFamily, SourceDefaults
from agent.store import DEFAULT_BUCKETS, FamilySpec, counter, gauge, histogram
from agent.yamlsrc import Fields, cut, excerpt

# The fixed set of probes_total{result} values; each exists at 0 from the first probe on.
RESULTS = (
    "success",
    "timeout",              # no complete answer within the source's timeout
    "dns_error",            # the host name did not resolve
    "connection_refused",   # nothing listens on the port
    "connection_error",     # other connection failures (reset, unreachable, protocol error)
    "tls_error",            # handshake or certificate verification failed
    "too_many_redirects",   # more than 10 hops
    "status_code",          # status not in valid_status_codes
    "body_too_large",       # body longer than body_size_limit
    "body_regex",           # a fail_if_body_* regexp decided
    "invalid_json",         # json_metrics configured and the body is not JSON
    "auth_file_error",      # password_file or bearer_token_file unreadable at probe time
)
PHASES = ("resolve", "connect", "tls", "processing", "transfer")
LATENCY_BUCKETS = DEFAULT_BUCKETS
MAX_REDIRECTS = 10
DEFAULT_BODY_SIZE_LIMIT = 10 * 1024 * 1024
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}

IDENTITY_LABEL = "target"

# Every family a probe writes, blackbox_exporter's names first. Labels beyond these come from `labels:` and
# the identity label (target), which are constant per source.
PROBE_FAMILIES = (
    gauge("probe_success", "Whether the probe succeeded"),
    gauge("probe_duration_seconds", "How long the probe took"),
    gauge("probe_http_status_code", "Response HTTP status code"),
    gauge("probe_http_content_length", "Content-Length of the response, -1 unknown"),
    gauge("probe_http_uncompressed_body_length", "Length of the uncompressed body"),
    gauge("probe_http_redirects", "Redirects followed"),
    gauge("probe_http_ssl", "Whether the final response came over TLS"),
    gauge("probe_http_version", "HTTP version of the response"),
    gauge("probe_failed_due_to_regex", "Whether a body regexp failed the probe"),
    gauge("probe_http_duration_seconds", "Duration of each phase, summed over redirects", ["phase"]),
    gauge("probe_ssl_earliest_cert_expiry", "NotAfter of the server certificate (Unix time)"),
    gauge("probe_tls_version_info", "TLS version of the connection", ["version"]),
    counter("probes_total", "Probes by result", ["result"]),
    gauge("probe_last_result", "1 for the result of the last probe (one series per target)", ["result"]),
    histogram("probe_latency_seconds", "Probe duration", [], LATENCY_BUCKETS),
)
JSON_ERRORS = counter("kpi_agent_json_extract_errors_total", "JSON values that could not be extracted", ["metric"])
# Every sample name an HTTP source exports besides its json_metrics (KPI specs may select them).
EXPORTED_SERIES = tuple(name for spec in PROBE_FAMILIES for name in spec.sample_names)
# Label names a probe family uses: `labels:` and json_metrics labels may not take them.
PROBE_LABELS = frozenset({IDENTITY_LABEL, "le", *(n for spec in PROBE_FAMILIES for n in spec.labelnames)})


@dataclass(frozen=True)
class TlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None


@dataclass(frozen=True)
class JsonMetric:
    name: str  # as exported; counters end in _total
    help: str
    type: str  # counter | gauge
    path: str
    value: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # value starting with "$" = JSONPath
    where: tuple[int | None, str] = field(default=(None, ""), compare=False)  # (line, field path) for errors

    @property
    def spec(self) -> FamilySpec:
        make = counter if self.type == "counter" else gauge
        return make(self.name, self.help, self.labels)


@dataclass(frozen=True)
class HttpSourceConfig:
    name: str
    url: str
    interval: float
    timeout: float
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
    labels: dict[str, str] = field(default_factory=dict)
    json_metrics: tuple[JsonMetric, ...] = ()
    where: tuple[int | None, str] = field(default=(None, ""), compare=False)  # (line, field path) for errors


def declared_families(config: HttpSourceConfig) -> list[DeclaredFamily]:
    line, path = config.where
    families = [DeclaredFamily(spec, line, path) for spec in PROBE_FAMILIES]
    families += [DeclaredFamily(metric.spec, *metric.where) for metric in config.json_metrics]
    return families


# --- parsing ------------------------------------------------------------------------------------------------

def _url(value: Any) -> str:
    text = yamlsrc.nonempty_string(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"{excerpt(text)} is not an http:// or https:// URL")
    return text


def _status_codes(value: Any) -> tuple[int, ...]:
    codes = yamlsrc.list_of(yamlsrc.integer)(value)
    for code in codes:
        if not 100 <= code <= 599:
            raise ValueError(f"{excerpt(code)} is not an HTTP status code")
    return tuple(codes)


def _regexes(value: Any) -> tuple[str, ...]:
    return tuple(p.pattern for p in yamlsrc.list_of(yamlsrc.regex)(value))


def jsonpath(value: Any) -> str:
    text = yamlsrc.nonempty_string(value)
    if not text.startswith("$"):
        raise ValueError(f"{excerpt(text)} is not a JSONPath (it starts with $)")
    from jsonpath_ng.ext import parse as parse_jsonpath  # lazily: an agent without json_metrics never loads it

    try:
        parse_jsonpath(text)
    except Exception as exc:  # jsonpath-ng raises its own errors, and plain Exception for some inputs
        raise ValueError(f"JSONPath {excerpt(text)} does not parse: {cut(str(exc))}") from None
    return text


def _existing_file(value: Any) -> str:
    path = yamlsrc.nonempty_string(value)
    if not Path(path).is_file():
        raise ValueError(f"{excerpt(path)} does not exist or is not a file")
    return path


def _stamp(path: str | None) -> tuple | None:
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def tls_problem(tls: TlsConfig) -> tuple[str, str] | None:
    """(field, message) if the CA, certificate or key files cannot be loaded the way a probe will load them."""
    return _tls_problem(tls, tuple(_stamp(p) for p in (tls.ca_file, tls.cert_file, tls.key_file)))


@functools.lru_cache(maxsize=256)
def _tls_problem(tls: TlsConfig, stamps: tuple) -> tuple[str, str] | None:
    # cached per distinct TLS config and file versions: a thousand targets sharing one CA load it once
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            return "ca_file", f"{excerpt(tls.ca_file)} holds no usable PEM certificate: {cut(str(exc))}"
    if tls.cert_file and tls.key_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            return "cert_file", (f"{excerpt(tls.cert_file)} and {excerpt(tls.key_file)} are not a PEM certificate "
                                 f"and its key: {cut(str(exc))}")
    return None


def _parse_tls(section: Fields | None) -> TlsConfig:
    if section is None:
        return TlsConfig()
    tls = TlsConfig(
        ca_file=section.get("ca_file", _existing_file, None),
        cert_file=section.get("cert_file", _existing_file, None),
        key_file=section.get("key_file", _existing_file, None),
        server_name=section.get("server_name", yamlsrc.nonempty_string, None),
        insecure_skip_verify=section.get("insecure_skip_verify", yamlsrc.boolean, False),
        min_version=section.get("min_version", yamlsrc.one_of(*TLS_VERSIONS), None),
    )
    if section.has("cert_file") != section.has("key_file"):
        section.error("cert_file" if section.has("cert_file") else "key_file", "cert_file and key_file go together")
    elif not section.invalid:
        problem = tls_problem(tls)
        if problem:
            section.error(*problem)
    section.finish()
    return tls


def _parse_basic_auth(section: Fields | None) -> BasicAuth | None:
    if section is None:
        return None
    username = section.get("username", yamlsrc.nonempty_string)
    password = section.get("password", yamlsrc.string, None)
    password_file = section.get("password_file", _existing_file, None)
    if section.has("password") == section.has("password_file"):
        section.report.error(section.line, section.path, "needs exactly one of password or password_file")
    section.finish()
    return BasicAuth(username, password, password_file) if username else None


def _parse_json_metric(item: Fields, reserved: set[str]) -> JsonMetric | None:
    name = item.get("name", yamlsrc.metric_name)
    kind = item.get("type", yamlsrc.one_of("counter", "gauge"), "gauge")
    help_text = item.get("help", yamlsrc.string, None)
    path = item.get("path", jsonpath)
    value = item.get("value", jsonpath, None)
    raw_labels = item.get("labels", yamlsrc.label_map, {})
    for label, expression in raw_labels.items():
        if expression.startswith("$"):
            try:
                jsonpath(expression)
            except ValueError as exc:
                item.error("labels", f"label {label!r}: {exc}")
        if label in reserved:
            item.error("labels", f"label {label!r} is already set by the source")
    if name and kind == "counter" and not name.endswith("_total"):
        item.error("name", f"counter names end in _total: {name}_total")
    if name and kind == "gauge" and name.endswith("_total"):
        item.error("name", "_total is the suffix of counters: use type: counter, or another name")
    if name and (name.startswith("probe_") or name.startswith("probes_") or name.startswith("kpi_agent_")):
        item.error("name", f"{name!r} clashes with the agent's own metric names (probe_*, probes_*, kpi_agent_*)")
    item.finish()
    if name is None or path is None:
        return None
    return JsonMetric(name, help_text or f"{name} read from JSON", kind, path, value, raw_labels,
                      (item.line_of("name"), item.field("name")))


def parse_http_source(fields: Fields, defaults: SourceDefaults) -> HttpSourceConfig | None:
    name = fields.get("name", yamlsrc.nonempty_string)
    url = fields.get("url", _url)
    interval = fields.get("interval", yamlsrc.duration, defaults.interval)
    timeout = fields.get("timeout", yamlsrc.duration, min(defaults.timeout, interval))
    if timeout > interval and not {"interval", "timeout"} & fields.invalid:
        fields.error("timeout", f"{yamlsrc.format_duration(timeout)} is longer than the interval "
                                f"{yamlsrc.format_duration(interval)}")
    method = fields.get("method", yamlsrc.one_of("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"), "GET")
    headers = fields.get("headers", yamlsrc.string_map, {})
    body = fields.get("body", yamlsrc.string, "")
    valid = fields.get("valid_status_codes", _status_codes, ())
    follow = fields.get("follow_redirects", yamlsrc.boolean, True)
    fail_match = fields.get("fail_if_body_matches_regexp", _regexes, ())
    fail_not_match = fields.get("fail_if_body_not_matches_regexp", _regexes, ())
    limit = fields.get("body_size_limit", yamlsrc.size, DEFAULT_BODY_SIZE_LIMIT)
    tls = _parse_tls(fields.section("tls_config"))
    basic_auth = _parse_basic_auth(fields.section("basic_auth"))
    bearer = fields.get("bearer_token_file", _existing_file, None)
    if basic_auth and bearer:
        fields.error("bearer_token_file", "use basic_auth or bearer_token_file, not both")
    labels = fields.get("labels", yamlsrc.label_map, {})
    for label in sorted(set(labels) & PROBE_LABELS):
        fields.error("labels", f"{label!r} is a label of the probe metrics"
                               + (": the agent sets it to the source name" if label == IDENTITY_LABEL else ""))
    json_metrics = []
    seen: set[str] = set()
    for item, path, line in fields.items("json_metrics"):
        entry = Fields(item, path, fields.report, line)
        metric = _parse_json_metric(entry, {*PROBE_LABELS, *labels}) if entry.ok else None
        if metric and metric.name in seen:
            fields.report.error(line, f"{path}.name", f"{metric.name!r} is defined twice")
        elif metric:
            seen.add(metric.name)
            json_metrics.append(metric)
    fields.finish()
    if name is None or url is None:
        return None
    return HttpSourceConfig(name, url, interval, timeout, method, headers, body, valid, follow, fail_match,
                            fail_not_match, limit, tls, basic_auth, bearer, labels, tuple(json_metrics),
                            (fields.line_of("name"), fields.field("name")))
