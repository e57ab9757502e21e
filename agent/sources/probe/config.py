"""Reading a prober source's config: the keys every kind shares (what to probe, how often, retries, labels,
series to omit, discovery), read here once, and the kind's own module keys, read by the kind (into
``agent.sources.probe.model.ProbeConfig``)."""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Hashable
from typing import Any

from agent.config import values
from agent.config.fields import Fields
from agent.config.model import SourceDefaults
from agent.discovery.config import parse_discovery
from agent.formatting import excerpt, format_duration
from agent.series.family import shown
from agent.sources.base import IDENTITY_LABEL as SOURCE_LABEL
from agent.sources.probe.families import NEVER_OMITTED
from agent.sources.probe.model import TARGET_LABEL, ModuleT, ProbeConfig, ProberPlugin, ProbeSettings

MAX_RETRIES = 10
_NONE: frozenset[str] = frozenset()  # what most sources omit: one object (each frozenset() is a new 216 bytes)


def parse_probe_source(kind: ProberPlugin[Any, Any], fields: Fields,
                       defaults: SourceDefaults) -> ProbeConfig[Any] | None:
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
    if module is not None:
        module = shared_module(module)
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
    return ProbeConfig(name, target, interval, timeout, module, retries, labels, frozenset(omit) if omit else _NONE,
                       discovery,
                       (fields.line_of("name"), fields.field("name")))


# Modules in use, by value: a source whose module equals one parsed before (by every field, lines included) gets
# that object, so ten thousand sources configured alike hold one module and share its prober (probe.resources);
# a module leaves once no config holds it.
_MODULES: weakref.WeakValueDictionary[Hashable, Any] = weakref.WeakValueDictionary()
_MODULES_LOCK = threading.Lock()  # configs are parsed in worker threads
_FIELDS: dict[type, tuple[str, ...]] = {}


def shared_module(module: ModuleT) -> ModuleT:
    """The module equal to ``module`` that a config parsed before holds, or ``module`` (now the one others get)."""
    try:
        key = _frozen(module)
        hash(key)
    except TypeError:  # a value the key cannot hold: not shared
        return module
    with _MODULES_LOCK:
        found = _MODULES.get(key)
        if found is None:
            _MODULES[key] = found = module
    return found  # equal to module, so of its type


def _frozen(value: Any) -> Hashable:
    """A hashable value equal for equal modules (dataclasses of plain values), with types: 1, 1.0 and True
    differ."""
    kind = type(value)
    if kind is str or value is None:
        return value
    if dataclasses.is_dataclass(value):
        names = _FIELDS.get(kind)
        if names is None:
            names = _FIELDS[kind] = tuple(field.name for field in dataclasses.fields(value))
        return (kind, *(_frozen(getattr(value, name)) for name in names))
    if kind is dict:
        return (dict, *((key, _frozen(item)) for key, item in value.items()))
    if kind in (tuple, list):
        return (kind, *(_frozen(item) for item in value))
    if kind in (frozenset, set):
        return (kind, frozenset(_frozen(item) for item in value))
    if kind in (int, float, bool, bytes):
        return (kind, value)
    raise TypeError(f"{kind.__name__} is not a module value")


def _retries(value: Any) -> int:
    count = values.integer(value)
    if not 0 <= count <= MAX_RETRIES:
        raise ValueError(f"{excerpt(value)} is not between 0 and {MAX_RETRIES}")
    return count


def _omitted(fields: Fields, kind: ProberPlugin[Any, Any], module: Any, names: list[str]) -> list[str]:
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
