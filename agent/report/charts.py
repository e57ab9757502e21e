"""A report's charts, drawn with matplotlib and returned as SVG to inline in the page.

matplotlib's object API (Figure, not pyplot) keeps no global state between charts, so the scoreboard can
draw in a worker thread. Text stays text (``svg.fonttype: none``): the page's fonts render it, it can be
searched and selected, and the SVG stays small. A fixed hash salt makes the output byte-for-byte stable; a
prefix per chart keeps element ids unique across the charts of one page.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

import matplotlib
from matplotlib import dates, ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from agent.formatting import format_duration
from agent.kpi.units import format_value
from agent.report.model import Chart, KpiResult, Line, Period, format_kpi_value, target_text
from agent.report.periods import short_label

GOOD, BAD, NEUTRAL, INK, MUTED = "#1a7f37", "#cf222e", "#9ca3af", "#1f2328", "#59636e"
PALETTE = ("#0969da", "#8250df", "#bf8700", "#1b7c83", "#cf222e", "#57606a", "#bc4c00", "#4d2d00")
MAX_SERIES = len(PALETTE)  # more lines than colours cannot be told apart

STYLE: Any = {  # Any: matplotlib's stubs key rc parameters by a Literal of every name
    "svg.fonttype": "none",
    "text.parse_math": False,  # a title with two $ signs is text, not TeX
    "svg.hashsalt": "kpi-agent",  # fixed, so the same data gives the same bytes
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "text.color": INK,
    "axes.edgecolor": NEUTRAL,
    "axes.labelcolor": MUTED,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.titlesize": 9,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "grid.color": "#d8dee4",
    "grid.linewidth": 0.6,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.fontsize": 7,
    "legend.frameon": False,
}
WIDE, NARROW, HEIGHT = 7.2, 3.6, 2.5  # inches; the page scales them to its columns




def _date(seconds: float) -> float:
    """Unix seconds as matplotlib's date number (days since its epoch)."""
    return float(dates.date2num(datetime.fromtimestamp(seconds, UTC)))


def _times(period: Period) -> list[float]:
    return [_date(period.bucket_end(i)) for i in range(period.buckets)]


def _nan(values: Iterable[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


# Fixed margins (inches) instead of matplotlib's constrained layout, which measures every text twice and took
# a third of a report's time: room for a y label like "99.960%", a title above, and the two-line date axis.
MARGINS = {"left": 0.68, "right": 0.12, "top": 0.42, "bottom": 0.42}


def _figure(width: float) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, HEIGHT))
    figure.subplots_adjust(left=MARGINS["left"] / width, right=1 - MARGINS["right"] / width,
                           top=1 - MARGINS["top"] / HEIGHT, bottom=MARGINS["bottom"] / HEIGHT)
    return figure, figure.add_subplot()


def _time_axis(axes: Axes, period: Period) -> None:
    locator = dates.AutoDateLocator(tz=period.tz, minticks=3, maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator, tz=period.tz))
    axes.set_xlim(_date(period.start), _date(period.end))


def _shade_missing(axes: Axes, period: Period, lines: Sequence[Line]) -> None:
    """Grey out the part of the period with no data at either end, and say so on the chart."""
    firsts = [line.first for line in lines if line.first is not None]
    lasts = [line.last for line in lines if line.last is not None]
    if not firsts:
        return
    spans = []
    if min(firsts) > 0:
        spans.append((period.start, period.bucket_start(min(firsts))))
    if max(lasts) < period.buckets - 1:
        spans.append((period.bucket_end(max(lasts)), period.end))
    for start, end in spans:
        left, right = _date(start), _date(end)
        axes.axvspan(left, right, color=NEUTRAL, alpha=0.18, linewidth=0)
        axes.text(left + (right - left) / 2, 0.5, "no data", transform=axes.get_xaxis_transform(), ha="center",
                  va="center", color=MUTED, fontsize=8, rotation=90 if (end - start) < period.length / 6 else 0)


def _limits(values: Iterable[float], *always: float) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)] + list(always)
    low, high = min(finite), max(finite)
    pad = (high - low) * 0.12 or abs(high) * 0.05 or 0.05
    return low - pad, high + pad


def _group_text(group: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items())


def _svg(figure: Figure, label: str, prefix: str) -> str:
    """The figure as an <svg> element to inline: no XML prolog, sized by the page, and every id (and every
    reference to one) prefixed, since matplotlib names elements figure_1, axes_1... in every chart."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.DOTALL)
    # the page sizes the chart; the viewBox keeps its proportions
    text = re.sub(r'^<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", text, count=1)
    text = re.sub(r'(\sid="|url\(#|href="#)', lambda m: f"{m.group(1)}{prefix}-", text)
    return text.replace("<svg", f'<svg class="chart" role="img" aria-label="{escape(label)}"', 1)


def _legend(axes: Axes, above: bool) -> None:
    """Above the plot, right of the title, where a wide chart has room (never over lines that sit near 100%);
    inside, where the lines leave the most room, on a narrow chart whose title takes the width."""
    if above:
        axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=4, borderaxespad=0.1, handlelength=1.5)
    else:
        axes.legend(loc="best", handlelength=1.5, frameon=True, framealpha=0.85, edgecolor="none")


def _percent_axis(axes: Axes) -> None:
    axes.yaxis.set_major_formatter(ticker.PercentFormatter(xmax=1.0, decimals=None))


def _unit_axis(axes: Axes, unit: str) -> None:
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: format_value(value, unit)))


def _marks(axes: Axes, result: KpiResult, period: Period) -> None:
    """Planned exclusions as hatched spans; firing KPI alerts as red bars along the foot of the plot."""
    for index, excluded in enumerate(result.exclusions):
        axes.axvspan(_date(max(excluded.start, period.start)), _date(min(excluded.end, period.end)),
                     facecolor="none", edgecolor=MUTED, hatch="////", linewidth=0, alpha=0.5,
                     label="excluded (planned)" if index == 0 else None)
    foot = axes.get_xaxis_transform()
    for index, alert in enumerate(result.alerts):
        axes.fill_between([_date(max(alert.start, period.start)), _date(min(alert.end, period.end))], 0, 0.035,
                          transform=foot, color=BAD, alpha=0.85, linewidth=0,
                          label="alert firing" if index == 0 else None)


def kpi_chart(result: KpiResult, period: Period) -> str:
    """The KPI's value in each bucket and from the period's start, against its target, with the failing
    side of the target tinted (below it when higher is better, above it otherwise). The target is a legend
    entry, not a label on its line: a label at the line's end met the legend whenever the target sat near the
    top of the plot."""
    kpi = result.kpi
    with matplotlib.rc_context(STYLE):
        figure, axes = _figure(WIDE)
        times = _times(period)
        drawn: list[float] = []
        step = format_duration(period.step)
        for index, line in enumerate(result.lines[:MAX_SERIES]):
            color = PALETTE[index]
            suffix = f" ({_group_text(line.group)})" if line.group else ""
            per_bucket, cumulative = _nan(line.per_bucket), _nan(line.cumulative)
            sparse = sum(1 for v in cumulative if math.isfinite(v)) <= 3  # a line needs points to be seen
            axes.plot(times, per_bucket, drawstyle="steps-pre", color=color, alpha=0.45, linewidth=0.8,
                      label=f"each {step}{suffix}")
            axes.plot(times, cumulative, color=color, linewidth=1.8, marker="o" if sparse else None, markersize=4,
                      label=f"since period start{suffix}")
            drawn += per_bucket + cumulative
        low, high = _limits(drawn, kpi.target)
        if kpi.is_ratio:  # no room below 0% or above 100%, but enough to see a line at 100%
            margin = (high - low) * 0.03
            low, high = max(low, -margin), min(high, 1.0 + margin)
            _percent_axis(axes)
        else:
            _unit_axis(axes, "short")
        axes.set_ylim(low, high)
        if kpi.higher_is_better:
            axes.axhspan(low, kpi.target, color=BAD, alpha=0.07, linewidth=0)
        else:
            axes.axhspan(kpi.target, high, color=BAD, alpha=0.07, linewidth=0)
        axes.axhline(kpi.target, color=INK, linestyle="--", linewidth=1, label=f"target {target_text(kpi)}")
        _time_axis(axes, period)
        _shade_missing(axes, period, result.lines)
        _marks(axes, result, period)
        axes.set_title("Value" + ("" if kpi.higher_is_better else " (lower is better)"))
        _legend(axes, above=True)
        return _svg(figure, f"{kpi.name}: value over the period against its target", f"{result.anchor}-value")


def history_chart(result: KpiResult) -> str:
    """The value in each of the last N periods as bars, green where the target was met, red where missed,
    against the dashed target line. Drawn as SVG directly, not with matplotlib: bars and a few labels do not
    need a plotting library, and a report of fifty KPIs draws fifty of them."""
    kpi = result.kpi
    lines = result.lines[:MAX_SERIES]
    spans = lines[0].history if lines else ()
    values = [j.value for line in lines for j in line.history if j.value is not None]
    low, high = _limits(values, kpi.target)
    if kpi.is_ratio:
        low, high = max(low, 0.0), min(high, 1.0)
    else:
        low = min(low, 0.0)
    width, height, left, right, top, bottom = 360.0, 250.0, 58.0, 8.0, 28.0, 52.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(value: float) -> float:
        return round(top + plot_h - (value - low) / ((high - low) or 1) * plot_h, 2)

    def label(value: float) -> str:
        return format_kpi_value(kpi, value) if kpi.is_ratio else format_value(value, "short")

    slot = plot_w / max(len(spans), 1)
    bar = slot * 0.8 / max(len(lines), 1)
    parts = [f'<text x="4" y="14" font-size="12" font-weight="bold" fill="{INK}">'
             + escape(f"Met in {sum(1 for j in spans if j.met)} of the last {len(spans)} periods" if len(lines) == 1
                      else "Each period") + "</text>"]
    for value in (low, high):
        parts.append(f'<text x="{left - 4}" y="{y(value) + 3}" font-size="9" text-anchor="end" fill="{MUTED}">'
                     f"{escape(label(value))}</text>")
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="{NEUTRAL}"/>')
    for index, line in enumerate(lines):
        for position, judged in enumerate(line.history):
            x = left + slot * position + slot * 0.1 + bar * index
            if judged.value is None:
                parts.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h - 3}" font-size="8" '
                             f'text-anchor="middle" fill="{MUTED}">–</text>')
                continue
            colour = GOOD if judged.met else BAD
            top_y = y(judged.value)
            verdict = "met" if judged.met else "missed"
            parts.append(f'<rect x="{x:.1f}" y="{top_y}" width="{bar * 0.92:.1f}" '
                         f'height="{max(top + plot_h - top_y, 0.5):.2f}" fill="{colour}"><title>'
                         f"{escape(judged.span.label)}: {escape(label(judged.value))} ({verdict})</title></rect>")
    target_y = y(kpi.target)
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{target_y}" y2="{target_y}" stroke="{INK}" '
                 'stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{left - 4}" y="{target_y + 3}" font-size="9" text-anchor="end" fill="{INK}">'
                 f"{escape(label(kpi.target))}</text>")
    for position, judged in enumerate(spans):
        x, base = left + slot * (position + 0.5), top + plot_h + 8
        parts.append(f'<text x="{x:.1f}" y="{base}" font-size="8.5" text-anchor="end" fill="{MUTED}" '
                     f'transform="rotate(-45 {x:.1f} {base})">{escape(short_label(judged.span.label))}</text>')
    return (f'<svg class="chart" role="img" aria-label="{escape(kpi.name)}: value in each of the last '
            f'{len(spans)} periods" viewBox="0 0 {width:g} {height:g}" font-family="DejaVu Sans, sans-serif">'
            + "".join(parts) + "</svg>")


def budget_chart(result: KpiResult, period: Period) -> str:
    """Error budget left from the period's start to each bucket; below zero is overspent."""
    with matplotlib.rc_context(STYLE):
        figure, axes = _figure(NARROW)
        times = _times(period)
        drawn: list[float] = []
        for index, line in enumerate(result.lines[:MAX_SERIES]):
            curve = _nan(line.budget_curve)
            axes.plot(times, curve, color=PALETTE[index], linewidth=1.6,
                      label=_group_text(line.group) or None)
            axes.fill_between(times, curve, 0, where=[v < 0 for v in curve], color=BAD, alpha=0.15,
                              linewidth=0, interpolate=True)
            drawn += curve
        axes.axhline(0, color=BAD, linewidth=1)
        axes.set_ylim(*_limits(drawn, 0.0))
        _percent_axis(axes)
        _time_axis(axes, period)
        _shade_missing(axes, period, result.lines)
        _marks(axes, result, period)
        axes.set_title("Error budget remaining")
        if len(result.lines) > 1:
            _legend(axes, above=False)
        return _svg(figure, f"{result.kpi.name}: error budget remaining over the period",
                    f"{result.anchor}-budget")


def supporting_chart(chart: Chart, period: Period, prefix: str) -> str:
    """A supporting metric with its unit; at most MAX_SERIES lines, the rest counted in the title."""
    with matplotlib.rc_context(STYLE):
        figure, axes = _figure(NARROW)
        times = [_date(t) for t in chart.times]
        title = chart.metric.title
        if chart.error or not chart.series:
            axes.text(0.5, 0.5, f"query failed:\n{chart.error}" if chart.error else "no data in the period",
                      transform=axes.transAxes, ha="center", va="center", color=BAD if chart.error else MUTED,
                      wrap=True)
            axes.set_axis_off()
        else:
            labels = [dict(labels) for labels, _ in chart.series]
            varying = [k for k in sorted({k for labels_ in labels for k in labels_})
                       if len({labels_.get(k) for labels_ in labels}) > 1]
            drawn: list[float] = []
            for index, (series_labels, values) in enumerate(chart.series[:MAX_SERIES]):
                curve = _nan(values)
                name = ", ".join(f"{k}={series_labels.get(k, '')}" for k in varying)
                axes.plot(times, curve, color=PALETTE[index], linewidth=1.2, label=name or None)
                drawn += curve
            finite = [v for v in drawn if math.isfinite(v)]
            if finite and min(finite) >= 0:
                axes.set_ylim(bottom=0, top=max(finite) * 1.1 or 1)
            _unit_axis(axes, chart.metric.unit)
            _time_axis(axes, period)
            if varying:
                _legend(axes, above=False)
            hidden = len(chart.series) - MAX_SERIES
            if hidden > 0:
                title += f" (first {MAX_SERIES} of {len(chart.series)} series)"
        axes.set_title(title)
        return _svg(figure, chart.metric.title, prefix)
