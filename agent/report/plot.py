"""An SVG chart, written element by element: a time (or category) axis, a value axis, lines, steps, bands,
spans, a legend. It knows nothing of KPIs (``agent.report.charts`` decides what each chart of a report shows).

matplotlib decides where the ticks go and how they read (``AutoDateLocator`` and ``ConciseDateFormatter`` for
time in the report's zone, ``MaxNLocator`` for values), which is the part of plotting that is hard to get
right. Drawing whole figures with matplotlib cost about 0.1 s a chart (laying out and measuring every text), so
a review of 50 KPIs spent most of its time there; written directly, a chart costs about a millisecond. Text
stays text (the page's fonts render it, it can be searched and selected); the same data gives the same bytes; a
prefix per chart keeps element ids unique on the page.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo

from matplotlib import dates, ticker

NEUTRAL, INK, MUTED, GRID = "#9ca3af", "#1f2328", "#59636e", "#d8dee4"
WIDE, NARROW, HEIGHT = 720.0, 360.0, 250.0  # the viewBox; the page scales charts to its columns
LEFT, RIGHT, TOP, BOTTOM = 68.0, 12.0, 42.0, 40.0  # room for "99.960%", a title and legend, two lines of dates
CHAR = 0.6  # DejaVu Sans: a character is about 0.6 of the font size wide, enough to lay out a legend


def number(value: float) -> str:
    """A coordinate as SVG text: at most two decimals, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


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
            y = number(self.y(tick))
            self.parts.append(f'<line x1="{LEFT}" x2="{number(self.right)}" y1="{y}" y2="{y}" stroke="{GRID}" '
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
            x = number(self.x(dates.num2date(tick).timestamp()))
            self.parts.append(f'<line x1="{x}" x2="{x}" y1="{TOP}" y2="{number(self.bottom)}" stroke="{GRID}" '
                              'stroke-width="0.8"/>')
            self.parts.append(f'<text x="{x}" y="{number(self.bottom + 14)}" font-size="10" text-anchor="middle" '
                              f'fill="{MUTED}">{escape(label)}</text>')
        offset = formatter.get_offset()
        if offset:
            self.parts.append(f'<text x="{number(self.right)}" y="{number(self.bottom + 28)}" font-size="10" '
                              f'text-anchor="end" fill="{MUTED}">{escape(offset)}</text>')

    def band(self, low: float, high: float, colour: str, opacity: float) -> None:
        """A horizontal band of values (the failing side of a target)."""
        top, bottom = self.y(min(max(high, self.low), self.high)), self.y(min(max(low, self.low), self.high))
        self.parts.append(f'<rect x="{LEFT}" y="{number(top)}" width="{number(self.right - LEFT)}" '
                          f'height="{number(bottom - top)}" fill="{colour}" fill-opacity="{opacity}"/>')

    def span(self, start: float, end: float, fill: str, text: str = "") -> None:
        """A stretch of time, full height: missing data (grey) or a planned exclusion (hatched)."""
        left, right = self.x(max(start, self.start)), self.x(min(end, self.end))
        if right <= left:
            return
        self.parts.append(f'<rect x="{number(left)}" y="{TOP}" width="{number(right - left)}" '
                          f'height="{number(self.bottom - TOP)}" {fill}/>')
        if text and right - left > 30:
            self.parts.append(f'<text x="{number((left + right) / 2)}" y="{number((TOP + self.bottom) / 2)}" '
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
            self.parts.append(f'<rect x="{number(left)}" y="{number(self.bottom - 7)}" '
                              f'width="{number(max(right - left, 1.5))}" height="7" fill="{colour}" '
                              'fill-opacity="0.85"/>')

    def hline(self, value: float, colour: str, dashed: bool = False, width: float = 1.2) -> None:
        y = number(self.y(value))
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        self.parts.append(f'<line x1="{LEFT}" x2="{number(self.right)}" y1="{y}" y2="{y}" stroke="{colour}" '
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
            points = " ".join(f"{number(x)},{number(y)}" for x, y in run)
            if len(run) > 1:
                self.parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{width}" '
                                  f'stroke-opacity="{opacity}" stroke-linejoin="round" {self.clip()}/>')
            if markers or len(run) == 1:
                self.parts += [f'<circle cx="{number(x)}" cy="{number(y)}" r="2.5" fill="{colour}"/>'
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
            y = number(self.y(min(max(value, self.low), self.high)))
            across = f"H{number(self.x(end))}"
            path.append(f"V{y}{across}" if joined else f"M{number(self.x(start))},{y}{across}")
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
            self.defs.append(f'<clipPath id="{clip}"><rect x="{LEFT}" y="{number(zero)}" '
                             f'width="{number(self.right - LEFT)}" height="{number(self.bottom - zero)}"/>'
                             "</clipPath>")
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{number(x)},{number(y)}" for x, y in run)
                self.parts.append(f'<polygon points="{number(run[0][0])},{number(zero)} {points} '
                                  f'{number(run[-1][0])},{number(zero)}" fill="{colour}" fill-opacity="0.15" '
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
            entries.append(f'<g transform="translate({number(x)},{number(y - 4)})">{swatch}'
                           f'<text x="20" y="3.5" font-size="9.5" fill="{INK}">{escape(text)}</text></g>')
            if above:
                x += width
            else:
                y += 14
        if entries and not above:
            height = 14 * len(entries) + 4
            entries.insert(0, f'<rect x="{number((LEFT + 4) if legend_left else self.right - max(widths) - 8)}" '
                              f'y="{TOP + 1}" '
                              f'width="{number(max(widths) + 7)}" height="{height}" fill="#fff" '
                              'fill-opacity="0.85"/>')
        self.defs.append(f'<clipPath id="{self.prefix}-plot"><rect x="{LEFT}" y="{TOP}" '
                         f'width="{number(self.right - LEFT)}" height="{number(self.bottom - TOP)}"/></clipPath>')
        axes = (f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{number(self.bottom)}" stroke="{NEUTRAL}"/>'
                f'<line x1="{LEFT}" x2="{number(self.right)}" y1="{number(self.bottom)}" '
                f'y2="{number(self.bottom)}" stroke="{NEUTRAL}"/>')
        return (f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {self.width:g} {HEIGHT:g}" '
                f'font-family="DejaVu Sans, sans-serif"><defs>{"".join(self.defs)}</defs>'
                + "".join(self.parts) + axes + "".join(header) + "".join(entries) + "</svg>")
