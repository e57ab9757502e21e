"""Value parsers of KPI specs: each takes a YAML value and returns it parsed, or raises ValueError with the
message the user reads after file:line: field:."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from agent.config import values
from agent.kpi.windows import MIN_WINDOW

KPI_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
ALERT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SERVICE_NAME_RE = re.compile(r"^[a-zA-Z0-9_.-]+$")


def target(value: Any) -> float:
    """``99.9%`` or ``0.999`` for ratios; any number for value KPIs (range checked by the caller)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:  # Decimal, so "99.9%" is exactly the float 0.999 and not 0.9990000000000001
            result = float(Decimal(value.strip()[:-1]) / 100)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a percentage") from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a target: use a number (0.999) or a percentage (\"99.9%\")")
    else:
        result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{value!r} is not a finite number")
    return result


def query_template(value: Any) -> str:
    text = values.nonempty_string(value)
    if "{{window}}" not in text:
        raise ValueError("a raw query must contain {{window}} where the range goes, e.g. rate(x[{{window}}])")
    return text


def alert_name(value: Any) -> str:
    if not isinstance(value, str) or not ALERT_NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid alert name")
    return value


def bucket_bound(value: Any) -> float:
    bound = values.number(value)
    if not 0 < bound < math.inf:
        raise ValueError(f"a bucket bound must be a positive number, got {value!r}")
    return bound


def burn_factor(value: Any) -> float:
    factor = values.number(value)
    if factor <= 0:
        raise ValueError(f"a burn factor must be greater than zero, got {value!r}")
    return factor


def alert_window(value: Any) -> float:
    seconds = values.duration(value)
    if seconds < MIN_WINDOW or seconds % 60:
        raise ValueError(f"{value!r}: alert windows are whole minutes, at least 1m")
    return seconds
