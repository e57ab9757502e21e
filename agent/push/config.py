"""The ``remote_write:`` section and ``external_labels``, in Prometheus's own shape where it applies.

Each endpoint takes the keys of Prometheus's ``remote_write`` items that mean something for an agent that
samples its own store: ``url``, ``name``, ``remote_timeout``, ``headers``, ``basic_auth``, ``authorization``,
``tls_config``, ``proxy_url``, ``write_relabel_configs`` and ``queue_config``. Prometheus's keys that tune its
WAL-reading shards (``min_shards``, ``batch_send_deadline``) are accepted with a warning, so a copied config
loads. Ours: ``interval`` (how often the store is sampled; default ``global.interval``) and
``max_buffer_size`` (the endpoint's share of ``remote_write_buffer``, the directory where unsent data waits).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from agent.config import values
from agent.config.fields import Fields
from agent.discovery.relabel import RelabelRule, parse_rule
from agent.formatting import excerpt
from agent.sources.probe.client import TlsConfig, existing_file, parse_tls_config

DEFAULT_MAX_BUFFER = 1 << 30
# Headers the protocol sets, or that have their own setting: a `headers:` entry may not replace them.
RESERVED_HEADERS = frozenset({"content-encoding", "content-type", "content-length", "x-prometheus-remote-write-version",
                              "user-agent", "authorization", "host"})
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class QueueConfig:
    capacity: int = 500_000  # samples held in memory while the disk buffer cannot take them
    max_shards: int = 4  # requests in flight at once, within a round
    max_samples_per_send: int = 2000
    min_backoff: float = 0.03
    max_backoff: float = 5.0
    retry_on_http_429: bool = True


@dataclass(frozen=True)
class Secret:
    """A credential given inline or as a file read again when it changes; its value is never shown."""

    value: str | None = field(default=None, repr=False)
    file: str | None = None


@dataclass(frozen=True)
class RemoteWriteConfig:
    url: str
    name: str
    where: tuple[int | None, str]  # line and field path, for messages
    interval: float
    remote_timeout: float = 30.0
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    basic_auth: tuple[str, Secret] | None = None  # username, password
    authorization: tuple[str, Secret] | None = None  # type, credentials
    tls: TlsConfig = TlsConfig()
    proxy_url: str | None = None
    write_relabel: tuple[RelabelRule, ...] = ()
    queue: QueueConfig = QueueConfig()
    max_buffer_size: int = DEFAULT_MAX_BUFFER


def redacted_url(url: str) -> str:
    """The URL as logs, /metrics and the status page show it: no user info, no query (where tokens hide)."""
    from yarl import URL

    parsed = URL(url)
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


def _url(value: Any) -> str:
    from yarl import URL

    text = values.nonempty_string(value)
    try:
        parsed = URL(text)
    except ValueError as exc:
        raise ValueError(f"{excerpt(redacted_url_text(text))} is not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{excerpt(redacted_url_text(text))} is not an http(s) URL with a host")
    return text


def redacted_url_text(text: str) -> str:
    """``text`` with anything between ``//`` and ``@`` cut out, for a message about a URL that does not parse."""
    return re.sub(r"//[^/@]*@", "//", text)


def _name(value: Any) -> str:
    text = values.nonempty_string(value)
    if not _NAME_RE.match(text):
        raise ValueError(f"{excerpt(text)} is not a name of letters, digits, '_', '.' and '-' (at most 64)")
    return text


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of header names to values")
    headers = []
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME_RE.match(name):
            raise ValueError(f"{excerpt(name)} is not a header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"{name} is set by the agent (use basic_auth or authorization for credentials)")
        if not isinstance(text, str) or "\n" in text or "\r" in text:
            raise ValueError(f"the value of {name} must be a string on one line")
        headers.append((name, text))
    return tuple(headers)


def _secret(fields: Fields, inline: str, file: str) -> Secret | None:
    value = fields.get(inline, values.string, None)
    path = fields.get(file, existing_file, None)
    if fields.has(inline) == fields.has(file):
        fields.report.error(fields.line, fields.path, f"needs exactly one of {inline} or {file}")
        return None
    return Secret(value, path)


def _basic_auth(section: Fields | None) -> tuple[str, Secret] | None:
    if section is None:
        return None
    username = section.get("username", values.nonempty_string)
    password = _secret(section, "password", "password_file")
    section.finish()
    return (username, password) if username and password else None


def _authorization(section: Fields | None) -> tuple[str, Secret] | None:
    if section is None:
        return None
    kind = section.get("type", values.nonempty_string, "Bearer")
    if kind.lower() == "basic":
        section.error("type", "use basic_auth for Basic credentials")
    credentials = _secret(section, "credentials", "credentials_file")
    section.finish()
    return (kind, credentials) if credentials else None


def _proxy_url(value: Any) -> str:
    text = _url(value)
    if text.startswith("https"):
        raise ValueError("only http:// proxies are supported")
    return text


def _queue(section: Fields | None) -> QueueConfig:
    defaults = QueueConfig()
    if section is None:
        return defaults
    queue = QueueConfig(
        capacity=section.get("capacity", values.positive_integer, defaults.capacity),
        max_shards=section.get("max_shards", values.positive_integer, defaults.max_shards),
        max_samples_per_send=section.get("max_samples_per_send", values.positive_integer,
                                         defaults.max_samples_per_send),
        min_backoff=section.get("min_backoff", values.duration, defaults.min_backoff),
        max_backoff=section.get("max_backoff", values.duration, defaults.max_backoff),
        retry_on_http_429=section.get("retry_on_http_429", values.boolean, True),
    )
    for key, why in (("min_shards", "requests in flight grow up to max_shards as a round needs them"),
                     ("batch_send_deadline", "a round is sent as soon as it is sampled")):
        if section.has(key):
            section.raw(key)
            section.warn(key, f"has no effect here: {why}")
    if queue.min_backoff > queue.max_backoff:
        section.error("min_backoff", "is longer than max_backoff")
    section.finish()
    return queue


def _default_name(url: str) -> str:
    """Prometheus names an unnamed endpoint by a hash; ours hashes the URL, so the buffer directory follows it."""
    return hashlib.sha256(url.encode()).hexdigest()[:6]


def parse_remote_write(top: Fields, default_interval: float) -> tuple[RemoteWriteConfig, ...]:
    """Every endpoint of ``remote_write:``; problems go to the report."""
    endpoints: list[RemoteWriteConfig] = []
    names: dict[str, str] = {}
    for item, path, line in top.items("remote_write"):
        fields = Fields(item, path, top.report, line)
        if not fields.ok:
            continue
        url = fields.get("url", _url)
        name = fields.get("name", _name, None) or (_default_name(url) if url else None)
        rules = []
        for rule_item, rule_path, rule_line in fields.items("write_relabel_configs"):
            rule_fields = Fields(rule_item, rule_path, top.report, rule_line)
            if rule_fields.ok:
                rule = parse_rule(rule_fields)
                if rule is not None:
                    rules.append(rule)
        config = RemoteWriteConfig(
            url=url or "",
            name=name or "",
            where=(line, path),
            interval=fields.get("interval", values.duration, default_interval),
            remote_timeout=fields.get("remote_timeout", values.duration, 30.0),
            headers=fields.get("headers", _headers, ()),
            basic_auth=_basic_auth(fields.section("basic_auth")),
            authorization=_authorization(fields.section("authorization")),
            tls=parse_tls_config(fields.section("tls_config")),
            proxy_url=fields.get("proxy_url", _proxy_url, None),
            write_relabel=tuple(rules),
            queue=_queue(fields.section("queue_config")),
            max_buffer_size=fields.get("max_buffer_size", values.size, DEFAULT_MAX_BUFFER),
        )
        if fields.has("basic_auth") and fields.has("authorization"):
            fields.error("authorization", "use basic_auth or authorization, not both")
        if url and "@" in url.split("//", 1)[-1].split("/", 1)[0] and (fields.has("basic_auth") or
                                                                        fields.has("authorization")):
            fields.error("url", "holds credentials (user@host): use them or basic_auth/authorization, not both")
        if name and name in names:
            fields.error("name" if fields.has("name") else "url",
                         f"{excerpt(name)} is already the name of {names[name]}"
                         + ("" if fields.has("name") else " (same url: give each a name)"))
        elif name:
            names[name] = path
        fields.finish()
        if url and name:
            endpoints.append(config)
    return tuple(endpoints)


def parse_push(top: Fields, default_interval: float) -> tuple[tuple[RemoteWriteConfig, ...], str | None,
                                                                dict[str, str]]:
    """The top-level keys of pushing: ``remote_write``, ``remote_write_buffer``, ``external_labels``."""
    endpoints = parse_remote_write(top, default_interval)
    buffer_dir = top.get("remote_write_buffer", values.nonempty_string, None)
    external = top.get("external_labels", values.label_map, {})
    if endpoints and buffer_dir is None:
        top.warn("remote_write", "no remote_write_buffer directory: while an endpoint is down, samples wait in "
                                 "memory only (queue_config.capacity of them) and a restart loses them")
    return endpoints, buffer_dir, external
