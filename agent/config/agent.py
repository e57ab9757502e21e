"""The agent's configuration: one YAML file, validated into plain dataclasses.

Every problem is reported at once, each as ``file:line: field: message``. Each source kind parses its own
section (``agent.sources.kinds``); this module owns the top level, the ``global`` block and the rules that span
sources: unique names, and the families every source will write, checked against each other and the agent's
own by the store's rules, so what passes ``check`` can always be built and never exposes a series twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import values
from agent.config.fields import Fields
from agent.config.model import AgentConfig, GlobalConfig
from agent.config.problems import ConfigError, FileProblems
from agent.config.yaml import LocatedMap, load_file, load_text
from agent.formatting import excerpt
from agent.series.family import SchemaError
from agent.series.selfmetrics import AGENT_FAMILIES, PROCESS_FAMILIES
from agent.series.store import Group, Store
from agent.sources.base import IDENTITY_LABEL, STATS_FAMILIES
from agent.sources.kinds import BUILTIN_PREFIXES, IDENTITY_LABELS, KINDS

EXAMPLE_CONFIG = "example.yaml"
PUSH_KEYS = ("remote_write", "remote_write_buffer", "external_labels")
# Global labels may not take a name that tells sources apart, nor a label the exposition format gives a meaning
# (histogram buckets, summary quantiles).
RESERVED_GLOBAL_LABELS = frozenset({"le", "quantile", IDENTITY_LABEL, *IDENTITY_LABELS})


def _global_labels(value: Any) -> dict[str, str]:
    labels = values.label_map(value)
    reserved = sorted(set(labels) & RESERVED_GLOBAL_LABELS)
    if reserved:
        raise ValueError(f"{excerpt(reserved[0])} is reserved: it tells sources, histogram buckets or summary "
                         "quantiles apart")
    return labels


def parse_global(section: Fields | None) -> GlobalConfig:
    if section is None:
        return GlobalConfig()
    defaults = GlobalConfig()
    interval = section.get("interval", values.duration, defaults.interval)
    timeout = section.get("timeout", values.duration, defaults.timeout)
    labels = section.get("labels", _global_labels, {})
    slots = section.get("max_concurrent_probes", values.positive_integer, defaults.max_concurrent_probes)
    scrape_timeout = section.get("scrape_timeout", values.duration, defaults.scrape_timeout)
    section.finish()
    return GlobalConfig(interval, timeout, labels, slots, scrape_timeout)


@dataclass
class _Parsed:
    kind: str
    config: Any
    path: str  # field path of the item: http[3]
    line: int | None


def parse_config(data: Any, file: str) -> tuple[AgentConfig, FileProblems]:
    """Validate parsed YAML; returns the config and the report (warnings), or raises ConfigError."""
    report = FileProblems(file)
    top = Fields(data if data is not None else LocatedMap(), "", report, 1)
    global_ = parse_global(top.section("global"))
    parsed: list[_Parsed] = []
    for name in KINDS:  # every kind's section is asked for (a misspelt one is told the nearest)
        for item, path, line in top.items(name):
            kind = KINDS[name]  # a kind the config has no source of is never loaded
            fields = Fields(item, path, report, line)
            if not fields.ok:  # already reported: expected a mapping
                continue
            config = kind.parse(fields, global_.defaults())
            if config is not None:
                parsed.append(_Parsed(kind.name, config, path, line))
    positions_file = top.get("positions_file", values.nonempty_string, None)
    push: tuple[tuple[Any, ...], str | None, dict[str, str]] = ((), None, {})
    if any(top.has(key) for key in PUSH_KEYS):
        from agent.push.config import parse_push  # only an agent that pushes loads it

        push = parse_push(top, global_.interval)
    top.finish()
    _check_series(_unique_names(parsed, report), global_, report)
    report.raise_if_errors()
    if not parsed and not push[0]:  # an empty file is valid YAML and a valid config: say what it does
        what = "the file is empty" if data is None else "no source is configured"
        report.warn(None, "", f"{what}: the agent collects nothing and serves only its own metrics (see `kpi-agent "
                              "example-config` for a start)")
    config = AgentConfig(file, global_, tuple((p.kind, p.config) for p in parsed), positions_file, *push)
    return config, report


def _unique_names(parsed: list[_Parsed], report: FileProblems) -> list[_Parsed]:
    """Source names are unique across kinds: they name series (target=, source=) and positions entries.
    Returns the sources whose name came first."""
    seen: dict[str, str] = {}
    unique = []
    for item in parsed:
        name = item.config.name
        if name in seen:
            report.error(item.config.where[0], f"{item.path}.name", f"{excerpt(name)} is already the name of "
                                                                     f"{seen[name]}")
        else:
            seen[name] = item.path
            unique.append(item)
    return unique


def _check_series(parsed: list[_Parsed], global_: GlobalConfig, report: FileProblems) -> None:
    """Build every source's groups with its declared families in a scratch store, by the same rules the running
    store enforces: a clash becomes an error at the line that declared the family."""
    store = Store(global_.labels, reserved=PROCESS_FAMILIES)
    agent = Group("the agent itself")
    for spec in AGENT_FAMILIES:
        agent.register(spec)
    store.swap(add=[agent])
    # family name -> the kinds whose every source exports it: loads every kind, so it is filled only for a family a
    # source declares itself whose name has a builtin prefix
    builtin: dict[str, list[str]] = {}
    # A source declaring exactly what a checked one declared (kind, families, constant label names) can clash
    # only where that one would, except through its identity labels, which its unique name makes unique: ten
    # thousand targets with the same settings are checked once, not ten thousand times.
    checked: set[tuple] = set()
    for item in parsed:
        kind = KINDS[item.kind]
        declarations = kind.families(item.config)
        self_families = (*STATS_FAMILIES, *kind.self_families(item.config))
        shape = (kind.name, tuple(sorted(kind.data_labels(item.config))), tuple(d.spec for d in declarations),
                 self_families)
        if shape in checked:
            continue
        problems = len(report.problems)  # only errors are added below
        # the same checks a running store makes of a group, a prober's table or row alike: the lines come here
        data = Group(item.path, kind.data_labels(item.config), kind.identity_of(item.config))
        stats = kind.stats_group(item.config, f"{item.path} (self-metrics)")
        store.swap(add=[data, stats])
        for spec in self_families:
            stats.register(spec)
        own_builtin = frozenset(kind.builtin)
        for declared in declarations:
            owner = None
            if declared.spec not in own_builtin and declared.spec.name.startswith(BUILTIN_PREFIXES):
                builtin = builtin or _builtin_owners()
                owner = builtin.get(declared.spec.name)
            if owner is not None:
                report.error(declared.line, declared.field, f"{declared.spec.name} is a name every "
                                                            f"{', '.join(owner)} source exports")
                continue
            try:
                data.register(declared.spec)
            except SchemaError as exc:
                report.error(declared.line, declared.field, str(exc))
        if len(report.problems) == problems:  # a shape with problems is checked again: each source gets its lines
            checked.add(shape)


def _builtin_owners() -> dict[str, list[str]]:
    """Family name -> the kinds whose every source exports it."""
    owners: dict[str, list[str]] = {}
    for kind in KINDS.values():
        for spec in kind.builtin:
            owners.setdefault(spec.name, []).append(kind.name)
    return owners


def load_config(path: str | Path) -> tuple[AgentConfig, FileProblems]:
    return parse_config(load_file(path), str(path))


def example_config_text(self_address: str = "127.0.0.1:9910") -> str:
    """The built-in example, probing the agent itself at ``self_address`` (host:port)."""
    # a file beside the package (pyproject's package-data), not importlib.resources: that one loads tempfile,
    # shutil, bz2 and lzma into every agent for one read
    text = (Path(__file__).parent.parent / "examples" / EXAMPLE_CONFIG).read_text(encoding="utf-8")
    return text.replace("${SELF}", self_address)


def load_example_config(self_address: str = "127.0.0.1:9910") -> tuple[AgentConfig, FileProblems]:
    text = example_config_text(self_address)
    name = f"<built-in {EXAMPLE_CONFIG}>"
    return parse_config(load_text(text, name), name)


__all__ = ["AgentConfig", "ConfigError", "GlobalConfig", "load_config", "load_example_config", "parse_config"]
