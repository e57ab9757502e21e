"""HTTP probes: a URL probed the way blackbox_exporter's http prober does, and JSON metrics read from its body.

A source's module (method, status codes, regexes, TLS, auth, JSON metrics) is compiled once into an
``HttpProber`` shared by its targets; each probe opens its own connection through the agent's one client
session and records blackbox's families into the attempt's ``ProbeResult``: the phases and the TLS state
even when the probe fails or times out (what was measured stays, as in blackbox).
"""

from __future__ import annotations

import json
import os
import ssl
from typing import Any

import aiohttp
from aiohttp.client_middlewares import ClientHandlerType
from yarl import URL

from agent.config import regex as user_regex
from agent.series.store import Group
from agent.sources.http.client import HttpShared, read_body, tls_options
from agent.sources.http.config import (
    BODY_LENGTH,
    CONTENT_LENGTH,
    FAILED_DUE_TO_REGEX,
    JSON_ERRORS,
    MAX_REDIRECTS,
    PHASE_DURATION,
    PHASES,
    REDIRECTS,
    SSL,
    STATUS_CODE,
    VERSION,
    HttpModule,
)
from agent.sources.http.jsonmetrics import CompiledJsonMetric
from agent.sources.http.timing import Timings, current_probe
from agent.sources.probe.client import credentials
from agent.sources.probe.result import ProbeFailed, ProbeResult

_PHASE_KEYS = tuple((phase, (phase,)) for phase in PHASES)  # label tuples made once, shared by every target


def same_host_or_subdomain(host: str, origin: str) -> bool:
    """Go's rule for where a redirect may carry credentials: the origin's host or one of its subdomains."""
    if host == origin:
        return True
    return ":" not in host and "%" not in host and host.endswith("." + origin)


class _ConfiguredHostOnly:
    """Keeps the headers the config sets (custom ones like X-Api-Key, and credentials) on requests to the
    configured host and its subdomains, and off every other host a redirect leads to. Go's client (so
    blackbox_exporter) does this for Authorization only; a custom header can be a credential too."""

    __slots__ = ("host", "headers")

    def __init__(self, host: str, headers: dict[str, str]):
        self.host = host
        self.headers = headers

    async def __call__(self, request: aiohttp.ClientRequest, handler: ClientHandlerType) -> aiohttp.ClientResponse:
        if same_host_or_subdomain((request.url.host or "").lower(), self.host):
            request.headers.update(self.headers)  # aiohttp drops Authorization on a scheme or port change
        else:
            for name in self.headers:
                request.headers.popall(name, None)
        return await handler(request)


class HttpProber:
    """One source's module, compiled: what every one of its targets shares."""

    faults = (aiohttp.ClientError, OSError, ssl.SSLError, TimeoutError, ValueError)

    def __init__(self, module: HttpModule, shared: HttpShared, own: Group):
        self.module = module
        self.shared = shared
        self.ssl_context = shared.tls.get(module.tls)
        self.regexes_fail = [user_regex.compile(p) for p in module.fail_if_body_matches_regexp]
        self.regexes_need = [user_regex.compile(p) for p in module.fail_if_body_not_matches_regexp]
        self.json = [CompiledJsonMetric(spec) for spec in module.json_metrics]
        self.json_errors = own.counter(JSON_ERRORS) if self.json else None
        for metric in self.json:
            own.counter(JSON_ERRORS).ensure(metric.error_labels)
        self.request_options: dict[str, Any] = {"max_redirects": MAX_REDIRECTS, "allow_redirects":
                                                module.follow_redirects, **tls_options(module.tls, self.ssl_context)}
        self.guards_headers = module.follow_redirects and bool(
            module.headers or module.basic_auth or module.bearer_token_file)
        self._urls: dict[str, URL] = {}

    def headers(self) -> dict[str, str]:
        """The configured headers and credentials; password and token files are read at every probe."""
        try:
            return {**self.module.headers, **credentials(self.module.basic_auth, self.module.bearer_token_file)}
        except OSError as exc:
            raise ProbeFailed("auth_file_error", f"cannot read credentials file: {exc.strerror}") from None

    async def probe(self, target: str, result: ProbeResult) -> None:
        timings = Timings()
        token = current_probe.set(timings)
        try:
            await self._request(URL(target), timings, result)
        finally:
            current_probe.reset(token)
            timings.split_connections()
            for phase, key in _PHASE_KEYS:
                result.set(PHASE_DURATION, getattr(timings, phase), key)
            if timings.tls_object is not None:
                result.tls(timings.tls_object)

    async def _request(self, url: URL, timings: Timings, result: ProbeResult) -> None:
        module = self.module
        headers = self.headers()
        options = self.request_options
        if self.guards_headers:
            options = {**options, "middlewares": (_ConfiguredHostOnly((url.host or "").lower(), headers),)}
        async with self.shared.session.request(module.method, url, headers=headers, data=module.body or None,
                                               trace_request_ctx=timings, **options) as response:
            result.set(STATUS_CODE, response.status)
            result.set(REDIRECTS, len(response.history))
            version = response.version
            result.set(VERSION, version.major + version.minor / 10 if version else 0)
            result.set(CONTENT_LENGTH, response.content_length if response.content_length is not None else -1)
            result.set(SSL, 1.0 if response.url.scheme == "https" else 0.0)
            body = await read_body(response, module.body_size_limit)
            if body is None:
                raise ProbeFailed("body_too_large", f"body longer than {module.body_size_limit} bytes")
            timings.body_done()
            result.set(BODY_LENGTH, len(body))
        self._judge(response.status, body, result)

    def _judge(self, status: int, body: bytes, result: ProbeResult) -> None:
        """Raises ProbeFailed with the reason when a complete response is not a success."""
        module = self.module
        valid = module.valid_status_codes
        if (status not in valid) if valid else not 200 <= status < 300:
            expected = ", ".join(map(str, valid)) if valid else "2xx"
            raise ProbeFailed("status_code", f"status {status}, expected {expected}")
        if self.regexes_fail or self.regexes_need:
            text = body.decode("utf-8", errors="replace")
            matched = next((r.pattern for r in self.regexes_fail if r.search(text)), None)
            missing = next((r.pattern for r in self.regexes_need if not r.search(text)), None)
            result.set(FAILED_DUE_TO_REGEX, 1.0 if matched or missing else 0.0)
            if matched is not None:
                raise ProbeFailed("body_regex", f"body matches fail_if_body_matches_regexp {matched!r}"[:200])
            if missing is not None:
                raise ProbeFailed("body_regex",
                                  f"body does not match fail_if_body_not_matches_regexp {missing!r}"[:200])
        if self.json:
            try:
                document = json.loads(body)
            except (ValueError, RecursionError) as exc:
                raise ProbeFailed("invalid_json", f"body is not JSON: {exc}"[:200]) from None
            for metric in self.json:
                series = metric.extract(document, self.json_errors)
                if series is not None:
                    result.series(metric.spec.spec, series)

    def explain(self, exc: BaseException, target: str, timeout: float) -> tuple[str, str] | None:
        """What went wrong, in words an operator can act on (aiohttp's own messages name internal objects),
        without the password of a user:password@ URL."""
        if isinstance(exc, TimeoutError):
            return None  # the framework's words
        result, reason = _classify(exc), _words(exc)
        password = URL(target).password
        if password:
            reason = reason.replace(password, "<secret>")
        return result, reason


def _classify(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ServerTimeoutError):
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


def _words(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"more than {MAX_REDIRECTS} redirects"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"certificate of {exc.host}:{exc.port} not accepted: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {exc.host}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno if exc.os_error else None
        reason = os.strerror(errno) if errno else str(exc.os_error)
        return f"cannot connect to {exc.host}:{exc.port}: {reason}"
    return f"{type(exc).__name__}: {exc}"
