"""The config of a prober source: the keys every kind shares (what to probe, how often, retries, labels,
series to omit, discovery), read here once, and the kind's own module keys, read by the kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from agent.config import values
from agent.config.fields import Fields
from agent.config.model import SourceDefaults
from agent.discovery.config import DiscoveryConfig, parse_discovery
from agent.formatting import excerpt, format_duration
from agent.series.family import shown
from agent.sources.base import IDENTITY_LABEL as SOURCE_LABEL
from agent.sources.probe.families import NEVER_OMITTED

if TYPE_CHECKING:
    from agent.sources.probe.kind import ProberKind

ModuleT = TypeVar("ModuleT")

TARGET_LABEL = "target"  # names a target on its series: the source's name, or a discovered target's address
MAX_RETRIES = 10


@dataclass(frozen=True)
class ProbeSettings:
    """The common keys of a source, as its kind's ``parse_module`` may need them (to refuse a label clash)."""

    name: str | None
    interval: float
    timeout: float
    labels: dict[str, str]


@dataclass(frozen=True)
class ProbeConfig(Generic[ModuleT]):
    name: str
    target: str | None  # one target (http: its url); or, with discovery, none and the discovered targets
    interval: float
    timeout: float  # per attempt
    module: ModuleT  # the kind's own settings (blackbox's module), shared by every target of the source
    retries: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    omit_series: frozenset[str] = frozenset()  # family names this source does not export
    discovery: DiscoveryConfig | None = None
    where: tuple[int | None, str] = field(default=(None, ""), compare=False)  # (line, field path) for errors


def parse_probe_source(kind: ProberKind[Any, Any], fields: Fields, defaults: SourceDefaults) -> ProbeConfig[Any] | None:
    name = fields.get("name", values.nonempty_string)
    discovery = parse_discovery(fields)
    key = kind.target_key
    if discovery is not None and fields.raw(key) is not None:
        fields.error(key, f"a source probes its {key} or the targets it discovers, not both")
    interval = fields.get("interval", values.duration, defaults.interval)
    retries = fields.get("retries", _retries, 0)
    timeout = fields.get("timeout", values.duration, min(defaults.timeout, interval / (retries + 1)))
    if timeout * (retries + 1) > interval and not {"interval", "timeout", "retries"} & fields.invalid:
        if retries:
            fields.error("timeout", f"{retries + 1} attempts of {format_duration(timeout)} do not fit in the "
                                    f"interval {format_duration(interval)}")
        else:
            fields.error("timeout", f"{format_duration(timeout)} is longer than the interval "
                                    f"{format_duration(interval)}")
    labels = fields.get("labels", values.label_map, {})
    module = kind.parse_module(fields, ProbeSettings(name, interval, timeout, labels))
    target = None
    if discovery is None:  # read after the module: a default port may depend on it (dns_over_tls: 853)
        parse = values.nonempty_string if module is None else lambda value: kind.parse_target(value, module)
        target = fields.get(key, parse)
    reserved = kind.reserved_labels(module) if module is not None else frozenset()
    for label in sorted(set(labels) & reserved):
        reason = {TARGET_LABEL: ": the agent sets it to the source name, or to a discovered target's address",
                  SOURCE_LABEL: ": the agent sets it to the source name on discovered targets"}.get(label, "")
        fields.error("labels", f"{label!r} is a label of the probe metrics{reason}")
    omit = fields.get("omit_series", values.list_of(values.nonempty_string), [])
    if module is not None and omit:
        omit = _omitted(fields, kind, module, omit)
    fields.finish()
    if name is None or module is None or (target is None and discovery is None):
        return None
    return ProbeConfig(name, target, interval, timeout, module, retries, labels, frozenset(omit), discovery,
                       (fields.line_of("name"), fields.field("name")))


def _retries(value: Any) -> int:
    count = values.integer(value)
    if not 0 <= count <= MAX_RETRIES:
        raise ValueError(f"{excerpt(value)} is not between 0 and {MAX_RETRIES}")
    return count


def _omitted(fields: Fields, kind: ProberKind[Any, Any], module: Any, names: list[str]) -> list[str]:
    """The family names of ``omit_series`` (a counter may be named with its _total); each name that is not a
    family the source may omit is reported."""
    known = {spec.name: spec for spec in kind.all_families(module)}
    omittable = sorted(shown(spec) for name, spec in known.items() if name not in NEVER_OMITTED)
    families = []
    for text in names:
        name = text.removesuffix("_total") if text.removesuffix("_total") in known else text
        if name in NEVER_OMITTED:
            fields.error("omit_series", f"{excerpt(text)} is what every probe reports: it cannot be omitted")
        elif name not in known:
            fields.error("omit_series", f"{excerpt(text)} is not a family of {kind.name} sources; one of: "
                                        f"{', '.join(omittable)}")
        else:
            families.append(name)
    return families
