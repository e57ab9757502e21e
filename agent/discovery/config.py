"""Where a source's targets come from, Prometheus's way: ``static_configs``, ``file_sd_configs``,
``http_sd_configs`` and the ``relabel_configs`` that shape what they give. Same keys and defaults as
Prometheus, so the target files and SD endpoints an SRE already has work as they are."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import values
from agent.config.fields import Fields
from agent.discovery import relabel
from agent.discovery.relabel import RelabelRule
from agent.discovery.targetgroup import TargetGroup, parse_target_group
from agent.formatting import excerpt, without_credentials
from agent.sources.probe.client import BasicAuth, TlsConfig, parse_client

DEFAULT_FILE_SD_REFRESH = 300.0  # Prometheus's defaults
DEFAULT_HTTP_SD_REFRESH = 60.0
DISCOVERY_KEYS = ("static_configs", "file_sd_configs", "http_sd_configs")
# Prometheus's file_sd name check: one "*" at most, in the last path element, and a known extension.
_FILE_SD_NAME_RE = re.compile(r"^[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)$")


@dataclass(frozen=True)
class FileSdConfig:
    files: tuple[str, ...]  # globs, relative paths resolved against the config file's directory
    refresh_interval: float = DEFAULT_FILE_SD_REFRESH


@dataclass(frozen=True)
class HttpSdConfig:
    url: str
    refresh_interval: float = DEFAULT_HTTP_SD_REFRESH
    tls: TlsConfig = field(default_factory=TlsConfig)
    basic_auth: BasicAuth | None = None
    bearer_token_file: str | None = None


@dataclass(frozen=True)
class DiscoveryConfig:
    """Where a source's targets come from, and the relabel_configs that shape them."""

    static: tuple[TargetGroup, ...] = ()
    files: tuple[FileSdConfig, ...] = ()
    http: tuple[HttpSdConfig, ...] = ()
    relabel: tuple[RelabelRule, ...] = ()

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The mechanisms this source uses: static, file, http."""
        used = (("static", self.static), ("file", self.files), ("http", self.http))
        return tuple(name for name, configs in used if configs)


def http_url(value: Any) -> str:
    """An http:// or https:// URL with a host, as the probes' own URL parser (yarl) reads it."""
    text = values.nonempty_string(value)
    shown = excerpt(without_credentials(text))  # errors reach logs and the status page: never the password
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"{shown} is not an http:// or https:// URL")
    from yarl import URL  # here: an agent without HTTP sources never loads it

    try:
        host = URL(text).host
    except ValueError as exc:
        raise ValueError(f"{shown} is not a URL: {exc}") from None
    if not host:
        raise ValueError(f"{shown} has no host")
    return text


def _file_sd_pattern(base: Path) -> Any:
    def parse(value: Any) -> str:
        pattern = values.nonempty_string(value)
        if not _FILE_SD_NAME_RE.match(pattern):
            raise ValueError(f"{excerpt(pattern)} is not a target file pattern: one * at most, in the file name, "
                             "and the name ends in .json, .yml or .yaml")
        return str(base / pattern)  # an absolute pattern stays as it is

    return parse


def _parse_file_sd(fields: Fields, base: Path) -> FileSdConfig | None:
    files = fields.get("files", values.list_of(_file_sd_pattern(base)))
    if files == []:
        fields.error("files", "lists no file pattern")
    refresh = fields.get("refresh_interval", values.duration, DEFAULT_FILE_SD_REFRESH)
    fields.finish()
    return FileSdConfig(tuple(files), refresh) if files else None


def _parse_http_sd(fields: Fields) -> HttpSdConfig | None:
    url = fields.get("url", http_url)
    refresh = fields.get("refresh_interval", values.duration, DEFAULT_HTTP_SD_REFRESH)
    tls, basic_auth, bearer = parse_client(fields)
    fields.finish()
    return HttpSdConfig(url, refresh, tls, basic_auth, bearer) if url else None


def parse_discovery(fields: Fields) -> DiscoveryConfig | None:
    """The discovery keys of a source, or None if it has none (then it probes its one target)."""
    if not any(fields.has(key) for key in DISCOVERY_KEYS):
        if fields.raw("relabel_configs") is not None:
            fields.error("relabel_configs", "applies to discovered targets: add static_configs, file_sd_configs or "
                                            "http_sd_configs, or remove it")
        return None
    base = Path(fields.report.file).parent
    static = [parse_target_group(Fields(item, path, fields.report, line))
              for item, path, line in fields.items("static_configs")]
    files = [_parse_file_sd(Fields(item, path, fields.report, line), base)
             for item, path, line in fields.items("file_sd_configs")]
    http = [_parse_http_sd(Fields(item, path, fields.report, line))
            for item, path, line in fields.items("http_sd_configs")]
    rules = [relabel.parse_rule(Fields(item, path, fields.report, line))
             for item, path, line in fields.items("relabel_configs")]
    return DiscoveryConfig(tuple(static), tuple(f for f in files if f), tuple(h for h in http if h),
                           tuple(r for r in rules if r))
