"""Client settings Prometheus users know from its ``http_config``: ``tls_config``, ``basic_auth``,
``authorization``, ``bearer_token(_file)``, and the proxy keys. Parsed and checked here for every user (HTTP
probes, HTTP service discovery, TCP and gRPC probes), and turned into SSL contexts and Authorization headers the
same way for all of them."""

from __future__ import annotations

import base64
import functools
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import values
from agent.config.fields import Fields
from agent.config.files import file_stamp
from agent.formatting import cut, excerpt


@dataclass(frozen=True)
class TlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None
    max_version: str | None = None
    ca: str | None = field(default=None, repr=False)  # PEM text, instead of ca_file


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    username_file: str | None = None  # read at every request, as password_file (then username is "")


@dataclass(frozen=True)
class Authorization:
    """Prometheus's ``authorization``: ``<type> <credentials>`` in the Authorization header (and the older
    ``bearer_token``, which is type Bearer)."""

    type: str = "Bearer"
    credentials: str | None = field(default=None, repr=False)
    credentials_file: str | None = None


@dataclass(frozen=True)
class ProxyConfig:
    """Where requests go through a proxy: one for http:// URLs and one for https:// URLs (the same unless they
    come from the environment), hosts that go direct, headers for the CONNECT request."""

    http_url: str | None = field(default=None, repr=False)  # may carry user:password
    https_url: str | None = field(default=None, repr=False)
    no_proxy: tuple[str, ...] = ()
    connect_headers: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    excludes_loopback: bool = False  # as Go's proxy function with no_proxy or from the environment


def make_ssl_context(tls: TlsConfig, factory: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
    """A client context as ``tls`` asks (blocking: it reads the CA bundle); raises for unreadable files."""
    context = factory(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file:
        context.load_verify_locations(cafile=tls.ca_file)
    elif tls.ca:
        context.load_verify_locations(cadata=tls.ca)
    else:
        context.load_default_certs()
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.min_version:
        context.minimum_version = values.ssl_version(tls.min_version)
    if tls.max_version:
        context.maximum_version = values.ssl_version(tls.max_version)
    return context


def basic_authorization(username: str, password: str) -> str:
    """The value of an Authorization (or Proxy-Authorization) header for HTTP basic authentication."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def credentials(basic_auth: BasicAuth | None, bearer_token_file: str | None,
                authorization: Authorization | None = None) -> dict[str, str]:
    """The Authorization header these settings ask for, files read now (a rotated secret needs no reload);
    raises OSError when a file cannot be read."""
    if basic_auth:
        username = basic_auth.username if basic_auth.username_file is None else \
            Path(basic_auth.username_file).read_text().rstrip("\n")
        password = basic_auth.password if basic_auth.password is not None else \
            Path(basic_auth.password_file or "").read_text().rstrip("\n") if basic_auth.password_file else ""
        return {"Authorization": basic_authorization(username, password)}
    if bearer_token_file:
        return {"Authorization": f"Bearer {Path(bearer_token_file).read_text().strip()}"}
    if authorization:
        secret = authorization.credentials if authorization.credentials_file is None else \
            Path(authorization.credentials_file).read_text().strip()
        return {"Authorization": f"{authorization.type} {secret}"}
    return {}


# --- parsing ------------------------------------------------------------------------------------------------

def existing_file(value: Any) -> str:
    path = values.nonempty_string(value)
    if not Path(path).is_file():
        raise ValueError(f"{excerpt(path)} does not exist or is not a file")
    return path


def tls_problem(tls: TlsConfig) -> tuple[str, str] | None:
    """(field, message) if the CA, certificate or key files cannot be loaded the way a probe will load them."""
    return _tls_problem(tls, tuple(file_stamp(p) for p in (tls.ca_file, tls.cert_file, tls.key_file)))


@functools.lru_cache(maxsize=256)
def _tls_problem(tls: TlsConfig, stamps: tuple) -> tuple[str, str] | None:
    # cached per distinct TLS config and file versions: a thousand targets sharing one CA load it once
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            return "ca_file", f"{excerpt(tls.ca_file)} holds no usable PEM certificate: {cut(str(exc))}"
    if tls.ca:
        try:
            context.load_verify_locations(cadata=tls.ca)
        except (ssl.SSLError, ValueError) as exc:
            return "ca", f"holds no usable PEM certificate: {cut(str(exc))}"
    if tls.cert_file and tls.key_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            return "cert_file", (f"{excerpt(tls.cert_file)} and {excerpt(tls.key_file)} are not a PEM certificate "
                                 f"and its key: {cut(str(exc))}")
    return None


# Prometheus keys that name a secret kept elsewhere: a Prometheus secret manager, which no exporter has
SECRET_REFS = ("_ref", "a reference to Prometheus's secret manager, which the agent (like blackbox_exporter) "
                       "does not have: use the _file key")


def refuse_secret_refs(section: Fields, *keys: str) -> None:
    for key in keys:
        if section.raw(key) is not None:
            section.error(key, SECRET_REFS[1])


def parse_tls_config(section: Fields | None) -> TlsConfig:
    """A ``tls_config`` section (absent: the defaults, the system's CA bundle)."""
    if section is None:
        return TlsConfig()
    refuse_secret_refs(section, "ca_ref", "cert_ref", "key_ref")
    for key in ("cert", "key"):
        if section.raw(key) is not None:
            section.error(key, f"an inline {key} is not supported (Python's ssl loads a client certificate and key "
                               f"from files): use {key}_file")
    if section.has("ca") and section.has("ca_file"):
        section.error("ca", "use ca or ca_file, not both")
    tls = TlsConfig(
        ca_file=section.get("ca_file", existing_file, None),
        cert_file=section.get("cert_file", existing_file, None),
        key_file=section.get("key_file", existing_file, None),
        server_name=section.get("server_name", values.nonempty_string, None),
        insecure_skip_verify=section.get("insecure_skip_verify", values.boolean, False),
        min_version=section.get("min_version", values.tls_version, None),
        max_version=section.get("max_version", values.tls_version, None),
        ca=section.get("ca", values.nonempty_string, None),
    )
    if section.has("cert_file") != section.has("key_file"):
        section.error("cert_file" if section.has("cert_file") else "key_file", "cert_file and key_file go together")
    elif not section.invalid:
        problem = tls_problem(tls)
        if problem:
            section.error(*problem)
    if values.tls_versions_out_of_order(tls.min_version, tls.max_version):
        section.error("max_version", f"{tls.max_version} is below min_version {tls.min_version}")
    section.finish()
    return tls


def parse_basic_auth(section: Fields | None) -> BasicAuth | None:
    if section is None:
        return None
    refuse_secret_refs(section, "username_ref", "password_ref")
    username: str | None
    if section.has("username_file"):
        username = ""
        username_file = section.get("username_file", existing_file, None)
        if section.has("username"):
            section.error("username_file", "use username or username_file, not both")
    else:
        username = section.get("username", values.nonempty_string)
        username_file = None
    password = section.get("password", values.string, None)
    password_file = section.get("password_file", existing_file, None)
    if section.has("password") == section.has("password_file"):
        section.report.error(section.line, section.path, "needs exactly one of password or password_file")
    section.finish()
    return BasicAuth(username or "", password, password_file, username_file) if username or username_file else None


def parse_authorization(section: Fields | None) -> Authorization | None:
    if section is None:
        return None
    refuse_secret_refs(section, "credentials_ref")
    kind = section.get("type", values.nonempty_string, "Bearer")
    secret = section.get("credentials", values.nonempty_string, None)
    secret_file = section.get("credentials_file", existing_file, None)
    if kind and kind.lower() == "basic":
        section.error("type", "authorization cannot be of type Basic: use basic_auth")
    if kind and not _is_token(kind):
        section.error("type", f"{excerpt(kind)} is not an authentication scheme name")
    if secret is not None and secret_file is not None:
        section.error("credentials_file", "use credentials or credentials_file, not both")
    if secret is not None and ("\r" in secret or "\n" in secret):
        section.error("credentials", "credentials cannot hold a line break")
    section.finish()
    if secret is None and secret_file is None:
        if not (section.has("credentials") or section.has("credentials_file")):
            section.report.error(section.line, section.path, "needs credentials or credentials_file")
        return None
    return Authorization(kind or "Bearer", secret, secret_file)


def _is_token(text: str) -> bool:
    return bool(text) and all(char.isascii() and (char.isalnum() or char in "!#$%&'*+-.^_`|~") for char in text)


def parse_client(fields: Fields) -> tuple[TlsConfig, BasicAuth | None, str | None]:
    """How an HTTP client connects and authenticates: tls_config, and basic_auth or bearer_token_file."""
    tls = parse_tls_config(fields.section("tls_config"))
    basic_auth = parse_basic_auth(fields.section("basic_auth"))
    bearer = fields.get("bearer_token_file", existing_file, None)
    if basic_auth and bearer:
        fields.error("bearer_token_file", "use basic_auth or bearer_token_file, not both")
    return tls, basic_auth, bearer


def parse_authorizations(fields: Fields, basic_auth: BasicAuth | None, bearer_token_file: str | None
                         ) -> Authorization | None:
    """``authorization`` and the older inline ``bearer_token``: at most one way of authenticating, as
    Prometheus checks its http_config."""
    authorization = parse_authorization(fields.section("authorization"))
    token = fields.get("bearer_token", values.nonempty_string, None)
    if token is not None:
        if "\r" in token or "\n" in token:
            fields.error("bearer_token", "a token cannot hold a line break")
        if bearer_token_file:
            fields.error("bearer_token", "use bearer_token or bearer_token_file, not both")
        if authorization is not None:
            fields.error("bearer_token", "use authorization or bearer_token, not both")
        authorization = authorization or Authorization("Bearer", token)
    if authorization is not None and (basic_auth or bearer_token_file):
        fields.error("authorization", "use one of basic_auth, authorization, bearer_token_file")
    return authorization


# --- proxies ------------------------------------------------------------------------------------------------

def _proxy_url(value: Any) -> str:
    from urllib.parse import urlsplit

    text = values.nonempty_string(value)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme != "http" or not parts.hostname:
        shown = f"{parts.scheme}://{parts.hostname or ''}" if parts.scheme else "it"
        raise ValueError(f"{shown} is not an http:// proxy (https:// and socks5:// proxies are not supported)")
    return text


def _environment_proxy(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name) or os.environ.get(name.lower())
        if value:
            return value if "://" in value else "http://" + value
    return None


def parse_proxy(fields: Fields) -> ProxyConfig | None:
    """``proxy_url`` (with ``no_proxy``) or ``proxy_from_environment`` (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, read
    once, as Go does), and ``proxy_connect_header``."""
    url = fields.get("proxy_url", _proxy_url, None)
    no_proxy_text = fields.get("no_proxy", values.string, "")
    from_environment = fields.get("proxy_from_environment", values.boolean, False)
    connect_headers = fields.get("proxy_connect_header", _connect_headers, {})
    if url and from_environment:
        fields.error("proxy_from_environment", "use proxy_url or proxy_from_environment, not both")
    if no_proxy_text and not url:
        fields.error("no_proxy", "no_proxy needs proxy_url")
    if connect_headers and not (url or from_environment):
        fields.error("proxy_connect_header", "proxy_connect_header needs proxy_url or proxy_from_environment")
    no_proxy = tuple(entry.strip() for entry in no_proxy_text.split(",") if entry.strip())
    if from_environment:
        http_url = _environment_proxy("HTTP_PROXY")
        https_url = _environment_proxy("HTTPS_PROXY")
        no_proxy = tuple(e.strip() for e in (os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or "")
                         .split(",") if e.strip())
        for name, value in (("HTTP_PROXY", http_url), ("HTTPS_PROXY", https_url)):
            if value is not None:
                try:
                    _proxy_url(value)
                except ValueError as exc:
                    fields.error("proxy_from_environment", f"{name}: {exc}")
                    return None
        if http_url is None and https_url is None:
            return None
        return ProxyConfig(http_url, https_url, no_proxy, connect_headers, excludes_loopback=True)
    if not url:
        return None
    return ProxyConfig(url, url, no_proxy, connect_headers, excludes_loopback=bool(no_proxy))


def _connect_headers(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ValueError("is not a mapping of header names to values")
    headers = {}
    for name, raw in value.items():
        items = raw if isinstance(raw, list) else [raw]
        texts = [values.string(item) for item in items]
        if not _is_token(str(name)):
            raise ValueError(f"{excerpt(name)} is not a header name")
        if any("\r" in text or "\n" in text for text in texts):
            raise ValueError(f"the value of {name} holds a line break")
        headers[str(name)] = tuple(texts)
    return headers
