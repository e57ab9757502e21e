"""The exporter-toolkit web config file (``--web.config.file``): TLS, basic auth and response headers.

SREs already run node_exporter and blackbox_exporter with this file; the same file works here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from agent import yamlsrc
from agent.yamlsrc import Fields, Report

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class TlsServerConfig:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str | None = None


@dataclass(frozen=True)
class WebConfig:
    tls: TlsServerConfig | None = None
    headers: dict[str, str] = field(default_factory=dict)
    basic_auth_users: dict[str, bytes] = field(default_factory=dict, repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _TLS_VERSIONS[self.tls.min_version]
        if self.tls.max_version:
            context.maximum_version = _TLS_VERSIONS[self.tls.max_version]
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        context.verify_mode = _CLIENT_AUTH[self.tls.client_auth_type]
        if self.tls.client_ca_file:
            context.load_verify_locations(self.tls.client_ca_file)
        return context

    def middleware(self):
        verified: set[bytes] = set()  # digests of credentials that passed bcrypt: bcrypt is slow by design

        def authorized(header: str) -> bool:
            if not header.startswith("Basic "):
                return False
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            hashed = self.basic_auth_users.get(user)
            if hashed is None:
                return False
            digest = hashlib.sha256(hashed + b"\0" + password.encode()).digest()
            if digest in verified:
                return True
            import bcrypt  # lazily: only an agent with basic_auth_users loads it

            if bcrypt.checkpw(password.encode(), hashed):
                verified.add(digest)
                return True
            return False

        @web.middleware
        async def middleware(request: web.Request, handler):
            if self.basic_auth_users and not authorized(request.headers.get("Authorization", "")):
                response: web.StreamResponse = web.Response(
                    status=401, text="Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="kpi-agent"'})
            else:
                response = await handler(request)
            response.headers.update(self.headers)
            return response

        return middleware


def _parse_tls(section: Fields) -> TlsServerConfig | None:
    cert = section.get("cert_file", yamlsrc.nonempty_string)
    key = section.get("key_file", yamlsrc.nonempty_string)
    client_ca = section.get("client_ca_file", yamlsrc.nonempty_string, None)
    auth = section.get("client_auth_type", yamlsrc.one_of(*_CLIENT_AUTH), "NoClientCert")
    min_version = section.get("min_version", yamlsrc.one_of(*_TLS_VERSIONS), "TLS12")
    max_version = section.get("max_version", yamlsrc.one_of(*_TLS_VERSIONS), None)
    section.finish()
    for key_name, path in (("cert_file", cert), ("key_file", key), ("client_ca_file", client_ca)):
        if path and not Path(path).is_file():
            section.error(key_name, f"{path!r} does not exist")
    if auth in ("RequireAndVerifyClientCert", "VerifyClientCertIfGiven") and not client_ca:
        section.error("client_auth_type", f"{auth} needs client_ca_file")
    if cert is None or key is None:
        return None
    return TlsServerConfig(cert, key, client_ca, auth, min_version, max_version)


def _bcrypt_users(value: Any) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of user names to bcrypt hashes")
    users = {}
    for user, hashed in value.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ValueError(f"user {user!r}: the password must be a bcrypt hash "
                             "(htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        users[str(user)] = hashed.encode()
    return users


def load_web_config(path: str) -> WebConfig:
    report = Report(path)
    top = Fields(yamlsrc.load_file(path) or yamlsrc.LocatedMap(), "", report, 1)
    tls_section = top.section("tls_server_config")
    tls = _parse_tls(tls_section) if tls_section else None
    headers: dict[str, str] = {}
    server = top.section("http_server_config")
    if server:
        headers = server.get("headers", yamlsrc.string_map, {}) or {}
        server.get("http2", yamlsrc.boolean, True)  # accepted for compatibility; aiohttp serves HTTP/1.1
        server.finish()
    users = top.get("basic_auth_users", _bcrypt_users, {}) or {}
    top.finish()
    report.raise_if_errors()
    return WebConfig(tls, headers, users)
