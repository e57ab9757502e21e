"""The agent's configuration: one YAML file, validated into plain dataclasses.

Every problem is reported at once, each as ``file:line: field: message``. Each source kind parses its own
section (``agent.sources.http``, ``agent.sources.logs.config``); this module owns the top level, the
``global`` block and the rules that span sources (unique names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from agent import yamlsrc
from agent.sources.http import HttpSourceConfig, parse_http_source
from agent.sources.logs.config import LogSourceConfig, parse_log_source
from agent.yamlsrc import ConfigError, Fields, Report

EXAMPLE_CONFIG = "example.yaml"


@dataclass(frozen=True)
class GlobalConfig:
    interval: float = 15.0
    timeout: float = 10.0
    labels: dict[str, str] = field(default_factory=dict)
    max_concurrent_probes: int = 64


@dataclass(frozen=True)
class AgentConfig:
    file: str
    global_: GlobalConfig
    http: tuple[HttpSourceConfig, ...] = ()
    logs: tuple[LogSourceConfig, ...] = ()
    positions_file: str | None = None

    def sources(self) -> list[tuple[str, Any]]:
        """(kind, source config) for every configured source."""
        return [("http", c) for c in self.http] + [("logs", c) for c in self.logs]


def parse_global(section: Fields | None) -> GlobalConfig:
    if section is None:
        return GlobalConfig()
    defaults = GlobalConfig()
    interval = section.get("interval", yamlsrc.duration, defaults.interval)
    timeout = section.get("timeout", yamlsrc.duration, defaults.timeout)
    labels = section.get("labels", yamlsrc.label_map, {})
    slots = section.get("max_concurrent_probes", yamlsrc.positive_integer, defaults.max_concurrent_probes)
    section.finish()
    return GlobalConfig(interval or defaults.interval, timeout or defaults.timeout, labels or {},
                        slots or defaults.max_concurrent_probes)


def parse_config(data: Any, file: str) -> tuple[AgentConfig, Report]:
    """Validate parsed YAML; returns the config and the report (warnings), or raises ConfigError."""
    report = Report(file)
    top = Fields(data if data is not None else yamlsrc.LocatedMap(), "", report, 1)
    global_ = parse_global(top.section("global"))
    http = [parse_http_source(Fields(item, path, report, line), global_) for item, path, line in top.items("http")]
    logs = [parse_log_source(Fields(item, path, report, line)) for item, path, line in top.items("logs")]
    positions_file = top.get("positions_file", yamlsrc.nonempty_string, None)
    top.finish()

    seen: dict[str, str] = {}
    for kind, items in (("http", top.raw("http") or []), ("logs", top.raw("logs") or [])):
        for index, item in enumerate(items if isinstance(items, list) else []):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                continue
            where = f"{kind}[{index}]"
            if name in seen:
                line = getattr(item, "key_lines", {}).get("name")
                report.error(line, f"{where}.name", f"{name!r} is already the name of {seen[name]}")
            else:
                seen[name] = where
    _check_metric_types(http, logs, report)
    report.raise_if_errors()
    config = AgentConfig(file, global_, tuple(c for c in http if c), tuple(c for c in logs if c), positions_file)
    return config, report


def _check_metric_types(http: list, logs: list, report: Report) -> None:
    """One metric name, one type: sources' families of the same name are merged into one at exposition."""
    from agent.sources.http import EXPORTED_SERIES

    seen: dict[str, tuple[str, str]] = {}
    for kind, sources in (("http", http), ("logs", logs)):
        for source in sources:
            if source is None:
                continue
            for metric in source.json_metrics if kind == "http" else source.metrics:
                line, path = metric.where
                if metric.name in EXPORTED_SERIES:
                    report.error(line, path, f"{metric.name!r} is a name the HTTP probes export")
                elif metric.name in seen and seen[metric.name][0] != metric.type:
                    first_type, first_path = seen[metric.name]
                    report.error(line, path, f"{metric.name!r} is a {metric.type} here but a {first_type} at "
                                             f"{first_path}: one name, one type")
                seen.setdefault(metric.name, (metric.type, path))


def load_config(path: str | Path) -> tuple[AgentConfig, Report]:
    return parse_config(yamlsrc.load_file(path), str(path))


def example_config_text(self_address: str = "127.0.0.1:9910") -> str:
    """The built-in example, probing the agent itself at ``self_address`` (host:port)."""
    text = resources.files("agent.examples").joinpath(EXAMPLE_CONFIG).read_text(encoding="utf-8")
    return Template(text).safe_substitute(SELF=self_address)


def load_example_config(self_address: str = "127.0.0.1:9910") -> tuple[AgentConfig, Report]:
    text = example_config_text(self_address)
    name = f"<built-in {EXAMPLE_CONFIG}>"
    return parse_config(yamlsrc.load_text(text, name), name)


__all__ = ["AgentConfig", "ConfigError", "GlobalConfig", "load_config", "load_example_config", "parse_config"]
