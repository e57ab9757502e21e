"""Value parsers: each takes a raw YAML value and returns the parsed one or raises ValueError with a message for
the user (``Fields.get`` turns it into a problem with the field's line)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from agent.config.validation import label_name
from agent.formatting import excerpt, kind_of

if TYPE_CHECKING:
    import ssl

T = TypeVar("T")

MAX_DURATION = 10 * 365 * 86400.0
MAX_SIZE = 1024**4

_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def duration(value: Any) -> float:
    """Prometheus duration (``15s``, ``1h30m``, ``500ms``) in seconds."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    match = _DURATION_RE.match(text) if text else None
    if not match or not any(match.groups()):
        raise ValueError(f"{excerpt(value)} is not a duration (use Prometheus style: 30s, 5m, 1h, 7d)")
    seconds = sum(int(g) * unit for g, unit in zip(match.groups(), _DURATION_UNITS, strict=True) if g)
    if seconds <= 0:
        raise ValueError(f"{excerpt(value)} must be longer than zero")
    if seconds > MAX_DURATION:
        raise ValueError(f"{excerpt(value)} is longer than ten years")
    return seconds


def duration_or_zero(value: Any) -> float:
    """A duration where 0 (or ``0s``) means "off"."""
    if value == 0 or (isinstance(value, str) and value.strip() in ("0", "0s")):
        return 0.0
    return duration(value)


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def size(value: Any) -> int:
    """A byte size: ``1048576``, ``512KiB``, ``10MiB``, ``1GB``."""
    match = _SIZE_RE.match(str(value).strip()) if not isinstance(value, bool) else None
    if not match:
        raise ValueError(f"{excerpt(value)} is not a size (use bytes or a unit: 512KiB, 10MiB, 1GB)")
    result = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if not result <= MAX_SIZE:
        raise ValueError(f"{excerpt(value)} is larger than 1TiB")
    return int(result)


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {kind_of(value)}")
    return value


def nonempty_string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {excerpt(value)}")
    return value


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {excerpt(value)}")
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {excerpt(value)}")
    return result


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {excerpt(value)}")
    return value


def positive_integer(value: Any) -> int:
    result = integer(value)
    if result <= 0:
        raise ValueError(f"must be greater than zero, got {excerpt(value)}")
    return result


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{excerpt(value)} is not one of: {', '.join(choices)}")
        return value

    return parse


def list_of(parse: Callable[[Any], T]) -> Callable[[Any], list[T]]:
    def parse_list(value: Any) -> list[T]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {kind_of(value)}")
        result = []
        for index, item in enumerate(value):
            try:
                result.append(parse(item))
            except ValueError as exc:
                raise ValueError(f"item {index}: {exc}") from None
        return result

    return parse_list


def label_map(value: Any) -> dict[str, str]:
    """A mapping of label name to a string value (numbers and booleans are accepted and stringified)."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of label names to values, got {kind_of(value)}")
    result = {}
    for key, item in value.items():
        label_name(key)
        if isinstance(item, (dict, list)) or item is None:
            raise ValueError(f"label {excerpt(key)}: expected a value, got {kind_of(item)}")
        result[key] = str(item).lower() if isinstance(item, bool) else str(item)
    return result


def string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float)) for v in value.values()):
        raise ValueError("expected a mapping of names to string values")
    return {str(k): str(v) for k, v in value.items()}


# TLS versions as Prometheus's tls_config and exporter-toolkit's web config name them, oldest first: one list for
# the agent's server, its probes and remote_write.
TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")
tls_version = one_of(*TLS_VERSIONS)


def tls_versions_out_of_order(min_version: str | None, max_version: str | None) -> bool:
    return bool(min_version and max_version) and TLS_VERSIONS.index(min_version) > TLS_VERSIONS.index(max_version)


def ssl_version(name: str) -> ssl.TLSVersion:
    import ssl  # here, not at the top: an agent without TLS never loads OpenSSL

    return (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2,
            ssl.TLSVersion.TLSv1_3)[TLS_VERSIONS.index(name)]
