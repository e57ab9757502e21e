"""HTTP source config: what to probe (one URL, or targets discovered Prometheus's way) and how (blackbox_exporter's
module keys), and the families it writes."""

from __future__ import annotations

import functools
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import relabel, yamlsrc
from agent.relabel import RelabelRule
from agent.sources.base import IDENTITY_LABEL as SOURCE_LABEL
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
DEFAULT_FILE_SD_REFRESH = 300.0  # Prometheus's defaults
DEFAULT_HTTP_SD_REFRESH = 60.0
# Prometheus's file_sd name check: one "*" at most, in the last path element, and a known extension.
_FILE_SD_NAME_RE = re.compile(r"^[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)$")

# Every family a probe writes, blackbox_exporter's names first. Labels beyond these are constant per target:
# `labels:`, the identity labels (target; and source for a discovered target) and a discovered target's own.
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
PROBES_SKIPPED = counter("kpi_agent_probes_skipped_total", "Probes that could not start in time (every probe slot "
                         "busy, or the agent ran late): the agent's problem, never counted against the target")
SD_TARGETS = gauge("kpi_agent_sd_targets", "Targets of a discovering source by state: probed here, probed by another "
                   "shard, dropped by relabel_configs, refused (not a URL, duplicate)", ["state"])
SD_REFRESHES = counter("kpi_agent_sd_refreshes_total", "Reads of target files and requests to HTTP SD endpoints",
                       ["mechanism"])
SD_REFRESH_FAILURES = counter("kpi_agent_sd_refresh_failures_total", "Reads and requests that failed; the last good "
                              "targets of that file or endpoint stay", ["mechanism"])
SD_FAMILIES = (SD_TARGETS, SD_REFRESHES, SD_REFRESH_FAILURES)
SD_STATES = ("probed", "other_shard", "dropped", "refused")
SD_MECHANISMS = ("static", "file", "http")
# Every sample name an HTTP source exports besides its json_metrics (KPI specs may select them).
EXPORTED_SERIES = tuple(name for spec in PROBE_FAMILIES for name in spec.sample_names)
# Label names the agent sets on probe series: `labels:` and json_metrics labels may not take them (source names
# the discovering source on a discovered target's series).
PROBE_LABELS = frozenset({IDENTITY_LABEL, SOURCE_LABEL, "le",
                          *(n for spec in PROBE_FAMILIES for n in spec.labelnames)})


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

    @functools.cached_property
    def spec(self) -> FamilySpec:
        """Built once: every target of a discovering source shares its sources' specs."""
        make = counter if self.type == "counter" else gauge
        return make(self.name, self.help, self.labels)


@dataclass(frozen=True)
class TargetGroup:
    """Prometheus's target group: addresses sharing labels (static_configs, file_sd and http_sd entries)."""

    targets: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileSdConfig:
    files: tuple[str, ...]  # globs, relative paths resolved against the config file's directory
    refresh_interval: float = DEFAULT_FILE_SD_REFRESH


@dataclass(frozen=True)
class HttpSdConfig:
    url: str
    refresh_interval: float = DEFAULT_HTTP_SD_REFRESH
    tls: TlsConfig = field(default_factory=TlsConfig)
    basic_auth: BasicAuth | None = None
    bearer_token_file: str | None = None


@dataclass(frozen=True)
class Discovery:
    """Where a source's targets come from, and the relabel_configs that shape them."""

    static: tuple[TargetGroup, ...] = ()
    files: tuple[FileSdConfig, ...] = ()
    http: tuple[HttpSdConfig, ...] = ()
    relabel: tuple[RelabelRule, ...] = ()


@dataclass(frozen=True)
class HttpSourceConfig:
    name: str
    url: str | None  # one target; or, with discovery, none and the discovered targets
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
    discovery: Discovery | None = None
    where: tuple[int | None, str] = field(default=(None, ""), compare=False)  # (line, field path) for errors

    @property
    def reserved_labels(self) -> frozenset[str]:
        """Label names a discovered target's own labels may not keep (they become exported_<name>)."""
        return PROBE_LABELS | {name for metric in self.json_metrics for name in metric.labels}


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
    from yarl import URL  # here: an agent without HTTP sources never loads it

    try:
        host = URL(text).host  # the parser the probes use: what passes here, a probe can request
    except ValueError as exc:
        raise ValueError(f"{excerpt(text)} is not a URL: {exc}") from None
    if not host:
        raise ValueError(f"{excerpt(text)} has no host")
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


def tls_problem(tls: TlsConfig) -> tuple[str, str] | None:
    """(field, message) if the CA, certificate or key files cannot be loaded the way a probe will load them."""
    return _tls_problem(tls, tuple(yamlsrc.file_stamp(p) for p in (tls.ca_file, tls.cert_file, tls.key_file)))


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


def _parse_client(fields: Fields) -> tuple[TlsConfig, BasicAuth | None, str | None]:
    """How an HTTP client connects and authenticates: tls_config, and basic_auth or bearer_token_file."""
    tls = _parse_tls(fields.section("tls_config"))
    basic_auth = _parse_basic_auth(fields.section("basic_auth"))
    bearer = fields.get("bearer_token_file", _existing_file, None)
    if basic_auth and bearer:
        fields.error("bearer_token_file", "use basic_auth or bearer_token_file, not both")
    return tls, basic_auth, bearer


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


def _sd_label_map(value: Any) -> dict[str, str]:
    """Target group labels: Prometheus label names (``__`` prefixes allowed) to scalar values."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of label names to values, got {excerpt(value)}")
    labels = {}
    for key, item in value.items():
        relabel.label_name(key)
        if isinstance(item, (dict, list)) or item is None:
            raise ValueError(f"label {excerpt(key)}: expected a value, got {excerpt(item)}")
        labels[key] = str(item).lower() if isinstance(item, bool) else str(item)
    return labels


def parse_target_group(fields: Fields, meta: dict[str, str] | None = None) -> TargetGroup:
    """One ``{targets: [...], labels: {...}}`` entry, from the config or from a target file or endpoint."""
    targets = fields.get("targets", yamlsrc.list_of(yamlsrc.nonempty_string), [])
    labels = fields.get("labels", _sd_label_map, {})
    fields.finish()
    return TargetGroup(tuple(targets), {**labels, **(meta or {})})


def _file_sd_pattern(base: Path) -> Any:
    def parse(value: Any) -> str:
        pattern = yamlsrc.nonempty_string(value)
        if not _FILE_SD_NAME_RE.match(pattern):
            raise ValueError(f"{excerpt(pattern)} is not a target file pattern: one * at most, in the file name, "
                             "and the name ends in .json, .yml or .yaml")
        return str(base / pattern)  # an absolute pattern stays as it is

    return parse


def _parse_file_sd(fields: Fields, base: Path) -> FileSdConfig | None:
    files = fields.get("files", yamlsrc.list_of(_file_sd_pattern(base)))
    if files == []:
        fields.error("files", "lists no file pattern")
    refresh = fields.get("refresh_interval", yamlsrc.duration, DEFAULT_FILE_SD_REFRESH)
    fields.finish()
    return FileSdConfig(tuple(files), refresh) if files else None


def _parse_http_sd(fields: Fields) -> HttpSdConfig | None:
    url = fields.get("url", _url)
    refresh = fields.get("refresh_interval", yamlsrc.duration, DEFAULT_HTTP_SD_REFRESH)
    tls, basic_auth, bearer = _parse_client(fields)
    fields.finish()
    return HttpSdConfig(url, refresh, tls, basic_auth, bearer) if url else None


def _parse_discovery(fields: Fields) -> Discovery | None:
    """The discovery keys of a source, or None if it has none (then it probes ``url``)."""
    keys = ("static_configs", "file_sd_configs", "http_sd_configs")
    if not any(fields.has(key) for key in keys):
        if fields.raw("relabel_configs") is not None:
            fields.error("relabel_configs", "applies to discovered targets: add static_configs, file_sd_configs or "
                                            "http_sd_configs, or remove it")
        return None
    base = Path(fields.report.file).parent
    static = [parse_target_group(Fields(item, path, fields.report, line))
              for item, path, line in fields.items("static_configs")]
    files = [_parse_file_sd(Fields(item, path, fields.report, line), base)
             for item, path, line in fields.items("file_sd_configs")]
    http = [_parse_http_sd(Fields(item, path, fields.report, line))
            for item, path, line in fields.items("http_sd_configs")]
    rules = [relabel.parse_rule(Fields(item, path, fields.report, line))
             for item, path, line in fields.items("relabel_configs")]
    return Discovery(tuple(static), tuple(f for f in files if f), tuple(h for h in http if h),
                     tuple(r for r in rules if r))


def parse_http_source(fields: Fields, defaults: SourceDefaults) -> HttpSourceConfig | None:
    name = fields.get("name", yamlsrc.nonempty_string)
    discovery = _parse_discovery(fields)
    if discovery is None:
        url = fields.get("url", _url)
    else:
        url = None
        if fields.raw("url") is not None:
            fields.error("url", "a source probes its url or the targets it discovers, not both")
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
    tls, basic_auth, bearer = _parse_client(fields)
    labels = fields.get("labels", yamlsrc.label_map, {})
    for label in sorted(set(labels) & PROBE_LABELS):
        reason = {IDENTITY_LABEL: ": the agent sets it to the source name, or to a discovered target's address",
                  SOURCE_LABEL: ": the agent sets it to the source name on discovered targets"}.get(label, "")
        fields.error("labels", f"{label!r} is a label of the probe metrics{reason}")
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
    if name is None or (url is None and discovery is None):
        return None
    return HttpSourceConfig(name, url, interval, timeout, method, headers, body, valid, follow, fail_match,
                            fail_not_match, limit, tls, basic_auth, bearer, labels, tuple(json_metrics), discovery,
                            (fields.line_of("name"), fields.field("name")))
