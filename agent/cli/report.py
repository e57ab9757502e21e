"""`kpi-agent report` (a file: the report as HTML or PDF, or its tables as CSV or JSON) and `kpi-agent ui` (the
wallboard, the report and its exports, live, and the scheduled deliveries): flags in, agent.report does the rest.

Loaded only when one of the two commands runs (the lazy map in agent/cli/__init__.py); matplotlib, Chromium and
the mail code load later still, inside the commands: `kpi-agent run` pays for none of them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import click

from agent.cli import flags
from agent.cli.problems import report_problems
from agent.config.problems import ConfigError
from agent.formatting import format_duration
from agent.kpi.loading import load_specs
from agent.kpi.model import ServiceSpec
from agent.kpi.prometheus_api import PrometheusClient
from agent.report.collect import collect
from agent.report.model import Report
from agent.report.periods import PERIOD_HELP, PeriodChoice, choose_period
from agent.runtime.logconfig import setup_logging
from agent.server.listener import ListenAddress

DEFAULT_UI_LISTEN = ":9911"


def _specs(paths: tuple[str, ...]) -> list[ServiceSpec]:
    loaded, problems = load_specs(paths)
    if report_problems(problems):
        sys.exit(1)
    return loaded


_SPECS = click.argument("specs", nargs=-1, required=True, type=flags.SPECS)
_PROMETHEUS = click.option("--prometheus.url", "prometheus_url", required=True, type=flags.PROMETHEUS_URL,
                           help="Prometheus (or another server of its HTTP API) holding the kpi:* series: "
                                "http(s)://host:port, with a path prefix and user:password if it needs them.")
_TIME_ZONE = click.option("--time-zone", "time_zone", type=flags.TIME_ZONE,
                          help="IANA time zone of calendar periods and of the times shown. Default: the specs' "
                               "time_zone when they share one, else UTC.")
_PERIOD = click.option("--period", type=flags.PERIOD,
                       help=f"What the report judges: {PERIOD_HELP}. Default: the calendar period the specs' KPIs "
                            "are judged over (their calendar field) when they share one (the last complete one; "
                            "for ui, the one to date), else 30d.")
_HISTORY = click.option("--history", type=click.IntRange(min=0, max=60), default=None,
                        help="How many periods the compliance history shows, the judged one last. Default: 12 "
                             "for calendar periods, 0 (none) for rolling ones.")


def _history_count(choice: PeriodChoice, history: int | None) -> int:
    return history if history is not None else 12 if choice.is_calendar else 0


async def _collect(specs: list[ServiceSpec], url: str, period: PeriodChoice, at: float, history: int) -> Report:
    import aiohttp  # here, not at the top: a report whose flags are refused never loads it

    async with aiohttp.ClientSession() as session:
        return await collect(specs, PrometheusClient(url, session), period, at, history)


@click.command("report")
@_SPECS
@_PROMETHEUS
@_PERIOD
@_TIME_ZONE
@_HISTORY
@click.option("--at", type=flags.MOMENT, help="When the report is made (the end of a rolling period; calendar "
                                             "periods are the ones running or last complete then): RFC 3339 or "
                                             "Unix seconds. Default: now.")
@click.option("--out", required=True, type=flags.OUTPUT_FILE, help="File to write (in an existing directory).")
@click.option("--format", "output_format", type=click.Choice(["html", "pdf", "csv", "history-csv", "json"]),
              help="html or pdf: the report; csv: the summary table; history-csv: each KPI's value in each period "
                   "of the compliance history; json: all of it. Default: from --out's extension (.pdf, .csv, "
                   ".json), else html.")
@click.option("--chromium", help="Chromium or Chrome for PDF output. Default: chromium, chromium-browser or "
                                 "google-chrome from PATH.")
def report(specs: tuple[str, ...], prometheus_url: str, period: str | None, time_zone: str | None,
           history: int | None, at: float | None, out: str, output_format: str | None, chromium: str | None) -> None:
    """Write a self-contained KPI report (one file that opens with no network): every KPI of every spec
    with its value over the period against its target, its error budget and charts; or its tables as CSV or
    JSON.

    Exit 0 when complete; 3 when some KPI has data for only part of the period; 4 when some KPI has no
    data; 5 when Prometheus was unreachable or failed (the report is written and says so in all three
    cases); 1 for invalid specs or when the PDF cannot be printed."""
    from agent.report.output import OutputError, output_kind, prepare, write

    loaded = _specs(specs)
    choice = choose_period(period, time_zone, loaded, running=False)
    kind = output_format or output_kind(out)
    try:
        browser = prepare(kind, chromium)
    except OutputError as exc:
        click.echo(f"kpi-agent report: {exc}", err=True)
        sys.exit(1)
    started = time.monotonic()
    moment = time.time() if at is None else at
    result = asyncio.run(_collect(loaded, prometheus_url, choice, moment, _history_count(choice, history)))
    path = Path(out)
    try:
        write(result, path, kind, browser)
    except OutputError as exc:
        click.echo(f"kpi-agent report: {exc}", err=True)
        sys.exit(1)
    for problem in result.problems():
        click.echo(problem, err=True)
    span = result.period.span
    over = span.label if choice.is_calendar else format_duration(span.length)
    click.echo(f"wrote {path} ({path.stat().st_size:,} bytes, {len(result.results)} KPIs over {over}) in "
               f"{time.monotonic() - started:.1f}s")
    sys.exit(result.exit_code)


@click.command("ui")
@_SPECS
@_PROMETHEUS
@_PERIOD
@_TIME_ZONE
@_HISTORY
@click.option("--refresh", default="1m", show_default=True, type=flags.DURATION,
              help="How often the pages reload themselves.")
@click.option("--group-by", "group_by", type=click.Choice(["service", "owner"]), default="service", show_default=True,
              help="How the wallboard groups its tiles.")
@click.option("--reports.file", "reports_file", type=flags.EXISTING_FILE,
              help="Scheduled reports to deliver by e-mail and webhook (see the README).")
@click.option("--chromium", help="Chromium or Chrome to print scheduled reports' PDFs. Default: from PATH.")
@click.option("--web.listen-address", "listen", default=DEFAULT_UI_LISTEN, show_default=True,
              type=flags.LISTEN_ADDRESS, help="Address to serve the wallboard on, host:port.")
@flags.web_config_file
@flags.log_level
@flags.log_format
def ui(specs: tuple[str, ...], prometheus_url: str, period: str | None, time_zone: str | None, history: int | None,
       refresh: float, group_by: str, reports_file: str | None, chromium: str | None, listen: ListenAddress,
       web_config_file: str | None, log_level: str, log_format: str) -> None:
    """Serve a wallboard at / (a tile per KPI), the full report at /report and its exports (/summary.csv,
    /history.csv, /report.json), reloading themselves every --refresh; read from Prometheus when viewed, never
    more often than every half --refresh whatever the number of viewers. With --reports.file, deliver the
    scheduled reports it describes."""
    from agent.report.server import Scoreboard, serve
    from agent.server.webconfig import LiveWebConfig

    setup_logging(log_level, log_format)
    loaded = _specs(specs)
    reports, browser = None, ""
    if reports_file:
        from agent.report.pdf import PdfError, find_chromium
        from agent.report.schedule import load_reports

        try:
            reports = load_reports(reports_file, {spec.service for spec in loaded})
            if any(scheduled.email for scheduled in reports.reports):
                browser = find_chromium(chromium)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(1)
        except PdfError as exc:
            click.echo(f"kpi-agent ui: {exc}", err=True)
            sys.exit(1)
    choice = choose_period(period, time_zone, loaded, running=True)
    board = Scoreboard(loaded, prometheus_url, choice, refresh, _history_count(choice, history), group_by)
    try:
        web_config = LiveWebConfig(web_config_file) if web_config_file else None
        asyncio.run(serve(board, listen, web_config, reports, browser))
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"kpi-agent ui: {exc}", err=True)
        sys.exit(1)
