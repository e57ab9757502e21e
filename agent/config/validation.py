"""The rules a name a user declares must obey: metric names and label names."""

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
