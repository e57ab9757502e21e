"""HTTP source: probes a URL the way blackbox_exporter's http prober does, and extracts JSON metrics.

Besides blackbox's gauges (``probe_success`` and friends) every probe is counted in
``probes_total{result}`` and timed in the ``probe_latency_seconds`` histogram, so availability and latency
KPIs can be built on probes; the reason of the last failure is in /metrics, not only in the logs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
import ssl
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext import parse as parse_jsonpath

from agent import yamlsrc
from agent.sources.base import Source
from agent.yamlsrc import Fields

if TYPE_CHECKING:
    from agent.config import GlobalConfig

log = logging.getLogger(__name__)

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
# Every series name an HTTP source exports besides its json_metrics (KPI specs may select them).
EXPORTED_SERIES = (
    "probe_success", "probe_duration_seconds", "probe_http_status_code", "probe_http_content_length",
    "probe_http_uncompressed_body_length", "probe_http_redirects", "probe_http_ssl", "probe_http_version",
    "probe_failed_due_to_regex", "probe_http_duration_seconds", "probe_ssl_earliest_cert_expiry",
    "probe_tls_version_info", "probes_total", "probe_last_result", "probe_latency_seconds_bucket",
    "probe_latency_seconds_sum", "probe_latency_seconds_count",
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
MAX_REDIRECTS = 10
DEFAULT_BODY_SIZE_LIMIT = 10 * 1024 * 1024
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_NAMES = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}


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


# --- config -------------------------------------------------------------------------------------------------

def _url(value: Any) -> str:
    text = yamlsrc.nonempty_string(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    return text


def _status_codes(value: Any) -> tuple[int, ...]:
    codes = yamlsrc.list_of(yamlsrc.integer)(value)
    for code in codes:
        if not 100 <= code <= 599:
            raise ValueError(f"{code} is not an HTTP status code")
    return tuple(codes)


def _regexes(value: Any) -> tuple[str, ...]:
    return tuple(p.pattern for p in yamlsrc.list_of(yamlsrc.regex)(value))


def _jsonpath(value: Any) -> str:
    text = yamlsrc.nonempty_string(value)
    if not text.startswith("$"):
        raise ValueError(f"{text!r} is not a JSONPath (it starts with $)")
    try:
        parse_jsonpath(text)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:  # jsonpath-ng raises plain Exception too
        raise ValueError(f"JSONPath {text!r} does not parse: {exc}") from None
    return text


def _existing_file(value: Any) -> str:
    path = yamlsrc.nonempty_string(value)
    if not Path(path).is_file():
        raise ValueError(f"{path!r} does not exist or is not a file")
    return path


def _parse_tls(section: Fields | None) -> TlsConfig:
    if section is None:
        return TlsConfig()
    tls = TlsConfig(
        ca_file=section.get("ca_file", _existing_file, None),
        cert_file=section.get("cert_file", _existing_file, None),
        key_file=section.get("key_file", _existing_file, None),
        server_name=section.get("server_name", yamlsrc.nonempty_string, None),
        insecure_skip_verify=section.get("insecure_skip_verify", yamlsrc.boolean, False) or False,
        min_version=section.get("min_version", yamlsrc.one_of(*_TLS_VERSIONS), None),
    )
    if section.has("cert_file") != section.has("key_file"):
        section.error("cert_file" if section.has("cert_file") else "key_file", "cert_file and key_file go together")
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
    path = item.get("path", _jsonpath)
    value = item.get("value", _jsonpath, None)
    raw_labels = item.get("labels", yamlsrc.label_map, {}) or {}
    for label, expression in raw_labels.items():
        if expression.startswith("$"):
            try:
                _jsonpath(expression)
            except ValueError as exc:
                item.error("labels", f"label {label!r}: {exc}")
        if label in reserved:
            item.error("labels", f"label {label!r} is already set by the source")
    if name and kind == "counter" and not name.endswith("_total"):
        item.error("name", f"counter names end in _total: {name}_total")
    if name and (name.startswith("probe_") or name.startswith("probes_") or name.startswith("kpi_agent_")):
        item.error("name", f"{name!r} clashes with the agent's own metric names (probe_*, probes_*, kpi_agent_*)")
    item.finish()
    if name is None or path is None:
        return None
    return JsonMetric(name, help_text or f"{name} read from JSON", kind, path, value, raw_labels,
                      (item.line_of("name"), item.field("name")))


def parse_http_source(fields: Fields, global_: GlobalConfig) -> HttpSourceConfig | None:
    name = fields.get("name", yamlsrc.nonempty_string)
    url = fields.get("url", _url)
    interval = fields.get("interval", yamlsrc.duration, global_.interval)
    timeout = fields.get("timeout", yamlsrc.duration, min(global_.timeout, interval or global_.timeout))
    if interval and timeout and timeout > interval:
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
    labels = fields.get("labels", yamlsrc.label_map, {}) or {}
    if "target" in labels:
        fields.error("labels", "'target' is set by the agent to the source name")
    json_metrics = []
    seen: set[str] = set()
    for item, path, line in fields.items("json_metrics"):
        metric = _parse_json_metric(Fields(item, path, fields.report, line), {"target", *labels})
        if metric and metric.name in seen:
            fields.report.error(line, f"{path}.name", f"{metric.name!r} is defined twice")
        elif metric:
            seen.add(metric.name)
            json_metrics.append(metric)
    fields.finish()
    if name is None or url is None:
        return None
    return HttpSourceConfig(name, url, interval, timeout, method, headers, body, valid, follow, fail_match,
                            fail_not_match, limit, tls, basic_auth, bearer, labels, tuple(json_metrics))


# --- timing -------------------------------------------------------------------------------------------------

class _Timings:
    """Per-probe phase durations, filled by aiohttp's tracing hooks and summed over redirects."""

    __slots__ = ("resolve", "connect", "tls", "processing", "transfer", "_dns_start", "_conn_start", "_sent_at",
                 "_headers_at", "_resolve_before", "_connections")

    def __init__(self) -> None:
        self.resolve = self.connect = self.tls = self.processing = self.transfer = 0.0
        self._dns_start = self._conn_start = self._sent_at = self._headers_at = self._resolve_before = 0.0
        self._connections: list[tuple[float, float, float]] = []  # (start, end, resolve time inside)

    def split_connections(self, handshakes: list[float]) -> None:
        """Connection setup -> connect and tls phases: aiohttp times DNS + TCP + TLS as one step, so the
        moment each TLS handshake began (from the SSL context) marks where TCP connect ended."""
        for start, end, resolve in self._connections:
            began = next((h for h in handshakes if start <= h <= end), None)
            if began is None:
                self.connect += max(0.0, end - start - resolve)
            else:
                self.connect += max(0.0, began - start - resolve)
                self.tls += end - began

    def body_done(self) -> None:
        if self._headers_at:
            self.transfer += time.perf_counter() - self._headers_at


def _timings(ctx: SimpleNamespace) -> _Timings | None:
    timings = ctx.trace_request_ctx
    return timings if isinstance(timings, _Timings) else None


async def _on_dns_start(session, ctx, params) -> None:
    if t := _timings(ctx):
        t._dns_start = time.perf_counter()


async def _on_dns_end(session, ctx, params) -> None:
    if (t := _timings(ctx)) and t._dns_start:
        t.resolve += time.perf_counter() - t._dns_start


async def _on_conn_start(session, ctx, params) -> None:
    if t := _timings(ctx):
        t._conn_start = time.perf_counter()
        t._resolve_before = t.resolve
        t._dns_start = 0.0


async def _on_conn_end(session, ctx, params) -> None:
    if (t := _timings(ctx)) and t._conn_start:
        t._connections.append((t._conn_start, time.perf_counter(), t.resolve - t._resolve_before))


async def _on_headers_sent(session, ctx, params) -> None:
    if t := _timings(ctx):
        now = time.perf_counter()
        if t._headers_at:  # a redirect hop: the previous response's body (if any) ended here
            t.transfer += now - t._headers_at
            t._headers_at = 0.0
        t._sent_at = now


async def _on_request_end(session, ctx, params) -> None:
    if (t := _timings(ctx)) and t._sent_at:
        now = time.perf_counter()
        t.processing += now - t._sent_at
        t._headers_at = now


def trace_config() -> aiohttp.TraceConfig:
    """Tracing hooks for the shared client session; they act only on requests that carry a _Timings."""
    config = aiohttp.TraceConfig()
    config.on_dns_resolvehost_start.append(_on_dns_start)
    config.on_dns_resolvehost_end.append(_on_dns_end)
    config.on_connection_create_start.append(_on_conn_start)
    config.on_connection_create_end.append(_on_conn_end)
    config.on_request_headers_sent.append(_on_headers_sent)
    config.on_request_end.append(_on_request_end)
    return config


class _RecordingSSLContext(ssl.SSLContext):
    """Remembers the TLS session of its last connection and when each handshake began. Each probe opens and
    closes its own connection, so the session is gone from aiohttp's response by the time the probe reads
    it; the SSLObject is not. Probes of one source never overlap (timeout <= interval)."""

    last: ssl.SSLObject | None = None
    handshakes: list[float]

    def reset(self) -> None:
        self.last = None
        self.handshakes = []

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self.handshakes.append(time.perf_counter())
        self.last = super().wrap_bio(*args, **kwargs)
        return self.last


# --- probing ------------------------------------------------------------------------------------------------

class _Failed(Exception):
    def __init__(self, result: str, detail: str):
        super().__init__(detail)
        self.result = result


def _classify(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns_error"
    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError)):
        return "tls_error"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return "too_many_redirects"
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, ConnectionRefusedError):
        return "connection_refused"
    return "connection_error"


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())  # ValueError for non-numeric strings
    raise ValueError(f"not a number: {type(value).__name__}")


class _CompiledJsonMetric:
    """A json_metrics entry with its JSONPaths parsed once, writing into one store family."""

    def __init__(self, spec: JsonMetric, family, errors, error_labels: tuple[str, ...]):
        self.spec = spec
        self.family = family
        self.errors = errors
        self.error_labels = error_labels
        self.path = parse_jsonpath(spec.path)
        self.value = parse_jsonpath(spec.value) if spec.value else None
        self.labels = [(parse_jsonpath(v) if v.startswith("$") else None, v) for v in spec.labels.values()]

    def extract(self, document: Any, base_labels: tuple[str, ...]) -> bool:
        """Replace this metric's series with what the document holds; False (and counted) on a bad path."""
        try:
            matches = [m.value for m in self.path.find(document)]
            if not matches:
                raise ValueError(f"{self.spec.path} matched nothing")
            if self.value is None and len(matches) > 1:
                raise ValueError(f"{self.spec.path} matched {len(matches)} values; use value: for one series each")
            series = {}
            for match in matches:
                scope = match if self.value is not None else document
                raw = self._first(self.value, match) if self.value is not None else match
                labels = tuple(self._label(path, literal, scope) for path, literal in self.labels)
                series[base_labels + labels] = _number(raw)
        except (ValueError, TypeError) as exc:
            self.family.clear()
            self.errors.inc(self.error_labels)
            log.debug("json extraction failed", extra={"metric": self.spec.name, "error": str(exc)})
            return False
        self.family.clear()
        for labels, number in series.items():
            self.family.set(labels, number)
        return True

    @staticmethod
    def _first(path, scope: Any) -> Any:
        found = path.find(scope)
        if not found:
            raise ValueError(f"{path} matched nothing")
        return found[0].value

    def _label(self, path, literal: str, scope: Any) -> str:
        if path is None:
            return literal
        value = self._first(path, scope)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            raise ValueError(f"label path {literal} points at a {type(value).__name__}, not a value")
        return str(value)


class HttpSource(Source):
    kind = "http"

    def __init__(self, config: HttpSourceConfig, group, context):
        super().__init__(config, group, context)
        c = config
        self._labels = (c.name, *c.labels.values())
        names = ("target", *c.labels)
        g = group
        self._success = g.gauge("probe_success", "Whether the probe succeeded", names)
        self._duration = g.gauge("probe_duration_seconds", "How long the probe took", names)
        self._status = g.gauge("probe_http_status_code", "Response HTTP status code", names)
        self._content_length = g.gauge("probe_http_content_length", "Content-Length of the response, -1 unknown", names)
        self._body_length = g.gauge("probe_http_uncompressed_body_length", "Length of the uncompressed body", names)
        self._redirects = g.gauge("probe_http_redirects", "Redirects followed", names)
        self._ssl = g.gauge("probe_http_ssl", "Whether the final response came over TLS", names)
        self._version = g.gauge("probe_http_version", "HTTP version of the response", names)
        self._regex = g.gauge("probe_failed_due_to_regex", "Whether a body regexp failed the probe", names)
        self._phases = g.gauge("probe_http_duration_seconds", "Duration of each phase, summed over redirects",
                               (*names, "phase"))
        self._expiry = g.gauge("probe_ssl_earliest_cert_expiry", "NotAfter of the server certificate (Unix time)",
                               names)
        self._tls_version = g.gauge("probe_tls_version_info", "TLS version of the connection", (*names, "version"))
        self._probes = g.counter("probes", "Probes by result", (*names, "result"))
        self._last_result = g.gauge("probe_last_result", "1 for the result of the last probe (one series per target)",
                                    (*names, "result"))
        self._latency = g.histogram("probe_latency_seconds", "Probe duration", names, LATENCY_BUCKETS)
        for result in RESULTS:
            self._probes.ensure((*self._labels, result))
        self._latency.ensure(self._labels)
        errors = g.counter("kpi_agent_json_extract_errors", "JSON values that could not be extracted",
                           ("target", "metric"))
        self._json = []
        for spec in c.json_metrics:
            labelnames = (*names, *spec.labels)
            family_name = spec.name[: -len("_total")] if spec.type == "counter" else spec.name
            family = (g.counter if spec.type == "counter" else g.gauge)(family_name, spec.help, labelnames)
            errors.ensure((c.name, spec.name))
            self._json.append(_CompiledJsonMetric(spec, family, errors, (c.name, spec.name)))
        self._ssl_context = self._make_ssl_context()
        self._regexes_fail = [re.compile(p) for p in c.fail_if_body_matches_regexp]
        self._regexes_need = [re.compile(p) for p in c.fail_if_body_not_matches_regexp]
        self._previous_result = "success"

    def _make_ssl_context(self) -> _RecordingSSLContext:
        tls = self.config.tls
        context = _RecordingSSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.reset()
        if tls.ca_file:
            context.load_verify_locations(cafile=tls.ca_file)
        else:
            context.load_default_certs()
        if tls.cert_file and tls.key_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if tls.min_version:
            context.minimum_version = _TLS_VERSIONS[tls.min_version]
        return context

    def start_offset(self) -> float:
        """Where in the interval this source fires: stable per name, spread evenly over many names."""
        return (zlib.crc32(self.name.encode()) / 2**32) * self.config.interval

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.interval
        next_at = loop.time() + self.start_offset()
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            await self.probe()
            next_at += interval
            behind = loop.time() - next_at
            if behind > 0:  # a stall (e.g. a suspended process): skip the missed ticks, keep the cadence
                next_at += math.ceil(behind / interval) * interval

    async def probe(self) -> str:
        """One probe; records every metric and returns the result label."""
        started = time.perf_counter()
        timings = _Timings()
        response_info: dict[str, float] = {}
        self._ssl_context.reset()
        try:
            async with asyncio.timeout(self.config.timeout):
                async with self.context.probe_slots:
                    started = time.perf_counter()
                    result = await self._request(timings, response_info)
        except _Failed as exc:
            result = exc.result
            log.debug("probe failed", extra={"source": self.name, "result": result, "error": str(exc)})
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError, ValueError) as exc:
            result = _classify(exc)
            log.debug("probe failed", extra={"source": self.name, "result": result, "error": repr(exc)})
        self._record(result, time.perf_counter() - started, timings, response_info)
        if result != self._previous_result:  # state changes only: a target down for hours logs once
            level = logging.INFO if result == "success" else logging.WARNING
            log.log(level, "probe result changed", extra={"source": self.name, "from": self._previous_result,
                                                          "to": result})
            self._previous_result = result
        return result

    def _headers(self) -> dict[str, str]:
        headers = dict(self.config.headers)
        auth = self.config.basic_auth
        try:
            if auth:
                password = auth.password if auth.password is not None else \
                    Path(auth.password_file or "").read_text().rstrip("\n")
                credentials = base64.b64encode(f"{auth.username}:{password}".encode()).decode()
                headers["Authorization"] = f"Basic {credentials}"
            elif self.config.bearer_token_file:
                token = Path(self.config.bearer_token_file).read_text().strip()
                headers["Authorization"] = f"Bearer {token}"
        except OSError as exc:
            raise _Failed("auth_file_error", f"cannot read credentials file: {exc.strerror}") from None
        return headers

    async def _request(self, timings: _Timings, info: dict[str, float]) -> str:
        c = self.config
        kwargs: dict[str, Any] = {}
        if c.tls.server_name:
            kwargs["server_hostname"] = c.tls.server_name
        async with self.context.session.request(
            c.method, c.url, headers=self._headers(), data=c.body or None, allow_redirects=c.follow_redirects,
            max_redirects=MAX_REDIRECTS, ssl=self._ssl_context, trace_request_ctx=timings, **kwargs,
        ) as response:
            info["status"] = response.status
            info["redirects"] = len(response.history)
            info["version"] = response.version.major + response.version.minor / 10 if response.version else 0
            info["content_length"] = response.content_length if response.content_length is not None else -1
            info["ssl"] = 1.0 if response.url.scheme == "https" else 0.0
            body = await self._read_body(response, c.body_size_limit)
            timings.body_done()
            info["body_length"] = len(body)
        return self._judge(response.status, body, info)

    @staticmethod
    async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
        chunks, size = [], 0
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise _Failed("body_too_large", f"body longer than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _judge(self, status: int, body: bytes, info: dict[str, float]) -> str:
        valid = self.config.valid_status_codes
        if (status not in valid) if valid else not 200 <= status < 300:
            return "status_code"
        if self._regexes_fail or self._regexes_need:
            text = body.decode("utf-8", errors="replace")
            failed = any(r.search(text) for r in self._regexes_fail) or \
                not all(r.search(text) for r in self._regexes_need)
            info["regex_failed"] = 1.0 if failed else 0.0
            if failed:
                return "body_regex"
        if self._json:
            try:
                document = json.loads(body)
            except ValueError:
                for metric in self._json:
                    metric.family.clear()
                return "invalid_json"
            for metric in self._json:
                metric.extract(document, self._labels)
        return "success"

    def _record(self, result: str, duration: float, timings: _Timings, info: dict[str, Any]) -> None:
        labels = self._labels
        ok = result == "success"
        self._success.set(labels, 1.0 if ok else 0.0)
        self._duration.set(labels, duration)
        self._status.set(labels, info.get("status", 0))
        self._content_length.set(labels, info.get("content_length", -1))
        self._body_length.set(labels, info.get("body_length", 0))
        self._redirects.set(labels, info.get("redirects", 0))
        self._ssl.set(labels, info.get("ssl", 0))
        self._version.set(labels, info.get("version", 0))
        self._regex.set(labels, info.get("regex_failed", 0))
        timings.split_connections(self._ssl_context.handshakes)
        for phase in PHASES:
            self._phases.set((*labels, phase), getattr(timings, phase))
        session = self._ssl_context.last
        version = session.version() if session else None
        cert = session.getpeercert() if session and version else None
        # The ssl module decodes only verified certificates; with insecure_skip_verify there is no expiry.
        not_after = cert.get("notAfter") if cert else None
        if isinstance(not_after, str):
            self._expiry.set(labels, ssl.cert_time_to_seconds(not_after))
        else:
            self._expiry.remove(labels)
        self._tls_version.clear()
        if version:
            self._tls_version.set((*labels, _TLS_NAMES.get(version, version)), 1)
        self._probes.inc((*labels, result))
        self._last_result.clear()
        self._last_result.set((*labels, result), 1)
        self._latency.observe(labels, duration)
        self.record_collection(time.perf_counter() - duration, ok)
