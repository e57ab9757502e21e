"""HTTP probes: a URL probed the way blackbox_exporter's http prober does, and JSON metrics read from its body.

Besides blackbox's gauges (``probe_success`` and friends) every probe is counted in
``probes_total{result}`` and timed in the ``probe_latency_seconds`` histogram, so availability and latency
KPIs can be built on probes; the reason of the last failure is in /metrics, not only in the logs.

A source's settings (``Module``: method, status codes, regexes, TLS, auth, JSON metrics) are prepared once and
shared by its targets; each target is a ``Prober`` with its own data group and cadence. ``HttpSource`` probes
its one ``url``; a source that discovers its targets (``agent.sources.http.targets``) runs a prober per target.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.client_middlewares import ClientHandlerType
from yarl import URL

from agent.sources.base import Source, SourceContext, SourceStats
from agent.sources.http.client import read_body, tls_options
from agent.sources.http.config import (
    JSON_ERRORS,
    MAX_REDIRECTS,
    PHASES,
    PROBE_FAMILIES,
    PROBES_SKIPPED,
    RESULTS,
    BasicAuth,
    HttpSourceConfig,
)
from agent.sources.http.jsonmetrics import CompiledJsonMetric
from agent.sources.http.timing import Timings, current_probe
from agent.store import Group

log = logging.getLogger(__name__)

_TLS_NAMES = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}
# Label values as tuples made once: ten thousand targets' series share them instead of holding copies.
_RESULT_KEYS = {result: (result,) for result in RESULTS}
_PHASE_KEYS = tuple((phase, (phase,)) for phase in PHASES)


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


def same_host_or_subdomain(host: str, origin: str) -> bool:
    """Go's rule for where a redirect may carry credentials: the origin's host or one of its subdomains."""
    if host == origin:
        return True
    return ":" not in host and "%" not in host and host.endswith("." + origin)


def credentials(basic_auth: BasicAuth | None, bearer_token_file: str | None) -> dict[str, str]:
    """The Authorization header these settings ask for, files read now (a rotated secret needs no reload);
    raises OSError when a file cannot be read."""
    if basic_auth:
        password = basic_auth.password if basic_auth.password is not None else \
            Path(basic_auth.password_file or "").read_text().rstrip("\n")
        encoded = base64.b64encode(f"{basic_auth.username}:{password}".encode()).decode()
        return {"Authorization": f"Basic {encoded}"}
    if bearer_token_file:
        return {"Authorization": f"Bearer {Path(bearer_token_file).read_text().strip()}"}
    return {}


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


class Module:
    """What every target of one source shares: its config, compiled regexes and JSON paths, its SSL context and
    its self-metrics (like a blackbox_exporter module, with the source's cadence)."""

    def __init__(self, config: HttpSourceConfig, stats: SourceStats, context: SourceContext):
        self.config = config
        self.stats = stats
        self.context = context
        self.ssl_context = context.tls.get(config.tls)
        self.regexes_fail = [re.compile(p) for p in config.fail_if_body_matches_regexp]
        self.regexes_need = [re.compile(p) for p in config.fail_if_body_not_matches_regexp]
        self.json = [CompiledJsonMetric(spec) for spec in config.json_metrics]
        self.json_errors = stats.group.counter(JSON_ERRORS)
        for metric in self.json:
            self.json_errors.ensure(metric.error_labels)
        self.skipped = stats.group.counter(PROBES_SKIPPED)
        self.skipped.ensure(())
        self.request_options: dict[str, Any] = {"max_redirects": MAX_REDIRECTS, "allow_redirects":
                                                config.follow_redirects, **tls_options(config.tls, self.ssl_context)}
        self.guards_headers = config.follow_redirects and bool(
            config.headers or config.basic_auth or config.bearer_token_file)

    def headers(self) -> dict[str, str]:
        """The configured headers and credentials; password and token files are read at every probe."""
        try:
            return {**self.config.headers, **credentials(self.config.basic_auth, self.config.bearer_token_file)}
        except OSError as exc:
            raise _Failed("auth_file_error", f"cannot read credentials file: {exc.strerror}") from None


class Prober:
    """One target: probes one URL on the source's cadence and records into the target's own data group."""

    def __init__(self, module: Module, url: str, group: Group, name: str, key: str):
        self.module = module
        self.url = URL(url)
        self.group = group
        self.name = name  # the target label
        self.key = key  # its hash places the target in the interval
        self.interval = module.config.interval
        (self._success, self._duration, self._status, self._content_length, self._body_length, self._redirects,
         self._ssl, self._version, self._regex, self._phases, self._expiry, self._tls_version, self._probes,
         self._last_result) = (group.gauge(spec) if spec.kind == "gauge" else group.counter(spec)
                               for spec in PROBE_FAMILIES[:-1])
        self._latency = group.histogram(PROBE_FAMILIES[-1])
        for labels in _RESULT_KEYS.values():
            self._probes.ensure(labels)
        self._latency.ensure(())
        self._json = [(metric, group.counter(metric.spec.spec) if metric.spec.type == "counter"
                       else group.gauge(metric.spec.spec)) for metric in module.json]
        self.last_result: str | None = None  # for the status page, and to log result changes
        self.last_error: str | None = None

    def skipped(self, ticks: int) -> None:
        """Ticks the schedule could not start: the agent's problem, counted apart from the target's results."""
        self.module.skipped.inc((), ticks)

    async def probe(self, due: float | None = None) -> str | None:
        """One probe, due at ``due`` (loop time; None: now). Records every metric and returns the result label,
        or None when it was skipped because no probe slot freed up within the timeout."""
        module = self.module
        context = module.context
        if not await context.probe_slots.acquire(module.config.timeout):
            module.skipped.inc(())
            log.debug("probe skipped: every probe slot is busy", extra={"source": module.config.name,
                                                                        "target": self.name})
            return None
        try:
            if due is not None and context.probe_delay is not None:
                context.probe_delay.observe((), max(0.0, asyncio.get_running_loop().time() - due))
            started = time.perf_counter()
            timings = Timings()
            info: dict[str, float] = {}
            error = None
            token = current_probe.set(timings)
            try:
                async with asyncio.timeout(module.config.timeout):
                    result = await self._request(timings, info)
            except _Failed as exc:
                result, error = exc.result, str(exc)
            except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError, ValueError) as exc:
                result, error = _classify(exc), self._explain(exc)
            finally:
                current_probe.reset(token)
        finally:
            context.probe_slots.release()
        duration = time.perf_counter() - started
        self._record(result, duration, timings, info)
        previous = self.last_result or "success"
        self.last_result, self.last_error = result, self._redact(error) if error else None
        module.stats.record(started, result == "success", result, self.last_error)
        if result != previous:  # state changes only: a target down for hours logs once
            level = logging.INFO if result == "success" else logging.WARNING
            log.log(level, "probe result changed", extra={"source": module.config.name, "target": self.name,
                                                          "from": previous, "to": result})
        return result

    def _explain(self, exc: BaseException) -> str:
        """What went wrong, in words an operator can act on (aiohttp's own messages name internal objects)."""
        if isinstance(exc, TimeoutError):
            return f"no complete answer within {self.module.config.timeout:g}s"
        if isinstance(exc, aiohttp.TooManyRedirects):
            return "more than 10 redirects"
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return f"certificate of {exc.host}:{exc.port} not accepted: {exc.certificate_error}"
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return f"cannot resolve {exc.host}"
        if isinstance(exc, aiohttp.ClientConnectorError):
            errno = exc.os_error.errno if exc.os_error else None
            reason = os.strerror(errno) if errno else str(exc.os_error)
            return f"cannot connect to {exc.host}:{exc.port}: {reason}"
        return f"{type(exc).__name__}: {exc}"

    def _redact(self, text: str) -> str:
        """Error text for operators: bounded, and without the password of a user:password@ URL."""
        password = self.url.password
        if password:
            text = text.replace(password, "<secret>")
        return text[:300]

    async def _request(self, timings: Timings, info: dict[str, float]) -> str:
        module = self.module
        config = module.config
        headers = module.headers()
        options = module.request_options
        if module.guards_headers:
            options = {**options, "middlewares": (_ConfiguredHostOnly((self.url.host or "").lower(), headers),)}
        async with module.context.session.request(config.method, self.url, headers=headers,
                                                  data=config.body or None, trace_request_ctx=timings,
                                                  **options) as response:
            info["status"] = response.status
            info["redirects"] = len(response.history)
            info["version"] = response.version.major + response.version.minor / 10 if response.version else 0
            info["content_length"] = response.content_length if response.content_length is not None else -1
            info["ssl"] = 1.0 if response.url.scheme == "https" else 0.0
            body = await read_body(response, config.body_size_limit)
            if body is None:
                raise _Failed("body_too_large", f"body longer than {config.body_size_limit} bytes")
            timings.body_done()
            info["body_length"] = len(body)
        return self._judge(response.status, body, info)  # raises _Failed, with info kept for _record

    def _judge(self, status: int, body: bytes, info: dict[str, float]) -> str:
        """The result of a complete response; raises _Failed with the reason when it is not a success."""
        module = self.module
        valid = module.config.valid_status_codes
        if (status not in valid) if valid else not 200 <= status < 300:
            expected = ", ".join(map(str, valid)) if valid else "2xx"
            raise _Failed("status_code", f"status {status}, expected {expected}")
        if module.regexes_fail or module.regexes_need:
            text = body.decode("utf-8", errors="replace")
            matched = next((r.pattern for r in module.regexes_fail if r.search(text)), None)
            missing = next((r.pattern for r in module.regexes_need if not r.search(text)), None)
            info["regex_failed"] = 1.0 if matched or missing else 0.0
            if matched is not None:
                raise _Failed("body_regex", f"body matches fail_if_body_matches_regexp {matched!r}"[:200])
            if missing is not None:
                raise _Failed("body_regex", f"body does not match fail_if_body_not_matches_regexp {missing!r}"[:200])
        if self._json:
            try:
                document = json.loads(body)
            except (ValueError, RecursionError) as exc:
                for _, family in self._json:
                    family.clear()
                raise _Failed("invalid_json", f"body is not JSON: {exc}"[:200]) from None
            for metric, family in self._json:
                metric.extract(document, family, module.json_errors)
        return "success"

    def _record(self, result: str, duration: float, timings: Timings, info: dict[str, Any]) -> None:
        ok = result == "success"
        self._success.set((), 1.0 if ok else 0.0)
        self._duration.set((), duration)
        self._status.set((), info.get("status", 0))
        self._content_length.set((), info.get("content_length", -1))
        self._body_length.set((), info.get("body_length", 0))
        self._redirects.set((), info.get("redirects", 0))
        self._ssl.set((), info.get("ssl", 0))
        self._version.set((), info.get("version", 0))
        self._regex.set((), info.get("regex_failed", 0))
        timings.split_connections()
        for phase, key in _PHASE_KEYS:
            self._phases.set(key, getattr(timings, phase))
        tls_object = timings.tls_object
        version = tls_object.version() if tls_object else None
        cert = tls_object.getpeercert() if tls_object and version else None
        # The ssl module decodes only verified certificates; with insecure_skip_verify there is no expiry.
        not_after = cert.get("notAfter") if cert else None
        if isinstance(not_after, str):
            self._expiry.set((), ssl.cert_time_to_seconds(not_after))
        else:
            self._expiry.remove(())
        self._tls_version.replace({(_TLS_NAMES.get(version, version),): 1.0} if version else {})
        self._probes.inc(_RESULT_KEYS[result])
        self._last_result.replace({_RESULT_KEYS[result]: 1.0})
        self._latency.observe((), duration)


class HttpSource(Source[HttpSourceConfig]):
    """A source that probes its one ``url``; its data series carry ``target="<name>"``."""

    kind = "http"

    def __init__(self, config: HttpSourceConfig, group: Group, stats: SourceStats, context: SourceContext):
        super().__init__(config, group, stats, context)
        assert config.url is not None, "a source without url discovers its targets"
        self.prober = Prober(Module(config, stats, context), config.url, group, config.name, config.name)

    def details(self) -> dict[str, Any]:
        url = self.prober.url.with_user(None)  # no user:password@
        return {"url": str(url), "interval_seconds": self.config.interval, "timeout_seconds": self.config.timeout}

    async def probe(self) -> str | None:
        return await self.prober.probe()

    async def run(self) -> None:
        """Probe on the agent's schedule until cancelled; a probe that raises (a bug) ends the source with
        that exception, for the runtime to log, count and restart it."""
        crashed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.context.probes.add(self.prober, crashed.set_exception)
        try:
            await crashed
        finally:
            self.context.probes.remove(self.prober)
