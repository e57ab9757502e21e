"""A report's charts, as SVG to inline in the page: what each one shows of a KPI (its value against the target,
its error budget, its history, a goal's forecast, a supporting metric), drawn with ``agent.report.plot.Plot``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from agent.formatting import format_duration
from agent.kpi.units import format_value
from agent.report.grid import Period
from agent.report.judging import Line
from agent.report.model import Chart, KpiResult, format_kpi_value, target_text
from agent.report.periods import short_label
from agent.report.plot import CHAR as CHAR  # the legend's layout, read by the tests with the others
from agent.report.plot import HEIGHT, INK, LEFT, MUTED, NARROW, NEUTRAL, WIDE, Plot, number
from agent.report.plot import TOP as TOP

GOOD, BAD = "#1a7f37", "#cf222e"
PALETTE = ("#0969da", "#8250df", "#bf8700", "#1b7c83", "#cf222e", "#57606a", "#bc4c00", "#4d2d00")
MAX_SERIES = len(PALETTE)  # more lines than colours cannot be told apart


def _limits(values: Iterable[float], *always: float) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)] + list(always)
    low, high = min(finite), max(finite)
    pad = (high - low) * 0.12 or abs(high) * 0.05 or 0.05
    return low - pad, high + pad


def _nan(values: Iterable[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _group_text(group: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def _shade_missing(plot: Plot, period: Period, lines: Sequence[Line]) -> None:
    """Grey out the part of the period with no data at either end, and say so on the chart."""
    firsts = [line.first for line in lines if line.first is not None]
    lasts = [line.last for line in lines if line.last is not None]
    if not firsts:
        return
    grey = f'fill="{NEUTRAL}" fill-opacity="0.18"'
    if min(firsts) > 0:
        plot.span(period.start, period.bucket_start(min(firsts)), grey, "no data")
    if max(lasts) < period.buckets - 1:
        plot.span(period.bucket_end(max(lasts)), period.end, grey, "no data")


def _marks(plot: Plot, result: KpiResult) -> None:
    """Planned exclusions hatched; firing KPI alerts as red bars along the foot of the plot."""
    for excluded in result.exclusions:
        plot.span(excluded.start, excluded.end, plot.hatch())
    if result.exclusions:
        plot.key("hatch", MUTED, "excluded (planned)")
    for alert in result.alerts:
        plot.foot(alert.start, alert.end, BAD)
    if result.alerts:
        plot.key("block", BAD, "alert firing")


def _ratio_limits(kpi_is_ratio: bool, low: float, high: float) -> tuple[float, float]:
    if kpi_is_ratio:  # no room below 0% or above 100%, but enough to see a line at 100%
        margin = (high - low) * 0.03
        return max(low, -margin), min(high, 1.0 + margin)
    return low, high


def kpi_chart(result: KpiResult, period: Period) -> str:
    """The KPI's value in each bucket and from the period's start, against its target, with the failing
    side of the target tinted (below it when higher is better, above it otherwise). The target is a legend
    entry, never a label on its line that could meet the legend."""
    kpi = result.kpi
    lines = result.lines[:MAX_SERIES]
    drawn = [v for line in lines for v in _nan(line.per_bucket) + _nan(line.cumulative)]
    low, high = _ratio_limits(kpi.is_ratio, *_limits(drawn, kpi.target))
    plot = Plot(WIDE, period.start, period.end, low, high, f"{result.anchor}-value")
    plot.value_axis(None if kpi.is_ratio else (lambda v: format_value(v, "short")))
    plot.time_axis(period.tz)
    if kpi.higher_is_better:
        plot.band(low, kpi.target, BAD, 0.07)
    else:
        plot.band(kpi.target, high, BAD, 0.07)
    _shade_missing(plot, period, lines)
    ends = [period.bucket_end(i) for i in range(period.buckets)]
    starts = [period.bucket_start(i) for i in range(period.buckets)]
    step = format_duration(period.step)
    for index, line in enumerate(lines):
        colour = PALETTE[index]
        suffix = f" ({_group_text(line.group)})" if line.group else ""
        plot.steps(starts, ends, _nan(line.per_bucket), colour, 0.45)
        cumulative = _nan(line.cumulative)
        plot.line(ends, cumulative, colour, markers=sum(1 for v in cumulative if math.isfinite(v)) <= 3)
        plot.key("thin", colour, f"each {step}{suffix}")
        plot.key("line", colour, f"since period start{suffix}")
    plot.hline(kpi.target, INK, dashed=True)
    plot.key("dashed", INK, f"target {target_text(kpi)}")
    _marks(plot, result)
    title = "Value" + ("" if kpi.higher_is_better else " (lower is better)")
    return plot.svg(title, f"{kpi.name}: value over the period against its target", legend_inside=len(lines) > 1)


def budget_chart(result: KpiResult, period: Period) -> str:
    """Error budget left from the period's start to each bucket; below zero is overspent."""
    lines = result.lines[:MAX_SERIES]
    curves = [_nan(line.budget_curve) for line in lines]
    low, high = _limits([v for curve in curves for v in curve], 0.0)
    plot = Plot(NARROW, period.start, period.end, low, high, f"{result.anchor}-budget")
    plot.value_axis()
    plot.time_axis(period.tz)
    _shade_missing(plot, period, lines)
    ends = [period.bucket_end(i) for i in range(period.buckets)]
    for index, (line, curve) in enumerate(zip(lines, curves, strict=True)):
        runs = plot.line(ends, curve, PALETTE[index], width=1.6)
        plot.below_zero(runs, BAD)
        if len(lines) > 1:
            plot.key("line", PALETTE[index], _group_text(line.group))
    plot.hline(0.0, BAD, width=1.0)
    _marks(plot, result)
    return plot.svg("Error budget remaining", f"{result.kpi.name}: error budget remaining over the period",
                    legend_inside=True)


def supporting_chart(chart: Chart, period: Period, prefix: str) -> str:
    """A supporting metric with its unit; at most MAX_SERIES lines, the rest counted in the title."""
    title = chart.metric.title
    values = [v for _, series in chart.series[:MAX_SERIES] for v in _nan(series)]
    finite = [v for v in values if math.isfinite(v)]
    if chart.error or not finite:
        plot = Plot(NARROW, period.start, period.end, 0.0, 1.0, prefix)
        message = f"query failed: {chart.error}" if chart.error else "no data in the period"
        plot.parts.append(f'<text x="{NARROW / 2:g}" y="{HEIGHT / 2:g}" font-size="11" text-anchor="middle" '
                          f'fill="{BAD if chart.error else MUTED}">{escape(message[:70])}</text>')
        return plot.svg(title, chart.metric.title)
    low, high = (0.0, max(finite) * 1.1 or 1.0) if min(finite) >= 0 else _limits(finite)
    plot = Plot(NARROW, period.start, period.end, low, high, prefix)
    plot.value_axis(lambda v: format_value(v, chart.metric.unit))
    plot.time_axis(period.tz)
    labels = [dict(labels) for labels, _ in chart.series]
    varying = [k for k in sorted({k for labels_ in labels for k in labels_})
               if len({labels_.get(k) for labels_ in labels}) > 1]
    for index, (series_labels, series) in enumerate(chart.series[:MAX_SERIES]):
        plot.line(chart.times, _nan(series), PALETTE[index], width=1.2)
        if varying:
            plot.key("line", PALETTE[index], ", ".join(f"{k}={series_labels.get(k, '')}" for k in varying))
    hidden = len(chart.series) - MAX_SERIES
    if hidden > 0:
        title += f" (first {MAX_SERIES} of {len(chart.series)} series)"
    return plot.svg(title, chart.metric.title, legend_inside=True)


def history_chart(result: KpiResult) -> str:
    """The value in each of the last N periods as bars, green where the target was met, red where missed,
    against the dashed target line."""
    kpi = result.kpi
    lines = result.lines[:MAX_SERIES]
    spans = lines[0].history if lines else ()
    values = [j.value for line in lines for j in line.history if j.value is not None]
    low, high = _limits(values, kpi.target)
    low, high = (max(low, 0.0), min(high, 1.0)) if kpi.is_ratio else (min(low, 0.0), high)

    def label(value: float) -> str:
        return format_kpi_value(kpi, value) if kpi.is_ratio else format_value(value, "short")

    plot = Plot(NARROW, 0.0, float(len(spans)), low, high, f"{result.anchor}-history")
    plot.value_axis(label)
    slot = (plot.right - LEFT) / max(len(spans), 1)
    bar = slot * 0.8 / max(len(lines), 1)
    for index, line in enumerate(lines):
        for position, judged in enumerate(line.history):
            x = LEFT + slot * position + slot * 0.1 + bar * index
            if judged.value is None:
                continue
            top = plot.y(min(judged.value, high))
            verdict = "met" if judged.met else "missed"
            plot.parts.append(f'<rect x="{number(x)}" y="{number(top)}" width="{number(bar * 0.92)}" '
                              f'height="{number(max(plot.bottom - top, 0.5))}" fill="{GOOD if judged.met else BAD}">'
                              f"<title>{escape(judged.span.label)}: {escape(label(judged.value))} ({verdict})"
                              "</title></rect>")
    plot.hline(kpi.target, INK, dashed=True)
    for position, judged in enumerate(spans):
        middle, base = number(LEFT + slot * (position + 0.5)), number(plot.bottom + 10)
        plot.parts.append(f'<text x="{middle}" y="{base}" font-size="9" text-anchor="end" fill="{MUTED}" '
                          f'transform="rotate(-40 {middle} {base})">{escape(short_label(judged.span.label))}</text>')
    met = sum(1 for j in spans if j.met)
    title = f"Met in {met} of the last {len(spans)} periods" if len(lines) == 1 else "Each period"
    return plot.svg(title, f"{kpi.name}: value in each of the last {len(spans)} periods")


def goal_chart(result: KpiResult, outlook: Any, tz: ZoneInfo, index: int) -> str:
    """A goal's daily values, the fitted trend drawn on to the due date, the forecast's interval there, and the
    target."""
    kpi, goal = result.kpi, outlook.goal
    days = outlook.days
    now = days[-1][0]
    intercept, slope = outlook.trend
    values = [v for _, v in days] + [goal.target] + [v for v in (outlook.low, outlook.high) if v is not None]
    low, high = _ratio_limits(kpi.is_ratio, *_limits(values))
    plot = Plot(NARROW, days[0][0] - 86400, goal.due + 86400 * 3, low, high, f"{result.anchor}-goal{index}")
    plot.value_axis(None if kpi.is_ratio else (lambda v: format_value(v, "short")))
    plot.time_axis(tz)
    plot.hline(goal.target, INK, dashed=True)
    plot.line([t for t, _ in days], [v for _, v in days], PALETTE[0], width=0.9, opacity=0.5)
    if outlook.forecast is not None:
        first = days[0][0]
        trend = [intercept + slope * (t - now) / 86400 for t in (first, goal.due)]
        plot.line([first, goal.due], trend, GOOD if outlook.verdict == "on track" else BAD
                  if outlook.verdict == "off track" else "#bf8700", width=1.6)
        x = number(plot.x(goal.due))
        plot.parts.append(f'<line x1="{x}" x2="{x}" y1="{number(plot.y(outlook.high))}" '
                          f'y2="{number(plot.y(outlook.low))}" stroke="{INK}" stroke-width="3"/>')
        plot.key("line", GOOD if outlook.verdict == "on track" else "#bf8700", "trend")
    plot.key("thin", PALETTE[0], "each day")
    plot.key("dashed", INK, f"goal {format_kpi_value(kpi, goal.target)}")
    return plot.svg(f"Goal: {outlook.verdict}", f"{kpi.name}: the goal's forecast", legend_inside=True,
                    legend_left=True)
