"""A report as data people paste into spreadsheets or feed to scripts: the summary and the compliance history as
CSV (one row per KPI series, or per KPI series and period), and everything as one JSON document.

Numbers are exact (the floats the page rounds for reading); times are RFC 3339 in the report's time zone;
a value without data is empty in CSV and null in JSON, never 0.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent import __version__
from agent.report.judging import Judged, Line, meets
from agent.report.model import KpiResult, Report
from agent.report.periods import Span

SUMMARY_COLUMNS = ("service", "kpi", "group", "status", "period", "start", "end", "value", "target",
                   "higher_is_better", "met", "error_budget_remaining", "previous_period", "previous_value",
                   "year_before_period", "year_before_value", "owner", "objective", "note")
HISTORY_COLUMNS = ("service", "kpi", "group", "period", "start", "end", "value", "target", "higher_is_better",
                   "met")
FORMATS = ("csv", "history-csv", "json")


def _time(seconds: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(seconds, tz).isoformat(timespec="seconds")


def _group(line: Line | None) -> str:
    return ";".join(f"{k}={v}" for k, v in line.group.items()) if line else ""


def _status(result: KpiResult, line: Line | None) -> str:
    verdict = meets(result.kpi, line.value) if line else None
    return {True: "met", False: "missed", None: "error" if result.state == "error" else "no data"}[verdict]


def _span(span: Span, tz: ZoneInfo) -> dict[str, Any]:
    return {"label": span.label, "start": _time(span.start, tz), "end": _time(span.end, tz),
            "complete": span.complete}


def _judged(judged: Judged | None, tz: ZoneInfo) -> dict[str, Any] | None:
    if judged is None:
        return None
    return {**_span(judged.span, tz), "value": judged.value, "met": judged.met,
            "error_budget_remaining": judged.budget_remaining}


def _goal(outlook: Any, tz: ZoneInfo) -> dict[str, Any]:
    goal = outlook.goal
    return {"text": goal.text, "target": goal.target, "due": _time(goal.due, tz), "start": _time(goal.start, tz),
            "baseline": outlook.baseline, "verdict": outlook.verdict, "current": outlook.current,
            "progress": outlook.progress, "forecast": outlook.forecast, "forecast_low": outlook.low,
            "forecast_high": outlook.high, "reaches": _time(outlook.reaches, tz) if outlook.reaches else None}


def summary_rows(report: Report) -> list[dict[str, Any]]:
    tz, span = report.period.tz, report.period.span
    rows = []
    for result in report.results:
        kpi = result.kpi
        for line in result.lines or (None,):
            previous = line.previous if line else None
            year_before = line.year_ago if line else None
            rows.append({
                "service": result.spec.service, "kpi": kpi.name, "group": _group(line),
                "status": _status(result, line), "period": span.label, "start": _time(span.start, tz),
                "end": _time(span.end, tz), "value": line.value if line else None, "target": kpi.target,
                "higher_is_better": kpi.higher_is_better, "met": meets(kpi, line.value) if line else None,
                "error_budget_remaining": line.budget_remaining if line else None,
                "previous_period": previous.span.label if previous else None,
                "previous_value": previous.value if previous else None,
                "year_before_period": year_before.span.label if year_before else None,
                "year_before_value": year_before.value if year_before else None,
                "owner": kpi.owner, "objective": kpi.objective, "note": result.note})
    return rows


def history_rows(report: Report) -> list[dict[str, Any]]:
    tz = report.period.tz
    rows = []
    for result in report.results:
        for line in result.lines:
            for judged in line.history:
                rows.append({"service": result.spec.service, "kpi": result.kpi.name, "group": _group(line),
                             "period": judged.span.label, "start": _time(judged.span.start, tz),
                             "end": _time(judged.span.end, tz), "value": judged.value, "target": result.kpi.target,
                             "higher_is_better": result.kpi.higher_is_better, "met": judged.met})
    return rows


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\r\n")  # RFC 4180, as spreadsheets expect
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def summary_csv(report: Report) -> str:
    return _csv(summary_rows(report), SUMMARY_COLUMNS)


def history_csv(report: Report) -> str:
    return _csv(history_rows(report), HISTORY_COLUMNS)


def report_json(report: Report) -> str:
    tz = report.period.tz
    kpis = []
    for result in report.results:
        for line in result.lines or (None,):
            kpis.append({
                "service": result.spec.service, "kpi": result.kpi.name, "group": line.group if line else {},
                "status": _status(result, line), "state": result.state, "note": result.note,
                "target": result.kpi.target, "higher_is_better": result.kpi.higher_is_better,
                "value": line.value if line else None, "met": meets(result.kpi, line.value) if line else None,
                "error_budget_remaining": line.budget_remaining if line else None,
                "previous": _judged(line.previous, tz) if line else None,
                "year_before": _judged(line.year_ago, tz) if line else None,
                "history": [_judged(j, tz) for j in line.history] if line else [],
                "goals": [_goal(o, tz) for o in line.outlooks] if line else [],
                "owner": result.kpi.owner, "objective": result.kpi.objective,
                "description": result.kpi.description})
    document = {"generator": f"kpi-agent {__version__}", "generated_at": _time(report.generated_at, tz),
                "prometheus": report.prometheus_url, "time_zone": tz.key,
                "period": _span(report.period.span, tz), "problems": report.problems(), "kpis": kpis}
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def export(report: Report, kind: str) -> str:
    return {"csv": summary_csv, "history-csv": history_csv, "json": report_json}[kind](report)
