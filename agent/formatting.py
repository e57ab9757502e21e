"""Text for people: messages cut to length, user values quoted in bounded time, the kind of a value named, and
durations written the way Prometheus writes them."""

from __future__ import annotations

import re
import reprlib
from typing import Any

_USERINFO_RE = re.compile(r"(?<=//)[^/?#@\s]*@")  # user:password@ after a URL's scheme

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 2, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def cut(text: str, limit: int = 200) -> str:
    """A message (not a value) cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


def excerpt(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, in bounded time whatever the value: error messages
    quote user input, and input can be a 10 MB string or a structure that aliases expand a billion times."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of about {value.bit_length() * 3 // 10} digits>"
    if isinstance(value, str):
        text = repr(value[: limit + 1])
        return text if len(value) <= limit else text[:limit] + "...'"
    _REPR.maxstring = _REPR.maxother = limit
    return _REPR.repr(value)


def kind_of(value: Any) -> str:
    """How a message names the kind of a value read from YAML: "a mapping", "a list", "nothing"..."""
    if value is None:
        return "nothing"
    for types, name in ((bool, "a boolean"), (dict, "a mapping"), (list, "a list"), (str, "a string"),
                        ((int, float), "a number")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def format_duration(seconds: float) -> str:
    """A Prometheus duration string for a whole number of milliseconds, in days at most (30d, not 4w2d)."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts)


def without_credentials(text: str) -> str:
    """``text`` (a URL, or a message holding URLs) with every ``user:password@`` cut out: what logs, errors and
    pages show of a URL that may carry basic auth."""
    return _USERINFO_RE.sub("", text)
