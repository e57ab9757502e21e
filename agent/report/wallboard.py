"""The wallboard `kpi-agent ui` serves at /: one tile per KPI series, for the screen a team keeps on a wall.

A tile says in one look what the review needs: the value large, the target, met or missed in colour, the
change since the previous period with an arrow coloured by the KPI's direction, a sparkline of the period,
and the error budget left. Tiles are grouped by service (or owner) and each one links to its KPI's section of
the full report at /report. The page is plain HTML and CSS: no script, nothing fetched (the report's CSP), so
it works on a locked-down TV browser and on a phone alike. Sparklines are drawn here as SVG polylines, not
with matplotlib: a wall of fifty tiles is built in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from agent.formatting import format_duration
from agent.kpi.units import format_value
from agent.report.grid import Period, format_time
from agent.report.judging import NO_DATA, Line, change, exhaustion_text, meets
from agent.report.model import KpiResult, Report, format_kpi_value, target_text
from agent.report.periods import local_time_text
from agent.report.render import page_head, verdict_counts

CSS = """
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font: 16px/1.3 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: #f0f3f6; background: #0d1117;
       margin: 0; padding: clamp(10px, 1.2vw, 24px); }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 24px; margin-bottom: 14px; }
h1 { font-size: clamp(22px, 2.2vw, 40px); margin: 0; }
.when { font-size: clamp(15px, 1.3vw, 24px); color: #9ea7b3; }
.counts { font-size: clamp(15px, 1.3vw, 24px); }
.counts .missed { color: #ff7b72; font-weight: bold; }
h2 { font-size: clamp(15px, 1.2vw, 22px); color: #9ea7b3; margin: 16px 0 8px; text-transform: uppercase;
     letter-spacing: 0.06em; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 420px), 1fr));
         gap: clamp(8px, 0.8vw, 16px); }
a.tile { display: grid; grid-template-rows: auto auto auto 1fr; color: inherit; text-decoration: none;
         background: #161b22; border-radius: 10px; border-left: 12px solid #6e7681;
         padding: clamp(10px, 0.9vw, 18px) clamp(12px, 1vw, 20px); min-height: 230px; }
a.tile:hover, a.tile:focus { outline: 3px solid #58a6ff; }
a.tile.met { border-left-color: #2ea043; }
a.tile.missed { border-left-color: #f85149; background: #2a1517; }
.name { font-size: clamp(16px, 1.25vw, 24px); font-weight: bold; overflow-wrap: anywhere; }
.name small { font-weight: normal; color: #9ea7b3; }
.value { font-size: clamp(44px, 4.2vw, 80px); font-weight: bold; line-height: 1.05; margin: 4px 0 2px;
         font-variant-numeric: tabular-nums; white-space: nowrap; }
.met .value { color: #3fb950; }
.missed .value { color: #ff7b72; }
.nodata .value { color: #9ea7b3; font-size: clamp(28px, 2.6vw, 48px); }
.facts { display: flex; flex-wrap: wrap; gap: 2px 18px; font-size: clamp(15px, 1.1vw, 21px); color: #c9d1d9; }
.facts b { color: #f0f3f6; }
.good { color: #3fb950; } .bad { color: #ff7b72; } .same { color: #9ea7b3; }
.facts b.overspent { color: #ff7b72; }
svg.spark { width: 100%; height: 56px; margin-top: 8px; align-self: end; }
footer { color: #9ea7b3; font-size: 13px; margin-top: 18px; }
footer a { color: #58a6ff; }
.problems { background: #2a1517; border: 2px solid #f85149; border-radius: 8px; padding: 8px 14px;
            margin: 0 0 12px; font-size: 15px; }
.deliveries { font-size: 13px; color: #9ea7b3; margin-top: 6px; }
.deliveries .failed { color: #ff7b72; font-weight: bold; }
"""


def sparkline(values: Sequence[float | None], target: float, label: str) -> str:
    """The values as a polyline over the period, the target as a dashed line; gaps stay gaps."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(*finite, target), max(*finite, target)
    pad = (high - low) * 0.1 or abs(high) * 0.01 or 0.01
    low, high = low - pad, high + pad
    count = max(len(values) - 1, 1)

    def y(value: float) -> float:
        return round(30 - (value - low) / (high - low) * 30, 2)

    runs: list[list[str]] = [[]]
    for index, value in enumerate(values):
        if value is None or not math.isfinite(value):
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append(f"{round(index / count * 100, 2)},{y(value)}")
    lines = "".join(f'<polyline points="{" ".join(run)}" fill="none" stroke="#58a6ff" stroke-width="2" '
                    'vector-effect="non-scaling-stroke"/>' for run in runs if len(run) > 1)
    dots = "".join(f'<circle cx="{run[0].split(",")[0]}" cy="{run[0].split(",")[1]}" r="1.2" fill="#58a6ff"/>'
                   for run in runs if len(run) == 1)
    return (f'<svg class="spark" viewBox="0 0 100 30" preserveAspectRatio="none" role="img" '
            f'aria-label="{escape(label)}"><line x1="0" x2="100" y1="{y(target)}" y2="{y(target)}" '
            'stroke="#9ea7b3" stroke-dasharray="3 2" stroke-width="1" vector-effect="non-scaling-stroke"/>'
            f"{lines}{dots}</svg>")


def _tile(result: KpiResult, line: Line | None, report_path: str, period: Period) -> str:
    kpi = result.kpi
    verdict = meets(kpi, line.value) if line else None
    state = {True: "met", False: "missed", None: "nodata"}[verdict]
    if line is not None and line.value is not None:
        value = format_kpi_value(kpi, line.value)
    else:
        value = "no data" if result.state == NO_DATA or line is not None else "unknown"
    group = " ".join(f"{k}={v}" for k, v in line.group.items()) if line and line.group else ""
    facts = [f"target <b>{escape(target_text(kpi))}</b>"]
    moved = change(kpi, line.value, line.previous.value) if line and line.previous else None
    if moved:
        facts.append(f'<span class="{moved.verdict}">{moved.arrow} {escape(moved.text)}</span> '
                     f"vs {escape(line.previous.span.label) if line and line.previous else ''}")
    if kpi.is_ratio and line is not None and line.budget_remaining is not None:
        overspent = ' class="overspent"' if line.budget_remaining < 0 else ""
        facts.append(f"budget left <b{overspent}>{escape(format_value(line.budget_remaining, 'ratio'))}</b>")
        budget = exhaustion_text(line, period)
        if budget and budget != "spent":
            facts.append(escape(budget.replace(" at the last day's burn", "")))
    for outlook in line.outlooks if line else ():
        tone = {"on track": "good", "reached": "good", "off track": "bad", "missed": "bad"}.get(outlook.verdict, "same")
        facts.append(f"goal <b>{escape(format_kpi_value(kpi, outlook.goal.target))}</b> by "
                     f"{escape(local_time_text(outlook.goal.due - 1, period.tz)[:10])}: "
                     f'<span class="{tone}">{escape(outlook.verdict)}</span>')
    history = [j for j in (line.history if line else ()) if j.met is not None]
    if history:
        facts.append(f"met {sum(1 for j in history if j.met)} of last {len(history)}")
    spark = sparkline(line.cumulative, kpi.target, f"{kpi.name} over the period") if line else ""
    title = f"{result.spec.service} / {kpi.name}" + (f" ({group})" if group else "")
    return (f'<a class="tile {state}" href="{report_path}#{escape(result.anchor)}" title="{escape(title)}">'
            f'<div class="name">{escape(kpi.name)}{f" <small>{escape(group)}</small>" if group else ""}</div>'
            f'<div class="value">{escape(value)}</div>'
            f'<div class="facts">{"".join(f"<span>{fact}</span>" for fact in facts)}</div>{spark}</a>')


def render_wallboard(report: Report, refresh: float | None = None, group_by: str = "service",
                     report_path: str = "report", deliveries: str = "") -> str:
    """The wall page. ``group_by``: service or owner; ``deliveries``: the scheduled reports' status, as HTML."""
    span = report.period.span
    groups: dict[str, list[str]] = {}
    for result in report.results:
        key = result.spec.service if group_by == "service" else (result.kpi.owner or "no owner")
        for line in result.lines or (None,):
            groups.setdefault(key, []).append(_tile(result, line, report_path, report.period))
    met, missed, unknown = verdict_counts(report)
    counts = [f"{met} met", f'<span class="missed">{missed} missed</span>' if missed else "0 missed"]
    if unknown:
        counts.append(f"{unknown} without data")
    body = ["<header><h1>KPIs</h1>",
            f'<span class="when">{escape(span.label)} · updated '
            f"<time>{format_time(report.generated_at, refresh or 60, report.period.tz)}</time></span>",
            f'<span class="counts">{", ".join(counts)}</span></header>']
    problems = report.problems()
    if problems:
        body.append(f'<div class="problems" role="alert">{len(problems)} problem'
                    f'{"s" if len(problems) > 1 else ""}: {escape(problems[0])}'
                    f'{" …" if len(problems) > 1 else ""} <a href="{report_path}">see the report</a></div>')
    for name in sorted(groups):
        body.append(f"<h2>{escape(name)}</h2><div class=\"tiles\">{''.join(groups[name])}</div>")
    footer = (f'<footer><a href="{report_path}">Full report</a> · <a href="summary.csv">summary.csv</a> · '
              f'<a href="history.csv">history.csv</a> · <a href="report.json">report.json</a> · '
              f"Prometheus {escape(report.prometheus_url)}")
    if refresh:
        footer += f" · refreshes every {format_duration(refresh)}"
    body.append(footer + f"{deliveries}</footer>")
    head = page_head(f"KPIs: {span.label}", refresh, CSS)
    return ('<!doctype html>\n<html lang="en"><head>' + "".join(head) + "</head><body>" + "".join(body)
            + "</body></html>\n")
