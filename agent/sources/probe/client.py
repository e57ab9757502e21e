"""Client settings Prometheus users know from its ``http_config``: ``tls_config``, ``basic_auth``,
``bearer_token_file``. Parsed and checked here for every user (HTTP probes, HTTP service discovery, TCP and
gRPC probes), and turned into SSL contexts and Authorization headers the same way for all of them."""

from __future__ import annotations

import base64
import functools
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import values
from agent.config.fields import Fields
from agent.config.files import file_stamp
from agent.formatting import cut, excerpt

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
                "TLS13": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class TlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: str | None = None
    max_version: str | None = None


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None


def make_ssl_context(tls: TlsConfig, factory: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
    """A client context as ``tls`` asks (blocking: it reads the CA bundle); raises for unreadable files."""
    context = factory(ssl.PROTOCOL_TLS_CLIENT)
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
    if tls.max_version:
        context.maximum_version = TLS_VERSIONS[tls.max_version]
    return context


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
    if tls.cert_file and tls.key_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            return "cert_file", (f"{excerpt(tls.cert_file)} and {excerpt(tls.key_file)} are not a PEM certificate "
                                 f"and its key: {cut(str(exc))}")
    return None


def parse_tls_config(section: Fields | None) -> TlsConfig:
    """A ``tls_config`` section (absent: the defaults, the system's CA bundle)."""
    if section is None:
        return TlsConfig()
    tls = TlsConfig(
        ca_file=section.get("ca_file", existing_file, None),
        cert_file=section.get("cert_file", existing_file, None),
        key_file=section.get("key_file", existing_file, None),
        server_name=section.get("server_name", values.nonempty_string, None),
        insecure_skip_verify=section.get("insecure_skip_verify", values.boolean, False),
        min_version=section.get("min_version", values.one_of(*TLS_VERSIONS), None),
        max_version=section.get("max_version", values.one_of(*TLS_VERSIONS), None),
    )
    if section.has("cert_file") != section.has("key_file"):
        section.error("cert_file" if section.has("cert_file") else "key_file", "cert_file and key_file go together")
    elif not section.invalid:
        problem = tls_problem(tls)
        if problem:
            section.error(*problem)
    if tls.min_version and tls.max_version and \
            TLS_VERSIONS[tls.min_version] > TLS_VERSIONS[tls.max_version]:
        section.error("max_version", f"{tls.max_version} is below min_version {tls.min_version}")
    section.finish()
    return tls


def parse_basic_auth(section: Fields | None) -> BasicAuth | None:
    if section is None:
        return None
    username = section.get("username", values.nonempty_string)
    password = section.get("password", values.string, None)
    password_file = section.get("password_file", existing_file, None)
    if section.has("password") == section.has("password_file"):
        section.report.error(section.line, section.path, "needs exactly one of password or password_file")
    section.finish()
    return BasicAuth(username, password, password_file) if username else None


def parse_client(fields: Fields) -> tuple[TlsConfig, BasicAuth | None, str | None]:
    """How an HTTP client connects and authenticates: tls_config, and basic_auth or bearer_token_file."""
    tls = parse_tls_config(fields.section("tls_config"))
    basic_auth = parse_basic_auth(fields.section("basic_auth"))
    bearer = fields.get("bearer_token_file", existing_file, None)
    if basic_auth and bearer:
        fields.error("bearer_token_file", "use basic_auth or bearer_token_file, not both")
    return tls, basic_auth, bearer
