"""The report as one self-contained HTML page: the file `kpi-agent report` writes, the source of its PDF, and
the page `kpi-agent ui` serves. Styles and charts are inline and a Content-Security-Policy forbids every
fetch, so the page opens with no network and cannot leak a request anywhere.
"""

from __future__ import annotations

from html import escape

from agent import __version__
from agent.formatting import format_duration
from agent.kpi import conventions as names
from agent.kpi.units import format_value
from agent.report import charts
from agent.report.collect import DENOMINATOR_5M, NUMERATOR_5M
from agent.report.grid import Period, format_time
from agent.report.judging import ERROR, NO_DATA, PARTIAL, Judged, Line, change, exhaustion_text, meets
from agent.report.model import KpiResult, Report, format_kpi_value, target_text
from agent.report.periods import local_time_text, short_label

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
@page { size: A4 landscape; margin: 10mm; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font: 14px/1.45 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: #1f2328; margin: 0 auto;
       max-width: 1280px; padding: 20px 24px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 0 0 6px; display: flex; gap: 10px; align-items: center; }
a { color: #0969da; text-decoration: none; }
.meta { color: #59636e; font-size: 12px; margin: 2px 0; }
.period { font-size: 15px; margin: 2px 0; }
.problems { border: 2px solid #cf222e; background: #ffebe9; border-radius: 6px; padding: 8px 14px;
            margin: 14px 0; }
.problems h2 { color: #a40e26; font-size: 15px; }
.problems ul { margin: 4px 0; padding-left: 20px; }
table.summary { border-collapse: collapse; width: 100%; margin: 14px 0 8px; font-size: 13px; }
.summary th { text-align: left; background: #f6f8fa; border-bottom: 2px solid #d1d9e0; padding: 6px 8px;
              white-space: nowrap; }
.summary td { border-bottom: 1px solid #d1d9e0; padding: 6px 8px; vertical-align: top; }
.summary td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.summary small, .kpi h2 small { color: #59636e; font-weight: normal; }
.badge { display: inline-block; border-radius: 4px; padding: 1px 8px; font-weight: bold; font-size: 12px;
         color: #fff; white-space: nowrap; }
.badge.met { background: #1a7f37; }
.badge.missed { background: #cf222e; }
.badge.unknown { background: #6e7781; }
.badge.partial { background: #fff8c5; color: #7d4e00; border: 1px solid #d4a72c; }
td.overspent { color: #cf222e; font-weight: bold; }
.kpi { border-top: 1px solid #d1d9e0; padding-top: 14px; margin-top: 18px; break-inside: avoid; }
.kpi .description { margin: 0 0 6px; }
.facts { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 0 0 8px; font-size: 13px; }
.facts div { display: flex; gap: 6px; }
.facts dt { color: #59636e; }
.facts dd { margin: 0; font-weight: bold; }
.note { background: #fff8c5; border-left: 4px solid #d4a72c; padding: 4px 10px; margin: 6px 0; font-size: 13px; }
.note.error { background: #ffebe9; border-color: #cf222e; }
.charts { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 8px 14px; }
.charts figure { margin: 0; }
.charts figure.wide { grid-column: span 2; }
svg.chart { width: 100%; height: auto; display: block; }
td.good, span.good { color: #1a7f37; }
td.bad, span.bad { color: #cf222e; }
td.same, span.same { color: #59636e; }
.arrow { font-size: 11px; }
table.history { border-collapse: collapse; margin: 8px 0 8px; font-size: 12px; }
.history th { background: #f6f8fa; border-bottom: 2px solid #d1d9e0; padding: 4px 6px; text-align: right;
              white-space: nowrap; font-weight: normal; }
.history th.kpi { text-align: left; font-weight: bold; }
.history td { border-bottom: 1px solid #d1d9e0; padding: 4px 6px; text-align: right; white-space: nowrap;
              font-variant-numeric: tabular-nums; }
.history td.kpi { text-align: left; }
.history td.met { background: #dafbe1; }
.history td.missed { background: #ffebe9; color: #a40e26; font-weight: bold; }
.history td.none { color: #8c959f; }
h2.part { font-size: 17px; margin: 22px 0 4px; }
.goal { border-left: 4px solid #d4a72c; background: #fff8c5; padding: 4px 10px; margin: 6px 0; font-size: 13px; }
.goal.good { border-color: #1a7f37; background: #dafbe1; }
.goal.bad { border-color: #cf222e; background: #ffebe9; }
footer { border-top: 1px solid #d1d9e0; margin-top: 24px; padding-top: 8px; color: #59636e; font-size: 12px; }
@media print { body { padding: 0; max-width: none; } }
"""



def _status(kpi_result: KpiResult, line: Line | None) -> str:
    verdict = meets(kpi_result.kpi, line.value) if line else None
    if verdict is None:
        text = "Error" if kpi_result.state == ERROR else "No data"
        return f'<span class="badge unknown">{text}</span>'
    badge = '<span class="badge met">Met</span>' if verdict else '<span class="badge missed">Missed</span>'
    if kpi_result.state == PARTIAL:
        badge += ' <span class="badge partial" title="data for only part of the period">partial</span>'
    return badge


def _value(kpi_result: KpiResult, line: Line | None) -> str:
    if line is None or line.value is None:
        return "no traffic" if line is not None else "no data" if kpi_result.state == NO_DATA else "unknown"
    return format_kpi_value(kpi_result.kpi, line.value)


def _budget(kpi_result: KpiResult, line: Line | None) -> tuple[str, str]:
    """The budget cell's text and class: value KPIs have no error budget."""
    if not kpi_result.kpi.is_ratio:
        return "n/a (value KPI)", ""
    if line is None or line.budget_remaining is None:
        return "unknown", ""
    remaining = line.budget_remaining
    return format_value(remaining, "ratio"), "overspent" if remaining < 0 else ""


def _data(value: float | None) -> str:
    """The exact number behind a rounded cell, for scripts that read the page."""
    return "" if value is None else f' data-value="{value!r}"'


def _group(line: Line | None) -> str:
    if not line or not line.group:
        return ""
    return " <small>" + escape(", ".join(f"{k}={v}" for k, v in line.group.items())) + "</small>"


def _earlier(result: KpiResult, line: Line | None, earlier: Judged | None) -> str:
    """A cell with an earlier period's value and the change since, its arrow coloured by the KPI's direction."""
    if line is None or earlier is None:
        return '<td class="number">-</td>'
    title = escape(earlier.span.label)
    if earlier.value is None:
        return f'<td class="number" title="{title}">no data</td>'
    moved = change(result.kpi, line.value, earlier.value)
    arrow = (f' <span class="{moved.verdict}"><span class="arrow">{moved.arrow}</span> {escape(moved.text)}</span>'
             if moved else "")
    return (f'<td class="number" title="{title}"{_data(earlier.value)}>'
            f"{escape(format_kpi_value(result.kpi, earlier.value))}{arrow}</td>")


def _summary(report: Report) -> str:
    span = report.period.span
    calendar = report.choice is not None and report.choice.is_calendar
    value_head = span.label if calendar else f"Value over {format_duration(span.length)}"
    rows = []
    for result in report.results:
        kpi = result.kpi
        for line in result.lines or (None,):
            budget, budget_class = _budget(result, line)
            rows.append(
                "<tr>"
                f'<td>{_status(result, line)}</td>'
                f"<td>{escape(result.spec.service)}</td>"
                f'<td><a href="#{escape(result.anchor)}">{escape(kpi.name)}</a>{_group(line)}</td>'
                f'<td class="number"{_data(line.value if line else None)}>{escape(_value(result, line))}</td>'
                f"{_earlier(result, line, line.previous if line else None)}"
                f"{_earlier(result, line, line.year_ago if line else None)}"
                f'<td class="number" data-value="{kpi.target!r}">{escape(target_text(kpi))}</td>'
                f'<td class="number {budget_class}"{_data(line.budget_remaining if line else None)}>'
                f"{escape(budget)}</td>"
                f"<td>{escape(kpi.owner or '-')}</td>"
                f"<td>{escape(kpi.objective or kpi.description or '-')}</td>"
                "</tr>")
    return ('<table class="summary"><thead><tr><th>Status</th><th>Service</th><th>KPI</th>'
            f"<th>{escape(value_head)}</th>"
            "<th>Previous period</th><th>A year before</th><th>Target</th><th>Error budget remaining</th>"
            f"<th>Owner</th><th>Objective</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _history(report: Report) -> str:
    """Each KPI series' value in each of the last N periods, met or missed at a glance."""
    spans = next((line.history for result in report.results for line in result.lines if line.history), ())
    if not spans:
        return ""
    heads = "".join(f'<th title="{escape(j.span.label)}">{escape(short_label(j.span.label))}</th>' for j in spans)
    rows = []
    for result in report.results:
        for line in result.lines:
            cells = []
            for judged in line.history:
                if judged.value is None:
                    cells.append(f'<td class="none" title="{escape(judged.span.label)}">no data</td>')
                    continue
                verdict = "met" if judged.met else "missed"
                cells.append(f'<td class="{verdict}" title="{escape(judged.span.label)}: {verdict}"'
                             f"{_data(judged.value)}>{escape(format_kpi_value(result.kpi, judged.value))}</td>")
            met = sum(1 for j in line.history if j.met)
            judged_count = sum(1 for j in line.history if j.met is not None)
            rows.append(f'<tr><td class="kpi"><a href="#{escape(result.anchor)}">{escape(result.spec.service)} / '
                        f"{escape(result.kpi.name)}</a>{_group(line)} <small>{escape(target_text(result.kpi))}"
                        f"</small></td>{''.join(cells)}<td>{met} of {judged_count}</td></tr>")
    return ('<h2 class="part">Compliance history</h2>'
            '<table class="history"><thead><tr><th class="kpi">KPI</th>' + heads + "<th>Met</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _facts(result: KpiResult, period: Period) -> str:
    kpi = result.kpi
    facts = [("Objective", kpi.objective or "-"), ("Owner", kpi.owner or "-"),
             ("Target", f"{target_text(kpi)} over {format_duration(kpi.window)}")]
    if len(result.lines) == 1:
        line = result.lines[0]
        facts.append(("Value over the period", _value(result, line)))
        if kpi.is_ratio:
            facts.append(("Error budget remaining", _budget(result, line)[0]))
            outlook = exhaustion_text(line, period)
            if outlook:
                facts.append(("Error budget", outlook))
    for line in result.lines if len(result.lines) > 1 else ():
        verdict = {True: "met", False: "missed", None: "no data"}[meets(kpi, line.value)]
        facts.append((", ".join(f"{k}={v}" for k, v in line.group.items()), f"{_value(result, line)} ({verdict})"))
    labels = ", ".join(f"{k}={v}" for k, v in result.spec.labels.items())
    if labels:
        facts.append(("Labels", labels))
    return '<dl class="facts">' + "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>"
                                          for k, v in facts) + "</dl>"


def _goals(result: KpiResult, period: Period) -> list[str]:
    """A sentence per goal of the KPI's (first) series, coloured by its verdict."""
    from agent.report.goals import describe

    if not result.lines:
        return []
    kpi = result.kpi

    def day(seconds: float) -> str:
        return local_time_text(seconds, period.tz)[:10]

    found = []
    for outlook in result.lines[0].outlooks:
        verdict = {"on track": "good", "reached": "good", "off track": "bad", "missed": "bad"}.get(
            outlook.verdict, "")
        found.append(f'<p class="goal {verdict}"><strong>Goal</strong> '
                     f"{escape(describe(outlook, lambda v: format_kpi_value(kpi, v), day))}</p>")
    return found


def _section(report: Report, result: KpiResult) -> str:
    kpi = result.kpi
    period = result.period or report.period
    head_line = result.lines[0] if len(result.lines) == 1 else None
    badge = _status(result, head_line) if head_line or not result.lines else ""
    parts = [f'<section class="kpi" id="{escape(result.anchor)}">',
             f"<h2>{badge} {escape(result.spec.service)} / {escape(kpi.name)}"
             f"{' <small>lower is better</small>' if not kpi.higher_is_better else ''}</h2>"]
    if kpi.description:
        parts.append(f'<p class="description">{escape(kpi.description)}</p>')
    parts.append(_facts(result, report.period))
    parts.extend(_goals(result, report.period))
    if result.note:
        alarming = result.state in (ERROR, NO_DATA)
        parts.append(f'<p class="note{" error" if alarming else ""}">{escape(result.note)}</p>')
    figures = []
    if result.lines:
        figures.append(f'<figure class="wide">{charts.kpi_chart(result, period)}</figure>')
        if kpi.is_ratio:
            figures.append(f"<figure>{charts.budget_chart(result, period)}</figure>")
        if any(line.history for line in result.lines):
            figures.append(f"<figure>{charts.history_chart(result)}</figure>")
        for index, outlook in enumerate(result.lines[0].outlooks):
            if outlook.days:
                figures.append(f"<figure>{charts.goal_chart(result, outlook, period.tz, index)}</figure>")
    if result.state != ERROR:
        for index, chart in enumerate(result.charts):
            figures.append("<figure>" + charts.supporting_chart(chart, period, f"{result.anchor}-{index}")
                           + "</figure>")
    if figures:
        parts.append(f'<div class="charts">{"".join(figures)}</div>')
    parts.append("</section>")
    return "".join(parts)


def verdict_counts(report: Report) -> tuple[int, int, int]:
    """How many KPI series met their target, missed it, and have no value."""
    verdicts = [meets(result.kpi, line.value) if line else None
                for result in report.results for line in result.lines or (None,)]
    met, missed = verdicts.count(True), verdicts.count(False)
    return met, missed, len(verdicts) - met - missed


def headline(report: Report) -> str:
    met, missed, unknown = verdict_counts(report)
    series = met + missed + unknown
    counted = f"{len(report.results)} KPIs" + (f" ({series} series)" if series != len(report.results) else "")
    return f"{counted}: " + ", ".join([f"{met} met", f"{missed} missed"] + ([f"{unknown} without data"]
                                                                              if unknown else []))


def title(report: Report) -> str:
    period = report.period
    services = sorted({r.spec.service for r in report.results})
    if report.choice and report.choice.is_calendar:
        return f"KPI report: {', '.join(services)}, {period.span.label}"
    return (f"KPI report: {', '.join(services)}, {format_duration(period.span.length)} to "
            f"{format_time(period.end, period.step, period.tz)}")


def page_head(page_title: str, refresh: float | None, css: str = CSS) -> list[str]:
    head = [f'<meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<link rel="icon" href="data:,">', f"<title>{escape(page_title)}</title>", f"<style>{css}</style>"]
    if refresh:
        head.append(f'<meta http-equiv="refresh" content="{refresh:g}">')
    return head


def render(report: Report, refresh: float | None = None) -> str:
    """The page. ``refresh``: seconds after which the browser reloads it (the live scoreboard)."""
    period = report.period
    span = period.span
    services = sorted({r.spec.service for r in report.results})
    tz = period.tz.key
    head = page_head(title(report), refresh)
    meta = (f"Prometheus {escape(report.prometheus_url)} · rules evaluated every "
            f"{format_duration(report.evaluation_interval)} · charts in buckets of {format_duration(period.step)}"
            f" · generated <time>{format_time(report.generated_at, 1, period.tz)}</time> by kpi-agent {__version__}")
    if refresh:
        meta += f" · refreshes every {format_duration(refresh)}"
    if report.choice and report.choice.is_calendar:
        what = f"<strong>{escape(span.label)}</strong>"
    else:
        what = f"<strong>{format_duration(span.length)}</strong>"
    body = ["<header><h1>KPI report</h1>",
            f'<p class="period">{what} from {format_time(span.start, period.step, period.tz)} to '
            f"{format_time(span.end, period.step, period.tz)} · {escape(', '.join(services))} · "
            f"{headline(report)}</p>",
            f'<p class="meta">{meta}</p></header>']
    problems = report.problems()
    if problems:
        body.append('<section class="problems" role="alert"><h2>This report is incomplete</h2><ul>'
                    + "".join(f"<li>{escape(p)}</li>" for p in problems) + "</ul></section>")
    body.append(_summary(report))
    body.append(_history(report))
    body.extend(_section(report, result) for result in report.results)
    body.append(
        "<footer>Ratio KPIs: good events over all events across the whole period (the sums of the "
        f"<code>{NUMERATOR_5M}</code> and <code>{DENOMINATOR_5M}</code> series the generated rules record, the "
        f"formula of <code>{names.RATIO_PERIOD}</code> applied to this report's period). Value KPIs: the average "
        f"of <code>{names.VALUE}</code>. Error budget remaining: 1 - bad share / error budget (the "
        "budget is 1 - target, or the target when lower is better); below 0 it is overspent. Planned "
        f"exclusions are left out of values and budgets. Times are in {escape(tz)}.</footer>")
    return ("<!doctype html>\n<html lang=\"en\"><head>" + "".join(head) + "</head><body>" + "".join(body)
            + "</body></html>\n")
