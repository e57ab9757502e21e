"""The rules a name a user declares must obey: metric names, label names, and the one set of rules for every
family a user declares (log and journal metrics, HTTP json_metrics), whatever its kind."""

from __future__ import annotations

import re
from typing import Any

from agent.formatting import excerpt

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

def metric_name(value: Any) -> str:
    if not isinstance(value, str) or not METRIC_NAME_RE.match(value):
        raise ValueError(f"{excerpt(value)} is not a valid Prometheus metric name")
    return value

def is_label_name(value: Any) -> bool:
    """A label name a user may set (the ``__`` prefix is Prometheus's own)."""
    return isinstance(value, str) and LABEL_NAME_RE.match(value) is not None and not value.startswith("__")

def label_name(value: Any) -> str:
    if not is_label_name(value):
        raise ValueError(f"{excerpt(value)} is not a valid Prometheus label name")
    return value


AGENT_PREFIXES = ("kpi_agent_", "probe_", "probes_")  # the agent's own families: no user-declared one takes them
RESERVED_LABELS = {"le": "is reserved: it tells histogram buckets apart",
                   "quantile": "is reserved: it tells summary quantiles apart"}


def family_problems(name: str, kind: str, labels: tuple[str, ...],
                    reserved: dict[str, str]) -> list[tuple[str, str]]:
    """What is wrong with a family a user declares (a log metric, an HTTP json_metric), as (key, message) with
    key ``name`` or ``labels``. ``reserved``: label names the source sets itself, each with why."""
    problems = []
    if kind == "counter" and not name.endswith("_total"):
        problems.append(("name", f"counter names end in _total: {name}_total"))
    if kind != "counter" and name.endswith("_total"):
        problems.append(("name", "_total is the suffix of counters: use type: counter, or another name"))
    if kind == "histogram" and name.endswith(("_bucket", "_sum", "_count")):
        problems.append(("name", "a histogram's name must not end in _bucket, _sum or _count"))
    if name.startswith(AGENT_PREFIXES):
        problems.append(("name", f"{name!r} clashes with the agent's own metric names "
                                 f"({', '.join(prefix + '*' for prefix in AGENT_PREFIXES)})"))
    for index, label in enumerate(labels):
        if label in labels[:index]:
            problems.append(("labels", f"label {label!r} is given twice"))
        elif label in reserved or label in RESERVED_LABELS:
            problems.append(("labels", f"{label!r} {reserved.get(label) or RESERVED_LABELS[label]}"))
    return problems
