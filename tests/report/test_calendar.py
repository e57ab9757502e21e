"""Calendar periods against fifteen months of backfilled history: the numbers a monthly review reads, checked
against the synthetic shape they came from and against Prometheus's own sums, in Europe/Berlin."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.report.periods import parse_period
from tests.browser import Browser
from tests.helpers import fetch
from tests.report.history import AT, BERLIN, MAINTENANCE, SPEC, History, expected

pytestmark = pytest.mark.slow  # fifteen months backfilled with promtool into a real Prometheus, and Chromium

ROWS = """[...document.querySelectorAll('table.summary tbody tr')].map(row => ({
  cells: [...row.cells].map(cell => cell.innerText.trim()),
  values: [...row.cells].map(cell => cell.dataset.value ?? null),
  classes: [...row.cells].map(cell => cell.querySelector('span.good, span.bad, span.same')?.className ?? '')}))"""
HISTORY = """({heads: [...document.querySelectorAll('table.history thead th')].map(th => th.innerText.trim()),
  rows: [...document.querySelectorAll('table.history tbody tr')].map(row => ({
    kpi: row.cells[0].querySelector('a').innerText.trim(),
    cells: [...row.cells].slice(1, -1).map(cell => ({text: cell.innerText.trim(), verdict: cell.className,
                                                     value: cell.dataset.value ?? null})),
    met: row.cells[row.cells.length - 1].innerText.trim()}))})"""


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def report(history: History, out, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "report", str(history.specs), "--prometheus.url", history.url,
                           "--at", rfc3339(AT), "--out", str(out), *args], capture_output=True, text=True, timeout=300)


def prometheus_ratio(history: History, kpi: str, start: float, end: float) -> float:
    """Prometheus's own traffic-weighted ratio over (start, end]: its range selectors include both ends on
    Prometheus 2, hence one millisecond less."""
    window = f"{round((end - start) * 1000) - 1}ms"
    sums = []
    for side in ("numerator", "denominator"):
        query = urllib.parse.urlencode({"query": f'sum_over_time(kpi:{side}:rate5m{{kpi="{kpi}"}}[{window}])',
                                        "time": f"{end:.3f}"})
        status, body = fetch(f"{history.url}/api/v1/query?{query}", timeout=30)
        assert status == 200, body
        sums.append(float(json.loads(body)["data"]["result"][0]["value"][1]))
    return sums[0] / sums[1]


async def read_page(chromium: str, url: str, width: int = 1920, height: int = 1080) -> dict:
    async with Browser(chromium) as browser:
        page = await browser.new_page()
        await page.set_viewport(width, height)
        await page.goto(url)
        found = {"rows": await page.evaluate(ROWS), "history": await page.evaluate(HISTORY),
                 "text": await page.evaluate("document.body.innerText"),
                 "overflow": await page.evaluate("document.documentElement.scrollWidth - window.innerWidth"),
                 "png": await page.screenshot(), "errors": page.errors, "requests": page.requests}
    return found


def by_kpi(rows: list[dict]) -> dict[str, dict]:
    return {row["cells"][2]: row for row in rows}


async def test_a_month_across_a_dst_change_is_summed_over_exactly_its_local_days(history, chromium, tmp_path):
    march = parse_period("2026-03", BERLIN).current(AT)
    out = tmp_path / "march.html"
    result = report(history, out, "--period", "2026-03", "--time-zone", "Europe/Berlin", "--history", "0")
    assert result.returncode == 0, result.stderr
    assert "4 KPIs over March 2026" in result.stdout
    page = await read_page(chromium, out.as_uri())
    assert page["errors"] == [] and page["requests"] == [out.as_uri()]
    assert "March 2026 from 2026-03-01 00:00 CET to 2026-04-01 00:00 CEST" in page["text"]
    shown = float(by_kpi(page["rows"])["availability"]["values"][3])
    # what the shape says March was in Berlin, and what Prometheus sums over those 743 hours
    assert shown == pytest.approx(expected("availability", march.start, march.end), rel=1e-9, abs=1e-12)
    assert shown == pytest.approx(prometheus_ratio(history, "availability", march.start, march.end), rel=1e-9)

    # in UTC, March ends two hours later and holds the hour of errors that opened April in Berlin
    utc_out = tmp_path / "march-utc.html"
    assert report(history, utc_out, "--period", "2026-03", "--history", "0").returncode == 0
    utc_page = await read_page(chromium, utc_out.as_uri())
    utc = float(by_kpi(utc_page["rows"])["availability"]["values"][3])
    utc_march = parse_period("2026-03", ZoneInfo("UTC")).current(AT)
    assert utc == pytest.approx(expected("availability", utc_march.start, utc_march.end), rel=1e-9)
    assert utc < shown - 1e-5  # the error hour counts against March in UTC only
    assert "March 2026 from 2026-03-01 00:00 UTC to 2026-04-01 00:00 UTC" in utc_page["text"]


async def test_a_quarter_across_the_autumn_change(history, chromium, tmp_path):
    quarter = parse_period("2026-Q4", BERLIN).current(AT)  # 1 October to now (6 December): to date
    out = tmp_path / "q4.html"
    result = report(history, out, "--period", "quarter-to-date", "--time-zone", "Europe/Berlin", "--history", "0")
    assert result.returncode == 0, result.stderr
    page = await read_page(chromium, out.as_uri())
    rows = by_kpi(page["rows"])
    for kpi in ("availability", "checkout_errors", "conversion"):
        assert float(rows[kpi]["values"][3]) == pytest.approx(expected(kpi, quarter.start, quarter.end), rel=1e-9)
    assert "2026 Q4 to date" in page["text"]


async def test_the_compliance_history_says_which_months_met_the_target(history, chromium, tmp_path):
    choice = parse_period("last-month", BERLIN)
    months = choice.history(choice.current(AT), 12)
    out = tmp_path / "monthly.html"
    result = report(history, out, "--period", "last-month", "--time-zone", "Europe/Berlin")
    assert result.returncode == 0, result.stderr
    page = await read_page(chromium, out.as_uri())
    assert page["errors"] == [] and page["requests"] == [out.as_uri()]
    table = page["history"]
    assert table["heads"] == ["KPI", *(month.label[:3] + month.label[-5:] for month in months), "Met"]
    rows = {row["kpi"]: row for row in table["rows"]}
    for kpi in ("availability", "checkout_errors", "conversion", "revenue"):
        for month, cell in zip(months, rows[f"store / {kpi}"]["cells"], strict=True):
            assert float(cell["value"]) == pytest.approx(expected(kpi, month.start, month.end), rel=1e-9), (kpi, month)
    verdicts = {month.label: cell["verdict"] for month, cell in zip(months, rows["store / availability"]["cells"],
                                                                     strict=True)}
    # the February incident and the September maintenance miss; every other month meets 99.9%
    assert [label for label, verdict in verdicts.items() if verdict == "missed"] == ["February 2026",
                                                                                    "September 2026"]
    assert rows["store / availability"]["met"] == "10 of 12"
    errors = rows["store / checkout_errors"]
    assert [cell["verdict"] for cell in errors["cells"]] == ["met"] * 11 + ["missed"]  # 1.5% in November

    # November against October and against November 2025, arrows coloured by the KPI's direction
    summary = by_kpi(page["rows"])
    november, october = months[-1], months[-2]
    cells = summary["checkout_errors"]
    assert float(cells["values"][4]) == pytest.approx(expected("checkout_errors", october.start, october.end), rel=1e-9)
    assert "▲ +0.90 pts" in cells["cells"][4] and cells["classes"][4] == "bad"  # more errors is bad news
    revenue = summary["revenue"]
    assert "▲" in revenue["cells"][4] and revenue["classes"][4] == "good"
    year_before = choice.year_ago(november)
    assert float(summary["conversion"]["values"][5]) == pytest.approx(
        expected("conversion", year_before.start, year_before.end), rel=1e-9)


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (390, 844)])
async def test_the_monthly_report_reads_on_a_wide_screen_and_a_phone(history, chromium, tmp_path, width, height):
    out = tmp_path / "monthly.html"
    assert report(history, out, "--period", "last-month", "--time-zone", "Europe/Berlin").returncode == 0
    page = await read_page(chromium, out.as_uri(), width, height)
    assert page["errors"] == [] and page["requests"] == [out.as_uri()]
    assert page["overflow"] <= 0  # wide tables scroll inside their box; the page never scrolls sideways
    (tmp_path / f"monthly-{width}.png").write_bytes(page["png"])


def test_the_summary_and_history_export_as_csv_and_json(history, tmp_path):
    choice = parse_period("last-month", BERLIN)
    months = choice.history(choice.current(AT), 12)
    common = ("--period", "last-month", "--time-zone", "Europe/Berlin")
    summary, rows, document = tmp_path / "summary.csv", tmp_path / "history.csv", tmp_path / "report.json"
    assert report(history, summary, *common).returncode == 0
    assert report(history, rows, *common, "--format", "history-csv").returncode == 0
    assert report(history, document, *common).returncode == 0
    with summary.open(newline="") as file:  # what a spreadsheet reads
        table = {row["kpi"]: row for row in csv.DictReader(file)}
    november = months[-1]
    assert table["checkout_errors"]["status"] == "missed" and table["checkout_errors"]["period"] == "November 2026"
    assert table["checkout_errors"]["start"] == "2026-11-01T00:00:00+01:00"
    assert float(table["availability"]["value"]) == pytest.approx(
        expected("availability", november.start, november.end), rel=1e-12)
    assert table["revenue"]["error_budget_remaining"] == ""  # a value KPI has no budget: empty, not 0
    with rows.open(newline="") as file:
        periods = [row for row in csv.DictReader(file) if row["kpi"] == "availability"]
    assert [row["period"] for row in periods] == [month.label for month in months]
    assert [row["met"] for row in periods].count("false") == 2
    for row, month in zip(periods, months, strict=True):
        assert float(row["value"]) == pytest.approx(expected("availability", month.start, month.end), rel=1e-12)
    data = json.loads(document.read_text())
    assert data["time_zone"] == "Europe/Berlin" and data["period"]["label"] == "November 2026"
    errors = next(k for k in data["kpis"] if k["kpi"] == "checkout_errors")
    assert errors["previous"]["label"] == "October 2026" and len(errors["history"]) == 12
    assert errors["history"][-1]["met"] is False


REVIEWED = SPEC.replace("service: store\n", "service: store\ntime_zone: Europe/Berlin\n").replace(
    "    window: 30d\n", "    window: 30d\n    calendar: month\n").replace(
    "    objective: The shop is always open\n", """    objective: The shop is always open
    exclusions:
      - {start: 2026-09-13T02:00, end: 2026-09-13T06:00, reason: database upgrade}
      - {start: 2026-09-06T02:00, duration: 1h, every: FREQ=WEEKLY;BYDAY=SU, reason: weekly restart}
""").replace("    objective: Grow sales\n", """    objective: Grow sales
    goals:
      - {target: 3.1%, by: 2027-03-31, from: 2026-09-01, baseline: 2.5%}
      - {target: 3.3%, by: 2027-03-31, from: 2026-09-01, description: the stretch goal}
""")


def reviewed_specs(tmp_path: Path) -> Path:
    """The store's spec as a team reviewing it monthly writes it: judged per calendar month in Berlin, its
    planned maintenance windows, and goals for conversion."""
    directory = tmp_path / "reviewed"
    directory.mkdir()
    (directory / "store.yaml").write_text(REVIEWED)
    return directory


async def test_a_planned_maintenance_left_out_turns_a_missed_month_into_a_met_one(history, chromium, tmp_path):
    """September missed 99.9% only because of four hours of planned maintenance on Sunday the 13th: with the
    maintenance (and a weekly restart) in the spec, their 5m rates and those of the 5 minutes after are left out,
    September meets the target, and its value is what the shape gives without those samples."""
    specs = reviewed_specs(tmp_path)
    september = parse_period("2026-09", BERLIN).current(AT)
    out = tmp_path / "september.json"
    result = subprocess.run([sys.executable, "-m", "agent", "report", str(specs), "--prometheus.url", history.url,
                             "--at", rfc3339(AT), "--period", "2026-09", "--history", "3", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    availability = next(k for k in json.loads(out.read_text())["kpis"] if k["kpi"] == "availability")
    sundays = tuple((start, start + 3600.0) for start in (datetime(2026, 9, day, 2, tzinfo=BERLIN).timestamp()
                                                         for day in (6, 20, 27)))
    assert availability["met"] is True and availability["history"][-1]["met"] is True
    assert availability["value"] == pytest.approx(
        expected("availability", september.start, september.end, excluded=(MAINTENANCE, *sundays)), rel=1e-9)
    html = tmp_path / "september.html"
    assert subprocess.run([sys.executable, "-m", "agent", "report", str(specs), "--prometheus.url", history.url,
                           "--at", rfc3339(AT), "--period", "2026-09", "--out", str(html)],
                          capture_output=True, timeout=300).returncode == 0
    page = await read_page(chromium, html.as_uri())
    assert page["errors"] == [] and "excluded (planned)" in html.read_text()  # drawn hatched, with its key


async def test_a_goal_whose_forecast_crosses_its_target(history, chromium, tmp_path):
    """Conversion creeps up from 2.4% (0.04 points a month, a day-to-day wobble of up to 0.12 points) and is at
    about 3% on 6 December: the goal "2.5% to 3.1% by 31 March 2027", set on 1 September, is forecast to be met,
    the trend crossing 3.1% before the due date, and the forecast's interval holds where the shape's own line
    will be; the stretch goal of 3.3% is off track. The spec's calendar makes the report monthly by itself."""
    from tests.report.history import FIRST

    specs = reviewed_specs(tmp_path)
    out = tmp_path / "review.json"
    result = subprocess.run([sys.executable, "-m", "agent", "report", str(specs), "--prometheus.url", history.url,
                             "--at", rfc3339(AT), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "4 KPIs over November 2026" in result.stdout  # calendar: month, time_zone: Europe/Berlin
    conversion = next(k for k in json.loads(out.read_text())["kpis"] if k["kpi"] == "conversion")
    reaching, stretch = conversion["goals"]
    assert (reaching["text"], reaching["verdict"]) == ("2.5% -> 3.1% by 2027-03-31", "on track")
    assert (stretch["text"], stretch["verdict"]) == ("the stretch goal", "off track")
    due = datetime(2027, 4, 1, tzinfo=BERLIN).timestamp()
    assert AT < datetime.fromisoformat(reaching["reaches"]).timestamp() < due
    true_line = 0.024 + 0.0004 * (due - FIRST) / (30.44 * 86400)  # the shape's trend at the due date
    assert reaching["forecast_low"] - 0.001 < true_line < reaching["forecast_high"] + 0.001
    assert 0.75 < reaching["progress"] < 0.95  # from 2.5% most of the way to 3.1%
    html = tmp_path / "review.html"
    assert subprocess.run([sys.executable, "-m", "agent", "report", str(specs), "--prometheus.url", history.url,
                           "--at", rfc3339(AT), "--out", str(html)], capture_output=True, timeout=300).returncode == 0
    page = await read_page(chromium, html.as_uri())
    assert page["errors"] == []
    assert "Goal 2.5% -> 3.1% by 2027-03-31: on track: forecast" in page["text"]
    assert "the stretch goal: off track" in page["text"]
