"""The summary a scheduled report carries in its message: a mail body that reads well in any mail client (plain
text with aligned columns, and HTML with inline styles, since many clients drop <style>), and a chat message
for Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat all read ``text``)."""

from __future__ import annotations

from functools import partial
from html import escape

from agent.kpi.units import format_value
from agent.report.judging import Line, change, meets
from agent.report.model import KpiResult, Report, format_kpi_value, target_text
from agent.report.render import headline

STATUS = {True: "met", False: "MISSED", None: "no data"}
COLOURS = {True: "#1a7f37", False: "#cf222e", None: "#6e7781"}
ARROW_COLOURS = {"good": "#1a7f37", "bad": "#cf222e", "same": "#59636e"}


def _rows(report: Report) -> list[tuple[KpiResult, Line | None]]:
    return [(result, line) for result in report.results for line in result.lines or (None,)]


def _name(result: KpiResult, line: Line | None) -> str:
    group = " ".join(f"{k}={v}" for k, v in line.group.items()) if line and line.group else ""
    return f"{result.spec.service}/{result.kpi.name}" + (f" {group}" if group else "")


def _value(result: KpiResult, line: Line | None) -> str:
    return format_kpi_value(result.kpi, line.value) if line and line.value is not None else "no data"


def _versus(result: KpiResult, line: Line | None) -> tuple[str, str]:
    """The change since the previous period, and whether it is good news ("" when unknown)."""
    if not line or not line.previous:
        return "", ""
    moved = change(result.kpi, line.value, line.previous.value)
    return (f"{moved.arrow} {moved.text}", moved.verdict) if moved else ("", "")


def _budget(result: KpiResult, line: Line | None) -> str:
    if not result.kpi.is_ratio or not line or line.budget_remaining is None:
        return ""
    return format_value(line.budget_remaining, "ratio")


def _history(line: Line | None) -> str:
    judged = [j for j in (line.history if line else ()) if j.met is not None]
    return f"{sum(1 for j in judged if j.met)}/{len(judged)}" if judged else ""


def text_table(report: Report) -> str:
    """The summary in aligned columns (mail clients show text/plain in a fixed-width font or not at all, so
    each row also stands alone)."""
    previous = next((line.previous.span.label for _, line in _rows(report) if line and line.previous), "")
    head = ("Status", "KPI", "Value", "Target", f"vs {previous}" if previous else "Change", "Budget left",
            "Met (history)")
    rows = [head]
    for result, line in _rows(report):
        verdict = meets(result.kpi, line.value) if line else None
        rows.append((STATUS[verdict], _name(result, line), _value(result, line), target_text(result.kpi),
                     _versus(result, line)[0], _budget(result, line), _history(line)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def goal_lines(report: Report) -> list[str]:
    from agent.report.goals import describe
    from agent.report.periods import local_time_text

    def day(seconds: float) -> str:
        return local_time_text(seconds, report.period.tz)[:10]

    found = []
    for result, line in _rows(report):
        for outlook in line.outlooks if line else ():
            text = describe(outlook, partial(format_kpi_value, result.kpi), day)
            found.append(f"{_name(result, line)}: {text}")
    return found


def text_body(report: Report, link: str = "") -> str:
    span = report.period.span
    lines = [f"KPI report: {span.label} ({report.period.tz.key})", headline(report), "", text_table(report)]
    goals = goal_lines(report)
    if goals:
        lines += ["", "Goals:", *(f"- {goal}" for goal in goals)]
    problems = report.problems()
    if problems:
        lines += ["", "Incomplete:", *(f"- {problem}" for problem in problems)]
    lines += ["", "The full report is attached as a PDF" + (f" and at {link}" if link else "") + "."]
    return "\n".join(lines) + "\n"


def html_body(report: Report, link: str = "") -> str:
    """HTML with inline styles only."""
    cell = "padding:4px 10px;border-bottom:1px solid #d1d9e0;"
    number = cell + "text-align:right;white-space:nowrap;"
    previous = next((line.previous.span.label for _, line in _rows(report) if line and line.previous), "")
    head = "".join(f'<th style="{cell}text-align:left;background:#f6f8fa">{escape(h)}</th>' for h in (
        "Status", "KPI", "Value", "Target", f"vs {previous}" if previous else "Change", "Budget left", "Met"))
    rows = []
    for result, line in _rows(report):
        verdict = meets(result.kpi, line.value) if line else None
        moved, good = _versus(result, line)
        rows.append(
            f'<tr><td style="{cell}"><b style="color:{COLOURS[verdict]}">{STATUS[verdict]}</b></td>'
            f'<td style="{cell}">{escape(_name(result, line))}</td>'
            f'<td style="{number}"><b>{escape(_value(result, line))}</b></td>'
            f'<td style="{number}">{escape(target_text(result.kpi))}</td>'
            f'<td style="{number}color:{ARROW_COLOURS.get(good, "#59636e")}">{escape(moved)}</td>'
            f'<td style="{number}">{escape(_budget(result, line))}</td>'
            f'<td style="{number}">{escape(_history(line))}</td></tr>')
    goals = goal_lines(report)
    if goals:
        rows.append(f'<tr><td colspan="7" style="{cell}"><b>Goals</b><br>'
                    + "<br>".join(escape(goal) for goal in goals) + "</td></tr>")
    problems = report.problems()
    trouble = ("<p style=\"color:#a40e26\"><b>Incomplete:</b></p><ul>"
               + "".join(f"<li>{escape(p)}</li>" for p in problems) + "</ul>") if problems else ""
    where = f' and at <a href="{escape(link)}">{escape(link)}</a>' if link else ""
    return ('<!doctype html><html><body style="font-family:Arial,Helvetica,sans-serif;color:#1f2328">'
            f"<h2 style=\"margin:0 0 4px\">KPI report: {escape(report.period.span.label)}</h2>"
            f'<p style="margin:0 0 10px;color:#59636e">{escape(headline(report))} · '
            f"{escape(report.period.tz.key)}</p>"
            f'<table style="border-collapse:collapse;font-size:14px"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>{trouble}"
            f"<p>The full report is attached as a PDF{where}.</p></body></html>")


def chat_message(report: Report, link: str = "") -> dict[str, object]:
    """An incoming-webhook payload: ``text`` (what every Slack-compatible receiver reads) with the table in a
    code block, and Slack's blocks for the same."""
    title = f"KPI report: {report.period.span.label} — {headline(report)}"
    table = text_table(report)
    where = f"\nFull report: {link}" if link else ""
    text = f"*{title}*\n```\n{table}\n```{where}"
    blocks: list[dict[str, object]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"```\n{table}\n```"}}]
    if link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{link}|Full report>"}]})
    return {"text": text, "blocks": blocks}
