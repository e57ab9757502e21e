"""A report's charts, as SVG to inline in the page.

The SVG is written here, element by element; matplotlib decides where the ticks go and how they read
(``AutoDateLocator`` and ``ConciseDateFormatter`` for time in the report's zone, ``MaxNLocator`` for values),
which is the part of plotting that is hard to get right. Drawing whole figures with matplotlib cost about 0.1 s
a chart (laying out and measuring every text), so a review of 50 KPIs spent most of its time there; written
directly, a chart costs about a millisecond. Text stays text (the page's fonts render it, it can be searched
and selected); the same data gives the same bytes; a prefix per chart keeps element ids unique on the page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from matplotlib import dates, ticker

from agent.formatting import format_duration
from agent.kpi.units import format_value
from agent.report.grid import Period
from agent.report.judging import Line
from agent.report.model import Chart, KpiResult, format_kpi_value, target_text
from agent.report.periods import short_label

GOOD, BAD, NEUTRAL, INK, MUTED, GRID = "#1a7f37", "#cf222e", "#9ca3af", "#1f2328", "#59636e", "#d8dee4"
PALETTE = ("#0969da", "#8250df", "#bf8700", "#1b7c83", "#cf222e", "#57606a", "#bc4c00", "#4d2d00")
MAX_SERIES = len(PALETTE)  # more lines than colours cannot be told apart
WIDE, NARROW, HEIGHT = 720.0, 360.0, 250.0  # the viewBox; the page scales charts to its columns
LEFT, RIGHT, TOP, BOTTOM = 68.0, 12.0, 42.0, 40.0  # room for "99.960%", a title and legend, two lines of dates
CHAR = 0.6  # DejaVu Sans: a character is about 0.6 of the font size wide, enough to lay out a legend


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _limits(values: Iterable[float], *always: float) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)] + list(always)
    low, high = min(finite), max(finite)
    pad = (high - low) * 0.12 or abs(high) * 0.05 or 0.05
    return low - pad, high + pad


def _nan(values: Iterable[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _group_text(group: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def _percent_label(step: float) -> Callable[[float], str]:
    """Tick labels of a ratio axis with as many decimals as the tick spacing needs: 99.90%, 99.95%."""
    decimals = max(0, -math.floor(math.log10(step * 100))) if step > 0 else 0
    return lambda value: f"{value * 100:.{decimals}f}%"


class Plot:
    """One chart: a time (or category) axis, a value axis, and elements added in drawing order."""

    def __init__(self, width: float, start: float, end: float, low: float, high: float, prefix: str):
        self.width, self.start, self.end, self.low, self.high = width, start, end, low, high
        self.prefix = prefix
        self.right = width - RIGHT
        self.bottom = HEIGHT - BOTTOM
        self.parts: list[str] = []
        self.defs: list[str] = []
        self.legend: list[tuple[str, str]] = []  # (swatch svg at 0,0, text)

    def x(self, seconds: float) -> float:
        return LEFT + (seconds - self.start) / ((self.end - self.start) or 1) * (self.right - LEFT)

    def y(self, value: float) -> float:
        return self.bottom - (value - self.low) / ((self.high - self.low) or 1) * (self.bottom - TOP)

    def clip(self) -> str:
        return f'clip-path="url(#{self.prefix}-plot)"'

    def value_axis(self, label: Callable[[float], str] | None = None) -> None:
        locator = ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10])
        ticks = [t for t in locator.tick_values(self.low, self.high) if self.low <= t <= self.high]
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 0.0
        text = label or _percent_label(step)
        for tick in ticks:
            y = _number(self.y(tick))
            self.parts.append(f'<line x1="{LEFT}" x2="{_number(self.right)}" y1="{y}" y2="{y}" stroke="{GRID}" '
                              'stroke-width="0.8"/>')
            self.parts.append(f'<text x="{LEFT - 5}" y="{y}" dy="3.5" font-size="10" text-anchor="end" '
                              f'fill="{MUTED}">{escape(text(tick))}</text>')

    def time_axis(self, tz: ZoneInfo) -> None:
        locator = dates.AutoDateLocator(tz=tz, minticks=3, maxticks=8)
        formatter = dates.ConciseDateFormatter(locator, tz=tz)
        first, last = (datetime.fromtimestamp(t, tz) for t in (self.start, self.end))
        ticks = [t for t in locator.tick_values(first, last)
                 if self.start - 1 <= dates.num2date(t).timestamp() <= self.end + 1]
        labels = formatter.format_ticks(ticks)
        for tick, label in zip(ticks, labels, strict=True):
            x = _number(self.x(dates.num2date(tick).timestamp()))
            self.parts.append(f'<line x1="{x}" x2="{x}" y1="{TOP}" y2="{_number(self.bottom)}" stroke="{GRID}" '
                              'stroke-width="0.8"/>')
            self.parts.append(f'<text x="{x}" y="{_number(self.bottom + 14)}" font-size="10" text-anchor="middle" '
                              f'fill="{MUTED}">{escape(label)}</text>')
        offset = formatter.get_offset()
        if offset:
            self.parts.append(f'<text x="{_number(self.right)}" y="{_number(self.bottom + 28)}" font-size="10" '
                              f'text-anchor="end" fill="{MUTED}">{escape(offset)}</text>')

    def band(self, low: float, high: float, colour: str, opacity: float) -> None:
        """A horizontal band of values (the failing side of a target)."""
        top, bottom = self.y(min(max(high, self.low), self.high)), self.y(min(max(low, self.low), self.high))
        self.parts.append(f'<rect x="{LEFT}" y="{_number(top)}" width="{_number(self.right - LEFT)}" '
                          f'height="{_number(bottom - top)}" fill="{colour}" fill-opacity="{opacity}"/>')

    def span(self, start: float, end: float, fill: str, text: str = "") -> None:
        """A stretch of time, full height: missing data (grey) or a planned exclusion (hatched)."""
        left, right = self.x(max(start, self.start)), self.x(min(end, self.end))
        if right <= left:
            return
        self.parts.append(f'<rect x="{_number(left)}" y="{TOP}" width="{_number(right - left)}" '
                          f'height="{_number(self.bottom - TOP)}" {fill}/>')
        if text and right - left > 30:
            self.parts.append(f'<text x="{_number((left + right) / 2)}" y="{_number((TOP + self.bottom) / 2)}" '
                              f'font-size="10" text-anchor="middle" fill="{MUTED}">{escape(text)}</text>')

    def hatch(self) -> str:
        pattern = f"{self.prefix}-hatch"
        if not any(pattern in d for d in self.defs):
            self.defs.append(f'<pattern id="{pattern}" width="6" height="6" patternUnits="userSpaceOnUse" '
                             f'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="{MUTED}" '
                             'stroke-width="1.2" stroke-opacity="0.6"/></pattern>')
        return f'fill="url(#{pattern})"'

    def foot(self, start: float, end: float, colour: str) -> None:
        """A bar along the foot of the plot: when an alert fired."""
        left, right = self.x(max(start, self.start)), self.x(min(end, self.end))
        if right > left:
            self.parts.append(f'<rect x="{_number(left)}" y="{_number(self.bottom - 7)}" '
                              f'width="{_number(max(right - left, 1.5))}" height="7" fill="{colour}" '
                              'fill-opacity="0.85"/>')

    def hline(self, value: float, colour: str, dashed: bool = False, width: float = 1.2) -> None:
        y = _number(self.y(value))
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        self.parts.append(f'<line x1="{LEFT}" x2="{_number(self.right)}" y1="{y}" y2="{y}" stroke="{colour}" '
                          f'stroke-width="{width}"{dash}/>')

    def _runs(self, times: Sequence[float], values: Sequence[float]) -> list[list[tuple[float, float]]]:
        runs: list[list[tuple[float, float]]] = [[]]
        for at, value in zip(times, values, strict=True):
            if math.isfinite(value):
                runs[-1].append((self.x(at), self.y(min(max(value, self.low), self.high))))
            elif runs[-1]:
                runs.append([])
        return [run for run in runs if run]

    def line(self, times: Sequence[float], values: Sequence[float], colour: str, width: float = 1.8,
             opacity: float = 1.0, markers: bool = False) -> list[list[tuple[float, float]]]:
        runs = self._runs(times, values)
        for run in runs:
            points = " ".join(f"{_number(x)},{_number(y)}" for x, y in run)
            if len(run) > 1:
                self.parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{width}" '
                                  f'stroke-opacity="{opacity}" stroke-linejoin="round" {self.clip()}/>')
            if markers or len(run) == 1:
                self.parts += [f'<circle cx="{_number(x)}" cy="{_number(y)}" r="2.5" fill="{colour}"/>'
                               for x, y in run]
        return runs

    def steps(self, starts: Sequence[float], ends: Sequence[float], values: Sequence[float], colour: str,
              opacity: float) -> None:
        """Each bucket's value held across the bucket, joined to the next bucket's by a vertical step."""
        path, joined = [], False
        for start, end, value in zip(starts, ends, values, strict=True):
            if not math.isfinite(value):
                joined = False
                continue
            y = _number(self.y(min(max(value, self.low), self.high)))
            across = f"H{_number(self.x(end))}"
            path.append(f"V{y}{across}" if joined else f"M{_number(self.x(start))},{y}{across}")
            joined = True
        if path:
            self.parts.append(f'<path d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="0.9" '
                              f'stroke-opacity="{opacity}" {self.clip()}/>')

    def below_zero(self, runs: list[list[tuple[float, float]]], colour: str) -> None:
        """Tint the area between a curve and zero where the curve is below it (an overspent budget)."""
        zero = self.y(0.0)
        if zero >= self.bottom:
            return
        clip = f"{self.prefix}-below"
        if not any(clip in d for d in self.defs):
            self.defs.append(f'<clipPath id="{clip}"><rect x="{LEFT}" y="{_number(zero)}" '
                             f'width="{_number(self.right - LEFT)}" height="{_number(self.bottom - zero)}"/>'
                             "</clipPath>")
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{_number(x)},{_number(y)}" for x, y in run)
                self.parts.append(f'<polygon points="{_number(run[0][0])},{_number(zero)} {points} '
                                  f'{_number(run[-1][0])},{_number(zero)}" fill="{colour}" fill-opacity="0.15" '
                                  f'clip-path="url(#{clip})"/>')

    def key(self, kind: str, colour: str, text: str) -> None:
        swatches = {"line": f'<line x1="0" x2="16" y1="0" y2="0" stroke="{colour}" stroke-width="2"/>',
                    "thin": f'<line x1="0" x2="16" y1="0" y2="0" stroke="{colour}" stroke-width="1" '
                            'stroke-opacity="0.5"/>',
                    "dashed": f'<line x1="0" x2="16" y1="0" y2="0" stroke="{colour}" stroke-width="1.2" '
                              'stroke-dasharray="5 3"/>',
                    "block": f'<rect x="2" y="-4" width="12" height="8" fill="{colour}"/>',
                    "hatch": f'<rect x="2" y="-4" width="12" height="8" {self.hatch()} stroke="{MUTED}" '
                             'stroke-width="0.5"/>'}
        self.legend.append((swatches[kind], text))

    def svg(self, title: str, label: str, legend_inside: bool = False, legend_left: bool = False) -> str:
        header = [f'<text x="{LEFT - 52}" y="16" font-size="12" font-weight="bold" fill="{INK}">{escape(title)}</text>']
        # the legend: right of the title on one line when it fits, else inside the plot's top right corner
        widths = [24 + len(text) * 9.5 * CHAR for _, text in self.legend]
        title_end = LEFT - 52 + len(title) * 12 * CHAR + 16
        above = not legend_inside and sum(widths) <= self.right - title_end
        if above:
            x, y = self.right - sum(widths), 16.0
        else:
            x, y = (LEFT + 8 if legend_left else self.right - max(widths, default=0) - 4), TOP + 12
        entries = []
        for (swatch, text), width in zip(self.legend, widths, strict=True):
            entries.append(f'<g transform="translate({_number(x)},{_number(y - 4)})">{swatch}'
                           f'<text x="20" y="3.5" font-size="9.5" fill="{INK}">{escape(text)}</text></g>')
            if above:
                x += width
            else:
                y += 14
        if entries and not above:
            height = 14 * len(entries) + 4
            entries.insert(0, f'<rect x="{_number((LEFT + 4) if legend_left else self.right - max(widths) - 8)}" '
                              f'y="{TOP + 1}" '
                              f'width="{_number(max(widths) + 7)}" height="{height}" fill="#fff" '
                              'fill-opacity="0.85"/>')
        self.defs.append(f'<clipPath id="{self.prefix}-plot"><rect x="{LEFT}" y="{TOP}" '
                         f'width="{_number(self.right - LEFT)}" height="{_number(self.bottom - TOP)}"/></clipPath>')
        axes = (f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{_number(self.bottom)}" stroke="{NEUTRAL}"/>'
                f'<line x1="{LEFT}" x2="{_number(self.right)}" y1="{_number(self.bottom)}" '
                f'y2="{_number(self.bottom)}" stroke="{NEUTRAL}"/>')
        return (f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {self.width:g} {HEIGHT:g}" '
                f'font-family="DejaVu Sans, sans-serif"><defs>{"".join(self.defs)}</defs>'
                + "".join(self.parts) + axes + "".join(header) + "".join(entries) + "</svg>")


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
            plot.parts.append(f'<rect x="{_number(x)}" y="{_number(top)}" width="{_number(bar * 0.92)}" '
                              f'height="{_number(max(plot.bottom - top, 0.5))}" fill="{GOOD if judged.met else BAD}">'
                              f"<title>{escape(judged.span.label)}: {escape(label(judged.value))} ({verdict})"
                              "</title></rect>")
    plot.hline(kpi.target, INK, dashed=True)
    for position, judged in enumerate(spans):
        middle, base = _number(LEFT + slot * (position + 0.5)), _number(plot.bottom + 10)
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
        x = _number(plot.x(goal.due))
        plot.parts.append(f'<line x1="{x}" x2="{x}" y1="{_number(plot.y(outlook.high))}" '
                          f'y2="{_number(plot.y(outlook.low))}" stroke="{INK}" stroke-width="3"/>')
        plot.key("line", GOOD if outlook.verdict == "on track" else "#bf8700", "trend")
    plot.key("thin", PALETTE[0], "each day")
    plot.key("dashed", INK, f"goal {format_kpi_value(kpi, goal.target)}")
    return plot.svg(f"Goal: {outlook.verdict}", f"{kpi.name}: the goal's forecast", legend_inside=True,
                    legend_left=True)
