"""Synthetic series for generated promtool tests: label values that satisfy a KPI's selectors, and
input_series (promtool's ``a+bxN`` notation) with a chosen share of failed events over time."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from agent.kpi.conventions import labels_selector
from agent.kpi.model import Kpi, Matcher

EVENTS_PER_MINUTE = 6000
STEP = 60.0  # seconds between input samples: the 5m base rate needs several per 5m


def _candidates(matchers: list[Matcher]) -> list[str]:
    """Label values worth trying against these matchers: literals, and simple instances of the regexes."""
    values = ["200", "500", "ok", "x"]
    for matcher in matchers:
        values.append(matcher.value)
        if matcher.op in ("=~", "!~"):
            for alternative in matcher.value.split("|"):
                instance = re.sub(r"\\d|\.", "0", alternative.strip("^$()"))
                values.append(re.sub(r"[+*?]", "", instance))
                values.append(alternative.replace("\\", ""))
                values.append(alternative)
    return list(dict.fromkeys(values))


def satisfy(required: list[Matcher], violated: list[Matcher]) -> dict[str, str] | None:
    """Label values matching every ``required`` matcher and failing at least one of ``violated`` (if any)."""
    labels = sorted({m.label for m in required + violated})
    options = {}
    for label in labels:
        mine = [m for m in required + violated if m.label == label]
        options[label] = _candidates(mine)
    for combo in itertools.product(*(options[label] for label in labels)):
        chosen = dict(zip(labels, combo, strict=True))
        if chosen.get("__name__"):
            continue
        if not all(m.matches(chosen[m.label]) for m in required):
            continue
        if violated and all(m.matches(chosen[m.label]) for m in violated):
            continue
        return {k: v for k, v in chosen.items() if v != "" or any(m.label == k for m in required)}
    return None


@dataclass
class Series:
    good: list[str] = field(default_factory=list)  # counters incremented by good events
    bad: list[str] = field(default_factory=list)  # counters incremented by failed events
    total: list[str] = field(default_factory=list)  # counters incremented by all events
    gauge: list[str] = field(default_factory=list)  # 0/1 gauges: their mean is the good share


def _series_text(metric: str, labels: dict[str, str]) -> str:
    return metric + (labels_selector(dict(sorted(labels.items()))) if labels else "")


def synthesize(kpi: Kpi) -> Series | None:
    """Series that the KPI's selectors count, or None when its sides are raw queries or unsatisfiable."""
    group = {label: "test" for label in kpi.group_by}
    if kpi.gauge is not None:
        labels = satisfy(list(kpi.gauge.matchers), [])
        return None if labels is None else Series(gauge=[_series_text(kpi.gauge.metric, {**group, **labels})])
    counted = kpi.bad or kpi.numerator
    if counted is None or counted.selector is None or kpi.denominator is None or kpi.denominator.selector is None:
        return None
    numerator, denominator = counted.selector, kpi.denominator.selector
    counts_bad = kpi.bad is not None or not kpi.higher_is_better
    num_m, den_m = list(numerator.matchers), list(denominator.matchers)
    if numerator.metric == denominator.metric:
        counted_labels = satisfy(den_m + num_m, [])
        other_labels = satisfy(den_m, num_m)
        if counted_labels is None or other_labels is None:
            return None
        counted_series = [_series_text(numerator.metric, {**group, **counted_labels})]
        other_series = [_series_text(numerator.metric, {**group, **other_labels})]
        return Series(bad=counted_series, good=other_series) if counts_bad else \
            Series(good=counted_series, bad=other_series)
    num_labels, den_labels = satisfy(num_m, []), satisfy(den_m, [])
    if num_labels is None or den_labels is None:
        return None
    counted_series = [_series_text(numerator.metric, {**group, **num_labels})]
    total = [_series_text(denominator.metric, {**group, **den_labels})]
    return Series(bad=counted_series, total=total) if counts_bad else Series(good=counted_series, total=total)


def _exact(value: float) -> str:
    """A value in promtool's notation without losing digits (``:g`` would round 25925993)."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def written_share(series: Series, share: float) -> float:
    """The failed share input_series really writes for ``share``: whole failed events per step for counters,
    a gauge value of 9 decimals."""
    if series.gauge:
        return 1 - round(1 - share, 9)
    per_step = EVENTS_PER_MINUTE * STEP / 60
    return round(per_step * share) / per_step


def input_series(series: Series, segments: list[tuple[float, int]], rate: float = EVENTS_PER_MINUTE,
                 step: float = STEP, omit: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """input_series for consecutive segments of (failed share, steps) at ``rate`` events per minute: counters
    continue where the previous segment left off (a segment of n steps holds the events of its n steps);
    gauges average the good share. ``omit`` lists kinds of series (good, bad, total, gauge) left out
    entirely."""
    per_step = rate * step / 60
    result = []
    for kind, names in (("good", series.good), ("bad", series.bad), ("total", series.total),
                        ("gauge", series.gauge)):
        if kind in omit:
            continue
        for name in names:
            parts = ["1" if kind == "gauge" else "0"]
            current = 0.0
            for share, steps in segments:
                if kind == "gauge":
                    parts.append(f"{_exact(round(1 - share, 9))}x{steps - 1}")
                    continue
                failed = round(per_step * share)
                increment = {"good": per_step - failed, "bad": failed, "total": per_step}[kind]
                parts.append(f"{_exact(current + increment)}+{_exact(increment)}x{steps - 1}")
                current += increment * steps
            result.append({"series": name, "values": " ".join(parts)})
    return result


def low_traffic_input(series: Series, quiet: int, failures: int, spacing: int = 1) -> list[dict[str, str]]:
    """Samples a minute apart: one good event a minute for 5m, ``quiet`` minutes without traffic, then one
    failed event every ``spacing`` minutes, ``failures`` times."""
    minutes = 6 + quiet + failures * spacing
    failed = [0] * (6 + quiet) + [(i + 1) // spacing for i in range(failures * spacing)]
    counts = {"good": [min(i, 5) for i in range(minutes)], "bad": failed}
    counts["total"] = [g + b for g, b in zip(counts["good"], counts["bad"], strict=True)]
    counts["gauge"] = [1] * (6 + quiet) + [0] * (failures * spacing)
    result = []
    for kind, names in (("good", series.good), ("bad", series.bad), ("total", series.total),
                        ("gauge", series.gauge)):
        for name in names:
            result.append({"series": name, "values": " ".join(str(v) for v in counts[kind])})
    return result
