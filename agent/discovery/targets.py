"""Discovered targets, Prometheus's way: target groups in, relabelled and checked targets out. Pure functions.

Each address of a group starts with the source's ``labels:``, then the group's labels, ``__address__`` and the
defaults the prober kind gives (HTTP: ``__scheme__="http"``, ``__metrics_path__="/"``); ``relabel_configs``
then shape (or drop) it exactly as in Prometheus. What is left becomes a target:

- what is probed is what the kind reads from the labels (``__address__``; HTTP builds a URL);
- its ``target`` label (the series' identity, like Prometheus's ``instance``) is the ``target`` label if
  relabelling set one, else ``__address__``;
- its other labels are those not starting with ``__``; one the agent sets itself on probe series (``source``,
  ``le``, ``phase``, ``result``, ...) is renamed ``exported_<name>``, as Prometheus does for a scraped label that
  clashes with a target label.

A target the kind cannot probe, or whose ``target`` another one of the same source already took with other
labels, is refused (counted, logged); identical duplicates are one target. Each replica keeps the targets its
shard owns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.config.validation import LABEL_NAME_RE
from agent.discovery import relabel
from agent.discovery.relabel import RelabelRule
from agent.discovery.targetgroup import TargetGroup
from agent.formatting import excerpt
from agent.runtime.shard import Shard

MAX_REFUSALS_KEPT = 20  # refusal reasons kept for the log and the status page; the count is exact
STATES = ("probed", "other_shard", "dropped", "refused")

# What a kind probes, read from a target's relabelled labels; raises ValueError saying why it cannot.
AddressOf = Callable[[Mapping[str, str]], str]


@dataclass(frozen=True, slots=True)
class Target:
    name: str  # the value of the target label
    address: str  # what the prober is given: a URL, host:port, a host
    labels: tuple[tuple[str, str], ...] = ()  # besides source and target, sorted


@dataclass(frozen=True)
class TargetRules:
    """How a source turns discovered addresses into targets."""

    source: str  # the source's name (the shard key's first part)
    labels: Mapping[str, str]  # the source's ``labels:``, under every group's labels
    relabel: tuple[RelabelRule, ...]
    address_of: AddressOf
    defaults: Mapping[str, str] = field(default_factory=dict)  # e.g. __scheme__, before relabelling
    reserved: frozenset[str] = frozenset()  # label names the agent sets on the kind's series


@dataclass
class Resolution:
    targets: dict[str, Target] = field(default_factory=dict)  # this replica's, by name
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    refusals: list[str] = field(default_factory=list)  # why targets were refused, the first few

    def refuse(self, reason: str) -> None:
        self.counts["refused"] += 1
        if len(self.refusals) < MAX_REFUSALS_KEPT:
            self.refusals.append(reason)


def resolve(rules: TargetRules, groups: Iterable[TargetGroup], shard: Shard) -> Resolution:
    """The targets of ``groups`` (TargetGroups) after relabelling, checks and sharding."""
    result = Resolution()
    seen: dict[str, Target] = {}
    for group in groups:
        base = {**rules.labels, **group.labels}
        for address in group.targets:
            labels = {**base, "__address__": address}
            for name, value in rules.defaults.items():
                labels.setdefault(name, value)
            kept = relabel.apply(rules.relabel, labels) if rules.relabel else labels
            if kept is None:
                result.counts["dropped"] += 1
                continue
            target = _target(kept, rules)
            if isinstance(target, str):
                result.refuse(f"{excerpt(address)}: {target}")
                continue
            known = seen.get(target.name)
            if known is not None:
                if known != target:
                    result.refuse(f"{excerpt(address)}: target {excerpt(target.name)} is discovered twice with "
                                  "different addresses or labels; the first is probed")
                continue
            seen[target.name] = target
            if shard.owns(f"{rules.source}\0{target.name}"):
                result.targets[target.name] = target
                result.counts["probed"] += 1
            else:
                result.counts["other_shard"] += 1
    return result


def _target(labels: dict[str, str], rules: TargetRules) -> Target | str:
    """The target these relabelled labels describe, or why there is none."""
    address = labels.get("__address__", "")
    if not address:
        return "no __address__ is left after relabel_configs"
    try:
        probed = rules.address_of(labels)
    except ValueError as exc:
        return str(exc)
    own = {name: value for name, value in labels.items() if not name.startswith("__") and name != "target"}
    for name in own:
        if not LABEL_NAME_RE.match(name):
            return f"relabel_configs made {excerpt(name)}, which is not a label name"
    for name in [name for name in own if name in rules.reserved]:
        exported = f"exported_{name}"
        while exported in rules.reserved or exported in own:
            exported = f"exported_{exported}"
        own[exported] = own.pop(name)
    return Target(labels.get("target") or address, probed, tuple(sorted(own.items())))
