"""Units a spec may give its supporting metrics: how Grafana shows each, and how reports write numbers.

One vocabulary of plain names (``seconds``, not Grafana's ``s``), so a spec reads the same whether it feeds a
dashboard or a report. Pure and dependency-free: the running agent may import it.
"""

from __future__ import annotations

import math

# spec name -> Grafana unit id (grafana/packages/grafana-data/src/valueFormats/categories.ts)
GRAFANA_UNITS: dict[str, str] = {
    "short": "short",  # a plain number, SI-scaled: 1.2k
    "seconds": "s",
    "bytes": "bytes",  # IEC: KiB, MiB
    "ratio": "percentunit",  # 0 to 1, shown as a percentage
    "percent": "percent",  # 0 to 100
    "per_second": "cps",
    "bytes_per_second": "binBps",
}
UNITS = tuple(GRAFANA_UNITS)
DEFAULT_UNIT = "short"

_SECONDS = ((86400.0, " d"), (3600.0, " h"), (60.0, " min"), (1.0, " s"), (1e-3, " ms"), (1e-6, " µs"),
            (1e-9, " ns"))
_BYTES = ((1024.0**4, " TiB"), (1024.0**3, " GiB"), (1024.0**2, " MiB"), (1024.0, " KiB"), (1.0, " B"))
_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))


def significant(value: float, digits: int = 3) -> str:
    """``digits`` significant digits without an exponent or trailing zeros: 0.0123, 12.3, 1230."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _scaled(value: float, steps: tuple[tuple[float, str], ...], digits: int) -> str:
    """In the largest step the value reaches (the smallest below all of them; 0 in the base unit)."""
    if value == 0:
        return "0" + next(suffix for size, suffix in steps if size == 1.0)
    size, suffix = next(((size, suffix) for size, suffix in steps if abs(value) >= size), steps[-1])
    return significant(value / size, digits) + suffix


def format_value(value: float, unit: str, digits: int = 3) -> str:
    """A number as a person reads it in ``unit``: 12.3 ms, 1.5 MiB, 99.5%, 12.3/s, 1.2k."""
    if unit == "seconds":
        return _scaled(value, _SECONDS, digits)
    if unit == "bytes":
        return _scaled(value, _BYTES, digits)
    if unit == "bytes_per_second":
        return _scaled(value, _BYTES, digits) + "/s"
    if unit == "ratio":
        return significant(value * 100, digits) + "%"
    if unit == "percent":
        return significant(value, digits) + "%"
    if unit == "per_second":
        return _scaled(value, _SI, digits) + "/s"
    return _scaled(value, _SI, digits)
