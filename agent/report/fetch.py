"""The two questions a report asks Prometheus per KPI (see ``agent.report.collect``): the queries, one term per
span told apart by a ``kpi_part`` label, and the answers summed per group of the KPI's labels."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agent.formatting import format_duration
from agent.kpi import conventions as names
from agent.kpi.conventions import DENOMINATOR, NUMERATOR, side_rate
from agent.kpi.model import Kpi
from agent.kpi.prometheus_api import PrometheusClient, series_labels
from agent.kpi.windows import BASE_RATE_WINDOW
from agent.report.grid import (
    MAX_POINTS,
    Period,
)

NUMERATOR_5M, DENOMINATOR_5M = side_rate(NUMERATOR, BASE_RATE_WINDOW), side_rate(DENOMINATOR, BASE_RATE_WINDOW)


GroupKey = tuple[tuple[str, str], ...]


def group_key(labels: dict[str, str]) -> GroupKey:
    return tuple(sorted(labels.items()))


def kpi_groups(kpi: Kpi, label_sets: list[dict[str, str]]) -> list[dict[str, str]]:
    """What tells a KPI's series apart: its group_by labels, and any label whose value differs."""
    varying = {k for labels in label_sets for k in labels
               if len({other.get(k) for other in label_sets}) > 1}
    keep = varying | set(kpi.group_by)
    return [{k: v for k, v in sorted(labels.items()) if k in keep} for labels in label_sets]


PART = "kpi_part"  # the label that tells the terms of one query apart


def _part(expr: str, name: str) -> str:
    return f'label_replace({expr}, "{PART}", "{name}", "", "")'


def sides(kpi: Kpi, selector: str) -> dict[str, tuple[str, str]]:
    """The two sums a KPI's values are made of: (function over time, recorded series) for the top and bottom
    of its fraction."""
    if kpi.is_ratio:
        return {"top": ("sum_over_time", f"{NUMERATOR_5M}{selector}"),
                "bottom": ("sum_over_time", f"{DENOMINATOR_5M}{selector}")}
    return {"top": ("sum_over_time", f"{names.VALUE}{selector}"),
            "bottom": ("count_over_time", f"{names.VALUE}{selector}")}


@dataclass
class Pieces:
    """The spans one totals query sums over: each named, each (start, end]."""

    spans: dict[str, tuple[float, float]] = field(default_factory=dict)

    def add(self, name: str, start: float, end: float) -> None:
        if end > start:
            self.spans[name] = (start, end)


class Fetcher:
    """Asks Prometheus, counting the requests (the benchmark states how many a report makes)."""

    def __init__(self, client: PrometheusClient, left_open: bool, evaluation_interval: float):
        self.client = client
        self.left_open = left_open  # Prometheus 3 ranges exclude their start; 2 includes both ends
        self.evaluation_interval = evaluation_interval
        self.requests = 0

    def range_of(self, seconds: float) -> str:
        """A range holding the samples of (end - seconds, end] exactly: one millisecond short on Prometheus 2."""
        return format_duration(seconds if self.left_open else seconds - 0.001)

    async def query(self, expr: str, at: float) -> list[dict]:
        self.requests += 1
        return await self.client.query(expr, at)

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """A range query split into requests of at most MAX_POINTS points (a year on a 30-minute grid)."""
        merged: dict[GroupKey, dict] = {}
        first = start
        while first <= end + 1e-9:
            last = min(end, first + step * (MAX_POINTS - 1))
            self.requests += 1
            for series in await self.client.query_range(expr, first, last, step):
                key = group_key(series.get("metric", {}))
                merged.setdefault(key, {"metric": series.get("metric", {}), "values": []})["values"] += series["values"]
            first = last + step
        return list(merged.values())

    async def totals(self, kpi: Kpi, selector: str, pieces: Pieces, at: float) -> dict[GroupKey, dict[str, float]]:
        """One instant query: each side summed over each piece. Returns {group: {"<side>:<piece>": sum}}."""
        terms = []
        for side, (function, series) in sides(kpi, selector).items():
            for name, (start, end) in pieces.spans.items():
                if end - start <= (0 if self.left_open else 0.001):
                    continue
                terms.append(_part(f"{function}({series}[{self.range_of(end - start)}] @ {end:.3f})",
                                   f"{side}:{name}"))
        if not terms:
            return {}
        found: dict[GroupKey, dict[str, float]] = {}
        for item in await self.query(" or ".join(terms), at):
            labels = series_labels(item)
            part = labels.pop(PART, "")
            value = float(item["value"][1])
            if math.isfinite(value):
                found.setdefault(group_key(labels), {})[part] = value
        return found

    async def buckets(self, kpi: Kpi, selector: str, period: Period) -> dict[GroupKey, dict[str, list]]:
        """One range query on the chart's grid: each side's sums in each fine step."""
        step = period.fine_step
        terms = [_part(f"{function}({series}[{self.range_of(step)}])", side)
                 for side, (function, series) in sides(kpi, selector).items()]
        if period.regular_end - period.start < step:
            return {}
        result = await self.query_range(" or ".join(terms), period.start + step, period.regular_end, step)
        found: dict[GroupKey, dict[str, list]] = {}
        for series in result:
            labels = series_labels(series)
            part = labels.pop(PART, "")
            found.setdefault(group_key(labels), {})[part] = [(float(t), float(v)) for t, v in series["values"]]
        return found


async def daily(fetch: Fetcher, kpi: Kpi, selector: str, end: float, days: int) -> dict[GroupKey, list]:
    """Each side's sum in each of the ``days`` days (24 hours) before ``end``: one range query."""
    terms = [_part(f"{function}({series}[{fetch.range_of(86400)}])", side)
             for side, (function, series) in sides(kpi, selector).items()]
    result = await fetch.query_range(" or ".join(terms), end - 86400 * (days - 1), end, 86400)
    found: dict[GroupKey, dict[str, dict[float, float]]] = {}
    for series in result:
        labels = series_labels(series)
        part = labels.pop(PART, "")
        found.setdefault(group_key(labels), {})[part] = {round(float(t), 3): float(v) for t, v in series["values"]}
    rows: dict[GroupKey, list] = {}
    for key, parts in found.items():
        tops, bottoms = parts.get("top", {}), parts.get("bottom", {})
        rows[key] = [(t, (tops.get(t, 0.0) / bottom), bottom) for t, bottom in sorted(bottoms.items()) if bottom > 0]
    return rows
