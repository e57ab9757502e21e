"""HTTP probes: a URL probed the way blackbox_exporter's http prober does, and JSON metrics read from its body.

A source's module (method, status codes, regexes, TLS, auth, proxy, JSON metrics) is compiled once into an
``HttpProber`` shared by its targets. Each probe resolves the host (``preferred_ip_protocol``), opens its own
connection, speaks HTTP/1.1 itself (agent.sources.http.connection, head, body: no client library between the
probe and the socket, so the phases are measured where they happen) and follows redirects, recording
blackbox's families into the attempt's ``ProbeResult`` as it goes: what was measured before a failure or a
timeout stays, as in blackbox.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from pathlib import Path

from agent.series.store import Group
from agent.sources.http.body import Sink, content_length, read_body
from agent.sources.http.checks import Checks
from agent.sources.http.client import HttpShared
from agent.sources.http.config import (
    BODY_LENGTH,
    CONTENT_LENGTH,
    LAST_MODIFIED,
    MAX_REDIRECTS,
    PHASE_DURATION,
    PHASES,
    REDIRECTS,
    SSL,
    STATUS_CODE,
    VERSION,
    HttpModule,
)
from agent.sources.http.connection import Connection, connect, start_tls
from agent.sources.http.head import Head, InvalidResponse
from agent.sources.http.proxy import Proxies
from agent.sources.http.request import USER_AGENT, Url, header_lines, parse_url, request_head
from agent.sources.probe.client import credentials
from agent.sources.probe.failures import TARGET_FAULTS
from agent.sources.probe.net import resolve
from agent.sources.probe.result import ProbeFailed, ProbeResult
from agent.sources.probe.tls import record_tls

_PHASE_KEYS = tuple((phase, (phase,)) for phase in PHASES)  # label tuples made once, shared by every target
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})  # what Go's client follows
# A result that keeps nothing: a redirect's name resolution adds to the resolve phase only.
_DISCARD = ProbeResult(0.0, 0.0, frozenset())


def same_host_or_subdomain(host: str, origin: str) -> bool:
    """Go's rule for where a redirect may carry credentials: the origin's host or one of its subdomains."""
    if host == origin:
        return True
    return ":" not in host and "%" not in host and host.endswith("." + origin)


class Phases:
    """One probe's phase durations, summed over its redirects (blackbox_exporter's ``probe_http_duration_seconds``:
    transfer counts for the final response only)."""

    __slots__ = ("resolve", "connect", "tls", "processing", "transfer", "tls_object")

    def __init__(self) -> None:
        self.resolve = self.connect = self.tls = self.processing = self.transfer = 0.0
        self.tls_object: object | None = None  # the handshake of the final response's connection


class HttpProber:
    """One source's module, compiled: what every one of its targets shares."""

    faults = (*TARGET_FAULTS, InvalidResponse)

    def __init__(self, module: HttpModule, shared: HttpShared, own: Group | None):
        self.module = module
        self.shared = shared
        self.ssl_context = shared.tls.get(module.tls)
        self.checks = Checks(module, own)
        self.proxies = Proxies(module.proxy) if module.proxy is not None else None
        configured = {name.lower(): value for name, value in module.headers.items()}
        self.host_header = configured.get("host")
        self.host_name = _host_of(self.host_header) if self.host_header else None
        self.user_agent = "" if "user-agent" in configured else f"User-Agent: {USER_AGENT}\r\n"
        self.header_lines = header_lines(module.headers)
        self.sends_credentials = bool(module.basic_auth or module.bearer_token_file or module.authorization
                                      or module.header_files)
        self.body = module.body.encode("utf-8")
        self.keeps_body = self.checks.reads_body

    def credentials(self) -> str:
        """The Authorization line of the configured credentials; password and token files are read at every
        probe (a rotated secret needs no reload)."""
        module = self.module
        try:
            found = credentials(module.basic_auth, module.bearer_token_file, module.authorization)
            found.update((name, Path(path).read_text().strip()) for name, path in module.header_files)
        except OSError as exc:
            raise ProbeFailed("auth_file_error", f"cannot read credentials file: {exc.strerror}") from None
        if any("\n" in value or "\r" in value for value in found.values()):
            raise ProbeFailed("auth_file_error", "a credentials file holds more than one line")
        return "".join(f"{name}: {value}\r\n" for name, value in found.items())

    def request_body(self) -> bytes:
        if self.module.body_file is None:
            return self.body
        try:
            return Path(self.module.body_file).read_bytes()
        except OSError as exc:
            raise ProbeFailed("auth_file_error", f"cannot read body_file: {exc.strerror}") from None

    def explain(self, exc: BaseException, target: str, timeout: float) -> tuple[str, str] | None:
        """A response that is not HTTP, and the words of a connection the target closed mid-response; None: the
        framework's words (timeouts, resets)."""
        if isinstance(exc, InvalidResponse):
            return "invalid_response", str(exc)
        if isinstance(exc, OSError) and not exc.errno and exc.strerror:
            return "connection_error", exc.strerror
        return None

    async def probe(self, target: str, result: ProbeResult) -> None:
        phases = Phases()
        try:
            await self._exchange(parse_url(target), phases, result)
        finally:
            for phase, key in _PHASE_KEYS:
                result.set(PHASE_DURATION, getattr(phases, phase), key)
            if phases.tls_object is not None:
                record_tls(result, phases.tls_object)

    async def _exchange(self, url: Url, phases: Phases, result: ProbeResult) -> None:
        """Request ``url``, follow redirects, judge the final response."""
        module = self.module
        origin = url
        method, body = module.method, self.request_body()
        host_header = self.host_header
        secrets = self.credentials() if self.sends_credentials else ""
        cookies: dict[str, str] = {}
        redirects = 0
        while True:
            connection, tls_object = await self._open(url, origin, phases, result if url is origin else None)
            done = False  # closed gently once the whole response is read; aborted otherwise (a timeout, a redirect's
            # unread body, a failure): a TLS close would wait for the target's close_notify
            try:
                phases.tls_object = tls_object
                same_host = same_host_or_subdomain(url.host, origin.host)
                fields = self.user_agent + (self.header_lines + secrets if same_host else "")
                if url.username is not None and not (same_host and secrets):
                    fields += _basic(url)
                if cookies:
                    fields += "Cookie: " + "; ".join(f"{k}={v}" for k, v in cookies.items()) + "\r\n"
                proxied = self.proxies is not None and url.scheme == "http" and self.proxies.for_url(url) is not None
                if proxied and self.proxies is not None:
                    fields += self.proxies.authorization(url)
                got_connection = time.perf_counter()
                connection.first_byte = 0.0
                send_length = len(body) if body or method in ("POST", "PUT", "PATCH") else None
                connection.write(request_head(method, url, host_header or url.authority, fields, send_length,
                                              absolute=proxied) + body)
                head = await connection.read_head()
                while 100 <= head.status < 200 and head.status != 101:  # interim responses: the final one follows
                    head = await connection.read_head()
                phases.processing += connection.first_byte - got_connection
                result.set(STATUS_CODE, head.status)
                location = head.get("location")
                if module.follow_redirects and head.status in REDIRECT_STATUSES and location is not None:
                    if redirects == MAX_REDIRECTS:
                        raise ProbeFailed("too_many_redirects", f"more than {MAX_REDIRECTS} redirects")
                    redirects += 1
                    result.set(REDIRECTS, redirects)
                    _keep_cookies(head, cookies)
                    following = url.join(location)
                    if host_header is not None and "://" in location:
                        host_header = None  # Go keeps a configured Host through relative redirects only
                    if head.status in (301, 302, 303) and method not in ("GET", "HEAD"):
                        method, body = "GET", b""
                    url = following
                    continue
                await self._final(connection, head, method, url, phases, result)
                done = True
                return
            finally:
                if done:
                    connection.close()
                else:
                    connection.abort()

    async def _final(self, connection: Connection, head: Head, method: str, url: Url, phases: Phases,
                     result: ProbeResult) -> None:
        """Record the final response, read its body, judge it (status first, as blackbox does, then headers,
        the body, the version, TLS)."""
        checks = self.checks
        result.set(VERSION, head.version[0] + head.version[1] / 10)
        result.set(SSL, 1.0 if url.scheme == "https" else 0.0)
        length = content_length(head, method)
        result.set(CONTENT_LENGTH, length if length is not None else -1)
        if (modified := head.get("last-modified")) is not None:
            _last_modified(modified, result)
        verdict = checks.head_verdict(head, result)
        sink = Sink(self.module.body_size_limit, self.keeps_body, self.module.compression)
        try:
            await read_body(connection, head, method, sink)
        except (ProbeFailed, InvalidResponse, OSError):
            result.set(BODY_LENGTH, sink.length)
            if verdict is not None:
                raise verdict from None  # the status (or a header) decided first
            raise
        phases.transfer += time.perf_counter() - connection.first_byte
        result.set(BODY_LENGTH, sink.length)
        if verdict is not None:
            raise verdict
        checks.judge_body(sink.body if self.keeps_body else b"", result)
        checks.judge_connection(head, url)

    async def _open(self, url: Url, origin: Url, phases: Phases, result: ProbeResult | None
                    ) -> tuple[Connection, object | None]:
        """A connection for ``url`` (through the proxy when one applies), TLS done; adds its phases. The first
        hop's name resolution is recorded (``result``), as blackbox records its chooseProtocol."""
        module = self.module
        started = time.perf_counter()
        proxy = self.proxies.for_url(url) if self.proxies is not None else None
        if proxy is not None and module.skip_resolve_phase_with_proxy:
            ip = None
        else:
            ip = await resolve(url.host, module.ip, result if result is not None else _DISCARD)
        resolved = time.perf_counter()
        phases.resolve += resolved - started
        if proxy is not None:
            assert self.proxies is not None
            connection = await self.proxies.connect(proxy, url, ip, module.ip)
        else:
            assert ip is not None
            connection = await connect(ip, url.port, url.address, module.ip.source_ip)
        connected = time.perf_counter()
        phases.connect += connected - resolved
        if url.scheme != "https":
            return connection, None
        # tls_config.server_name and a configured Host header name the configured host only (blackbox's
        # transport without ServerName serves the redirects to other hosts)
        first_host = url.host == origin.host and url.port == origin.port
        server_name = (module.tls.server_name or self.host_name or url.host) if first_host else url.host
        try:
            tls_object = await start_tls(connection, self.ssl_context, server_name, url.address)
        except BaseException:
            connection.abort()
            raise
        phases.tls += time.perf_counter() - connected
        return connection, tls_object


def _host_of(authority: str) -> str:
    """The host of a Host header value (``name:port``, ``[v6]:port``)."""
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0]
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def _basic(url: Url) -> str:
    from agent.sources.probe.client import BasicAuth

    found = credentials(BasicAuth(url.username or "", url.password or ""), None, None)
    return "".join(f"{name}: {value}\r\n" for name, value in found.items())


def _keep_cookies(head: Head, cookies: dict[str, str]) -> None:
    """Cookies a redirect sets are sent on the following requests of the probe (blackbox keeps a cookie jar per
    probe: login redirects that set a session cookie work). Attributes (Domain, Path, Expires) are not
    honoured: the jar lives for one probe."""
    for value in head.values("set-cookie"):
        pair = value.split(";", 1)[0]
        name, sep, content = pair.partition("=")
        if sep and name.strip():
            cookies[name.strip()] = content.strip()


def _last_modified(value: str, result: ProbeResult) -> None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return
    result.set(LAST_MODIFIED, moment.timestamp())
