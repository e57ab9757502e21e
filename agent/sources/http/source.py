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
import os
import re
import ssl
import time
import urllib.parse
import zlib
from pathlib import Path
from typing import Any

import aiohttp

from agent.sources.base import Source, SourceContext, SourceStats
from agent.sources.http.config import (
    JSON_ERRORS,
    MAX_REDIRECTS,
    PHASES,
    PROBE_FAMILIES,
    RESULTS,
    TLS_VERSIONS,
    HttpSourceConfig,
)
from agent.sources.http.jsonmetrics import CompiledJsonMetric
from agent.sources.http.timing import RecordingSSLContext, Timings
from agent.store import Group

log = logging.getLogger(__name__)

_TLS_NAMES = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}


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


class HttpSource(Source[HttpSourceConfig]):
    kind = "http"

    def __init__(self, config: HttpSourceConfig, group: Group, stats: SourceStats, context: SourceContext):
        super().__init__(config, group, stats, context)
        (self._success, self._duration, self._status, self._content_length, self._body_length, self._redirects,
         self._ssl, self._version, self._regex, self._phases, self._expiry, self._tls_version, self._probes,
         self._last_result) = (group.gauge(spec) if spec.kind == "gauge" else group.counter(spec)
                               for spec in PROBE_FAMILIES[:-1])
        self._latency = group.histogram(PROBE_FAMILIES[-1])
        for result in RESULTS:
            self._probes.ensure((result,))
        self._latency.ensure(())
        errors = stats.group.counter(JSON_ERRORS)
        self._json = [CompiledJsonMetric(spec, group.counter(spec.spec) if spec.type == "counter"
                                         else group.gauge(spec.spec), errors)
                      for spec in config.json_metrics]
        self._ssl_context = self._make_ssl_context()
        self._regexes_fail = [re.compile(p) for p in config.fail_if_body_matches_regexp]
        self._regexes_need = [re.compile(p) for p in config.fail_if_body_not_matches_regexp]
        self._previous_result = "success"

    def _make_ssl_context(self) -> RecordingSSLContext:
        tls = self.config.tls
        context = RecordingSSLContext(ssl.PROTOCOL_TLS_CLIENT)
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
            context.minimum_version = TLS_VERSIONS[tls.min_version]
        return context

    def details(self) -> dict[str, Any]:
        parts = urllib.parse.urlsplit(self.config.url)
        url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # no user:password@
        return {"url": url, "interval_seconds": self.config.interval, "timeout_seconds": self.config.timeout}

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
        timings = Timings()
        response_info: dict[str, float] = {}
        self._ssl_context.reset()
        error = None
        try:
            async with asyncio.timeout(self.config.timeout):
                async with self.context.probe_slots:
                    started = time.perf_counter()
                    result = await self._request(timings, response_info)
        except _Failed as exc:
            result, error = exc.result, str(exc)
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError, ValueError) as exc:
            result, error = _classify(exc), self._explain(exc)
        duration = time.perf_counter() - started
        self._record(result, duration, timings, response_info)
        self.stats.record(started, result == "success", result, self._redact(error) if error else None)
        if result != self._previous_result:  # state changes only: a target down for hours logs once
            level = logging.INFO if result == "success" else logging.WARNING
            log.log(level, "probe result changed", extra={"source": self.name, "from": self._previous_result,
                                                          "to": result})
            self._previous_result = result
        return result

    def _explain(self, exc: BaseException) -> str:
        """What went wrong, in words an operator can act on (aiohttp's own messages name internal objects)."""
        if isinstance(exc, TimeoutError):
            return f"no complete answer within {self.config.timeout:g}s"
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
        password = urllib.parse.urlsplit(self.config.url).password
        if password:
            text = text.replace(password, "<secret>")
        return text[:300]

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

    async def _request(self, timings: Timings, info: dict[str, float]) -> str:
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
        return self._judge(response.status, body, info)  # raises _Failed, with info kept for _record

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
        """The result of a complete response; raises _Failed with the reason when it is not a success."""
        valid = self.config.valid_status_codes
        if (status not in valid) if valid else not 200 <= status < 300:
            expected = ", ".join(map(str, valid)) if valid else "2xx"
            raise _Failed("status_code", f"status {status}, expected {expected}")
        if self._regexes_fail or self._regexes_need:
            text = body.decode("utf-8", errors="replace")
            matched = next((r.pattern for r in self._regexes_fail if r.search(text)), None)
            missing = next((r.pattern for r in self._regexes_need if not r.search(text)), None)
            info["regex_failed"] = 1.0 if matched or missing else 0.0
            if matched is not None:
                raise _Failed("body_regex", f"body matches fail_if_body_matches_regexp {matched!r}"[:200])
            if missing is not None:
                raise _Failed("body_regex", f"body does not match fail_if_body_not_matches_regexp {missing!r}"[:200])
        if self._json:
            try:
                document = json.loads(body)
            except (ValueError, RecursionError) as exc:
                for metric in self._json:
                    metric.clear()
                raise _Failed("invalid_json", f"body is not JSON: {exc}"[:200]) from None
            for metric in self._json:
                metric.extract(document)
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
        timings.split_connections(self._ssl_context.handshakes)
        for phase in PHASES:
            self._phases.set((phase,), getattr(timings, phase))
        session = self._ssl_context.last
        version = session.version() if session else None
        cert = session.getpeercert() if session and version else None
        # The ssl module decodes only verified certificates; with insecure_skip_verify there is no expiry.
        not_after = cert.get("notAfter") if cert else None
        if isinstance(not_after, str):
            self._expiry.set((), ssl.cert_time_to_seconds(not_after))
        else:
            self._expiry.remove(())
        self._tls_version.clear()
        if version:
            self._tls_version.set((_TLS_NAMES.get(version, version),), 1)
        self._probes.inc((result,))
        self._last_result.clear()
        self._last_result.set((result,), 1)
        self._latency.observe((), duration)
