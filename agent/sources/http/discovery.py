"""Discovered targets, Prometheus's way: target groups in, relabelled and checked targets out. Pure functions.

A target group (``static_configs``, a ``file_sd`` file, an ``http_sd`` response) lists addresses sharing labels.
Each address starts with the source's ``labels:``, then the group's labels, ``__address__``, and the defaults
``__scheme__="http"`` and ``__metrics_path__="/"``; ``relabel_configs`` then shape (or drop) it exactly as in
Prometheus. What is left becomes a target:

- its URL is ``__address__`` when that is an ``http://`` or ``https://`` URL, else
  ``<__scheme__>://<__address__><__metrics_path__>`` (``host:port`` from a service registry);
- its ``target`` label (the series' identity, like Prometheus's ``instance``) is the ``target`` label if
  relabelling set one, else ``__address__``;
- its other labels are those not starting with ``__``; one the agent sets itself on probe series (``source``,
  ``le``, ``phase``, ``result``, ``version``, a json_metrics label) is renamed ``exported_<name>``, as
  Prometheus does for a scraped label that clashes with a target label.

A target that is not a URL, or whose ``target`` another one of the same source already took with other labels,
is refused (counted, logged); identical duplicates are one target. Each replica keeps the targets its shard
owns.
"""

from __future__ import annotations

import glob
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from agent import relabel, yamlsrc
from agent.shard import UNSHARDED, Shard
from agent.sources.http.config import SD_STATES, HttpSourceConfig, TargetGroup, parse_target_group
from agent.yamlsrc import LABEL_NAME_RE, ConfigError, Fields, Problem, Report, excerpt, file_stamp

MAX_REFUSALS_KEPT = 20  # refusal reasons kept for the log; the count is exact
_HOST_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$")


@dataclass(frozen=True)
class Target:
    name: str  # the value of the target label
    url: str
    labels: tuple[tuple[str, str], ...] = ()  # besides source and target, sorted


@dataclass
class Resolution:
    targets: dict[str, Target] = field(default_factory=dict)  # this replica's, by name
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SD_STATES, 0))
    refusals: list[str] = field(default_factory=list)  # why targets were refused, the first few

    def refuse(self, reason: str) -> None:
        self.counts["refused"] += 1
        if len(self.refusals) < MAX_REFUSALS_KEPT:
            self.refusals.append(reason)


def parse_target_groups(text: str, name: str, meta: dict[str, str]) -> list[TargetGroup]:
    """The target groups of a file_sd file or an http_sd response (JSON or YAML: a list of
    ``{targets: [...], labels: {...}}``); raises ConfigError naming file, line and field of every problem."""
    document = yamlsrc.load_text(text, name)
    if document is None:
        return []
    report = Report(name)
    groups = []
    if not isinstance(document, list):
        report.error(getattr(document, "line", None), "", "expected a list of target groups "
                                                          "({targets: [...], labels: {...}})")
    else:
        lines = getattr(document, "item_lines", [None] * len(document))
        for index, item in enumerate(document):
            groups.append(parse_target_group(Fields(item, f"[{index}]", report, lines[index]), meta))
    report.raise_if_errors()
    return groups


def read_target_file(path: str) -> list[TargetGroup]:
    """A file_sd file's target groups (blocking); raises ConfigError."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(path, None, "", f"cannot read: {exc}")]) from None
    return parse_target_groups(text, path, {"__meta_filepath": path})


def resolve(config: HttpSourceConfig, groups: Iterable[TargetGroup], shard: Shard) -> Resolution:
    """The targets of ``groups`` after relabelling, checks and sharding."""
    assert config.discovery is not None
    rules = config.discovery.relabel
    reserved = config.reserved_labels
    result = Resolution()
    seen: dict[str, Target] = {}
    for group in groups:
        base = {**config.labels, **group.labels}
        for address in group.targets:
            labels = {**base, "__address__": address}
            labels.setdefault("__scheme__", "http")
            labels.setdefault("__metrics_path__", "/")
            kept = relabel.apply(rules, labels) if rules else labels
            if kept is None:
                result.counts["dropped"] += 1
                continue
            target = _target(kept, reserved)
            if isinstance(target, str):
                result.refuse(f"{excerpt(address)}: {target}")
                continue
            known = seen.get(target.name)
            if known is not None:
                if known != target:
                    result.refuse(f"{excerpt(address)}: target {excerpt(target.name)} is discovered twice with "
                                  "different URLs or labels; the first is probed")
                continue
            seen[target.name] = target
            if shard.owns(f"{config.name}\0{target.name}"):
                result.targets[target.name] = target
                result.counts["probed"] += 1
            else:
                result.counts["other_shard"] += 1
    return result


def _target(labels: dict[str, str], reserved: frozenset[str]) -> Target | str:
    """The target these relabelled labels describe, or why there is none."""
    address = labels.get("__address__", "")
    if not address:
        return "no __address__ is left after relabel_configs"
    if "://" in address:
        url = address
    else:
        path = labels.get("__metrics_path__", "/")
        url = f"{labels.get('__scheme__', 'http')}://{address}{path if path.startswith('/') else '/' + path}"
    try:
        parsed = URL(url)
    except ValueError as exc:
        return f"{excerpt(url)} is not a URL: {yamlsrc.cut(str(exc))}"
    if parsed.scheme not in ("http", "https") or not _valid_host(parsed.raw_host or ""):
        return f"{excerpt(url)} is not an http:// or https:// URL with a host"
    own = {name: value for name, value in labels.items() if not name.startswith("__") and name != "target"}
    for name in own:
        if not LABEL_NAME_RE.match(name):
            return f"relabel_configs made {excerpt(name)}, which is not a label name"
    for name in [name for name in own if name in reserved]:
        exported = f"exported_{name}"
        while exported in reserved or exported in own:
            exported = f"exported_{exported}"
        own[exported] = own.pop(name)
    return Target(labels.get("target") or address, url, tuple(sorted(own.items())))


def _valid_host(host: str) -> bool:
    """A DNS name (IDNA-encoded by yarl) or an IP address: what a connection can be opened to."""
    if _HOST_RE.match(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_discovery(config: HttpSourceConfig, file: str, shard: Shard = UNSHARDED) -> tuple[list[Problem], int]:
    """What ``kpi-agent check`` says about a discovering source now: problems of the target files it finds
    (errors) and of the targets they give (warnings), and how many targets it would probe. http_sd endpoints
    are not asked: a check does not depend on the network."""
    assert config.discovery is not None
    problems: list[Problem] = []
    groups = list(config.discovery.static)
    for path in sorted(target_files(tuple(p for sd in config.discovery.files for p in sd.files))):
        try:
            groups += read_target_file(path)
        except ConfigError as exc:
            problems += exc.problems
    result = resolve(config, groups, shard)
    line, field_path = config.where
    for reason in result.refusals:
        problems.append(Problem(file, line, field_path.removesuffix(".name"), f"refused target {reason}",
                                warning=True))
    return problems, result.counts["probed"]


def target_files(patterns: tuple[str, ...]) -> dict[str, tuple[int, int, int, int]]:
    """The files the file_sd patterns match now, each with its stamp (blocking: a glob and a stat)."""
    found = {}
    for pattern in patterns:
        for path in glob.glob(pattern):
            stamp = file_stamp(path, regular_only=True)
            if stamp is not None:
                found[path] = stamp
    return found
