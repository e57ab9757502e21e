"""The exporter-toolkit web config file (``--web.config.file``): TLS, client certificates, basic auth, response
headers and a rate limit, with exporter-toolkit's schema and meaning, so the file node_exporter and
blackbox_exporter read works here as is.

Like exporter-toolkit, the file is read again when it changes: basic auth users, headers and the rate limit
for the next request, TLS settings and the certificate, key and client CA files for the next connection
(rotation needs no restart). Unlike exporter-toolkit, which fails every request while the file is invalid, an
invalid file is logged and counted and the last good one stays in force: a typo never takes monitoring down.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import values
from agent.config.fields import Fields
from agent.config.files import file_stamp
from agent.config.problems import ConfigError, FileProblems, Problem
from agent.config.yaml import LocatedMap, load_file
from agent.formatting import cut, excerpt

log = logging.getLogger(__name__)

CLIENT_AUTH_TYPES = ("NoClientCert", "RequestClientCert", "RequireAnyClientCert", "RequireClientCert",
                     "VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
_VERIFYING = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
# Go's tls.CipherSuites() (the ones exporter-toolkit accepts) by OpenSSL name. TLS 1.3 suites are accepted
# and, as in Go, not configurable.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None, "TLS_AES_256_GCM_SHA384": None, "TLS_CHACHA20_POLY1305_SHA256": None,
}
CURVES = {"CurveP256": "P-256", "CurveP384": "P-384", "CurveP521": "P-521", "X25519": "X25519"}
# The only response headers exporter-toolkit lets the file set, with the values it allows (None: any).
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None, "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": None, "Content-Security-Policy": None,
}
_BCRYPT_RE = re.compile(r"^\$2[aby]?\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")


@dataclass(frozen=True)
class TlsServerConfig:
    cert_file: str | None = None
    key_file: str | None = None
    cert: str | None = None  # inline PEM
    key: str | None = field(default=None, repr=False)  # inline PEM: a secret
    client_ca_file: str | None = None
    client_ca: str | None = None
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()

    def files(self) -> tuple[str, ...]:
        return tuple(p for p in (self.cert_file, self.key_file, self.client_ca_file) if p)


@dataclass(frozen=True)
class RateLimit:
    interval: float  # seconds between two requests (a token per interval)
    burst: int


@dataclass(frozen=True)
class WebConfig:
    tls: TlsServerConfig | None = None
    headers: dict[str, str] = field(default_factory=dict)
    basic_auth_users: dict[str, bytes] = field(default_factory=dict, repr=False)
    rate_limit: RateLimit | None = None
    http2: bool = True  # accepted for compatibility: the agent serves HTTP/1.1


# --- parsing -----------------------------------------------------------------------------------------------

def _names(allowed: dict[str, Any], what: str, where: str) -> Callable[[Any], tuple[str, ...]]:
    def parse(value: Any) -> tuple[str, ...]:
        names = values.list_of(values.nonempty_string)(value)
        for name in names:
            if name not in allowed:
                raise ValueError(f"{excerpt(name)} is not a {what} exporter-toolkit accepts ({where})")
        return tuple(names)
    return parse


def _headers(value: Any) -> dict[str, str]:
    headers = values.string_map(value)
    for name, text in headers.items():
        if name not in HEADERS:
            raise ValueError(f"HTTP header {excerpt(name)} can not be configured (only {', '.join(HEADERS)})")
        allowed = HEADERS[name]
        if allowed is not None and text not in allowed:
            raise ValueError(f"invalid value for {name}: expected one of {', '.join(allowed)}, got {excerpt(text)}")
        if "\r" in text or "\n" in text:
            raise ValueError(f"{name}: a header value cannot hold a line break")
    return headers


def _bcrypt_users(value: Any) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of user names to bcrypt hashes")
    users = {}
    for user, hashed in value.items():
        if not isinstance(hashed, str) or not _BCRYPT_RE.match(hashed):
            raise ValueError(f"user {excerpt(user)}: the password must be a bcrypt hash "
                             "(htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        users[str(user)] = hashed.encode()
    return users


def _parse_tls(section: Fields) -> TlsServerConfig | None:
    get = section.get
    tls = TlsServerConfig(
        cert_file=get("cert_file", values.nonempty_string, None), key_file=get("key_file", values.nonempty_string,
                                                                               None),
        cert=get("cert", values.nonempty_string, None), key=get("key", values.nonempty_string, None),
        client_ca_file=get("client_ca_file", values.nonempty_string, None),
        client_ca=get("client_ca", values.nonempty_string, None),
        client_auth_type=get("client_auth_type", values.one_of(*CLIENT_AUTH_TYPES), "NoClientCert"),
        client_allowed_sans=(tuple(get("client_allowed_sans", values.list_of(values.nonempty_string), []))
                             if section.has("client_allowed_sans") else None),
        min_version=get("min_version", values.tls_version, "TLS12"),
        max_version=get("max_version", values.tls_version, "TLS13"),
        cipher_suites=get("cipher_suites", _names(CIPHER_SUITES, "cipher suite", "Go's tls.CipherSuites()"), ()),
        prefer_server_cipher_suites=get("prefer_server_cipher_suites", values.boolean, True),
        curve_preferences=get("curve_preferences", _names(CURVES, "curve", ", ".join(CURVES)), ()),
    )
    for inline, path in (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file")):
        if section.has(inline) and section.has(path):
            section.error(inline, f"give {inline} (inline PEM) or {path}, not both")
    if not (section.has("cert") or section.has("cert_file")):
        section.error("cert_file", "is required (or cert, inline)")
    if not (section.has("key") or section.has("key_file")):
        section.error("key_file", "is required (or key, inline)")
    for name, file in (("cert_file", tls.cert_file), ("key_file", tls.key_file),
                       ("client_ca_file", tls.client_ca_file)):
        if file and not Path(file).is_file():
            section.error(name, f"{excerpt(file)} does not exist")
    has_ca = bool(tls.client_ca_file or tls.client_ca)
    if tls.client_auth_type in _VERIFYING and not has_ca:
        section.error("client_auth_type", f"{tls.client_auth_type} needs client_ca_file (or client_ca)")
    if has_ca and tls.client_auth_type == "NoClientCert":
        section.error("client_ca_file" if tls.client_ca_file else "client_ca",
                      "client CAs are configured without a client auth policy (client_auth_type)")
    if tls.client_allowed_sans is not None and tls.client_auth_type not in _VERIFYING:
        section.error("client_allowed_sans", "needs a verified client certificate: client_auth_type "
                                             "RequireAndVerifyClientCert or VerifyClientCertIfGiven")
    if values.tls_versions_out_of_order(tls.min_version, tls.max_version):
        section.error("max_version", f"{tls.max_version} is below min_version {tls.min_version}")
    section.finish()
    if section.report.errors:
        return None
    try:
        server_context(tls)  # the certificate, key and CA load, and OpenSSL takes every setting
    except (OSError, ValueError, RuntimeError) as exc:  # ssl.SSLError is an OSError
        section.report.error(section.line, section.path, f"cannot be used: {cut(str(exc))}")
        return None
    return tls


def _rate_limit(section: Fields) -> RateLimit | None:
    interval = section.get("interval", values.duration_or_zero, 0.0)
    burst = section.get("burst", values.positive_integer, 1)
    section.finish()
    return RateLimit(interval, burst) if interval else None


def parse_web_config(data: Any, file: str) -> WebConfig:
    report = FileProblems(file)
    top = Fields(data if data is not None else LocatedMap(), "", report, 1)
    tls_section = top.section("tls_server_config")
    tls = _parse_tls(tls_section) if tls_section else None
    headers: dict[str, str] = {}
    http2 = True
    server = top.section("http_server_config")
    if server:
        headers = server.get("headers", _headers, {})
        http2 = server.get("http2", values.boolean, True)
        server.finish()
    users = top.get("basic_auth_users", _bcrypt_users, {})
    limit_section = top.section("rate_limit")
    rate_limit = _rate_limit(limit_section) if limit_section else None
    top.finish()
    report.raise_if_errors()
    return WebConfig(tls, headers, users, rate_limit, http2)


def load_web_config(path: str) -> WebConfig:
    return parse_web_config(load_file(path), path)


# --- TLS -----------------------------------------------------------------------------------------------------

def server_context(tls: TlsServerConfig) -> ssl.SSLContext:
    """A server context for ``tls``, as exporter-toolkit's ConfigToTLSConfig builds Go's tls.Config."""
    from agent.server import tlsctl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = values.ssl_version(tls.min_version)
    context.maximum_version = values.ssl_version(tls.max_version)
    _load_pair(context, tls)
    if tls.client_ca_file or tls.client_ca:
        context.load_verify_locations(cafile=tls.client_ca_file, cadata=tls.client_ca)
    if tls.client_auth_type in ("RequireAnyClientCert", "RequireClientCert"):
        tlsctl.require_any_client_certificate(context)
    elif tls.client_auth_type == "VerifyClientCertIfGiven":
        context.verify_mode = ssl.CERT_OPTIONAL
    elif tls.client_auth_type == "RequireAndVerifyClientCert":
        context.verify_mode = ssl.CERT_REQUIRED
    # NoClientCert, RequestClientCert: Go asks for a certificate in the second case but never requires or
    # verifies it, so every client is accepted either way; not asking is the same to the client.
    suites = [openssl for name in tls.cipher_suites if (openssl := CIPHER_SUITES[name])]
    if suites:
        context.set_ciphers(":".join(suites))
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve_preferences:
        tlsctl.set_groups(context, [CURVES[name] for name in tls.curve_preferences])
    return context


def _load_pair(context: ssl.SSLContext, tls: TlsServerConfig) -> None:
    if tls.cert is None and tls.key is None:
        context.load_cert_chain(tls.cert_file or "", tls.key_file)
        return
    # inline PEM: load_cert_chain reads files only, so write them where nobody else can read
    import tempfile  # inline PEM only

    with tempfile.TemporaryDirectory(prefix="kpi-agent-tls-") as directory:
        cert = tls.cert_file or os.path.join(directory, "cert.pem")
        key = tls.key_file or os.path.join(directory, "key.pem")
        for path, text in ((cert, tls.cert), (key, tls.key)):
            if text is not None:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(text)
        context.load_cert_chain(cert, key)


class _PerConnectionContext(ssl.SSLContext):
    """The context a TLS listener is given: each new connection is wrapped by the context built from the web
    config as it is now (asyncio calls wrap_bio once per connection), as Go's GetConfigForClient does."""

    live: LiveWebConfig

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        return self.live.tls_context().wrap_bio(*args, **kwargs)


# --- the file as it is now -------------------------------------------------------------------------------------

class LiveWebConfig:
    """The web config file, re-read when it (or a TLS file it names) changes; an invalid version is reported
    through ``on_reload(False, error)`` and the last good one stays."""

    def __init__(self, path: str, on_reload: Callable[[bool, str | None], None] = lambda ok, error: None):
        self.path = path
        self.on_reload = on_reload
        self.config = load_web_config(path)  # at start-up an invalid file is a ConfigError: refuse to start
        self._stamp = file_stamp(path)
        self._checked = time.monotonic()
        self._contexts: tuple[tuple[Any, ...], ssl.SSLContext] | None = None
        self.tls_enabled = self.config.tls is not None

    def current(self) -> WebConfig:
        now = time.monotonic()
        if now - self._checked < 0.1:  # at most ten stat() calls a second, however many requests arrive
            return self.config
        self._checked = now
        stamp = file_stamp(self.path)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                config = self._load_applicable(stamp)
            except ConfigError as exc:
                log.error("web config file invalid; keeping the last good one", extra={"error": str(exc)})
                self.on_reload(False, str(exc))
                return self.config
            self.config = config
            self.on_reload(True, None)
        return self.config

    def _load_applicable(self, stamp: tuple[int, int, int, int] | None) -> WebConfig:
        """The file as it is now, if it can replace the running config without a restart; else a ConfigError,
        so that it is refused like an invalid file and the last good config keeps serving."""
        if stamp is not None and stamp[2] == 0:
            # An editor saving the file truncates it, then writes: caught in between, an empty file would drop
            # TLS and basic auth. Read as "being written"; a config that wants nothing set says `{}`.
            raise ConfigError([Problem(self.path, None, "", "is empty (being written?); to set nothing, write {}")])
        config = load_web_config(self.path)
        if (config.tls is not None) != self.tls_enabled:
            # The listening sockets were made with TLS or without: a handshake cannot be added or removed.
            change = "on" if config.tls is not None else "off"
            raise ConfigError([Problem(self.path, None, "tls_server_config",
                                       f"turning TLS {change} needs a restart")])
        return config

    def tls_context(self) -> ssl.SSLContext:
        tls = self.current().tls
        assert tls is not None
        key = (tls, *(file_stamp(path) for path in tls.files()))
        if self._contexts is None or self._contexts[0] != key:
            try:
                self._contexts = (key, server_context(tls))
            except (OSError, ValueError, RuntimeError) as exc:
                if self._contexts is None:
                    raise
                log.error("TLS files invalid; keeping the last good certificate", extra={"error": str(exc)})
                self.on_reload(False, str(exc))
        return self._contexts[1]

    def listening_context(self) -> ssl.SSLContext | None:
        if not self.tls_enabled:
            return None
        context = _PerConnectionContext(ssl.PROTOCOL_TLS_SERVER)
        context.live = self
        self.tls_context()
        return context
