"""`kpi-agent report` as a person uses it: run the command against a real Prometheus scraping a real agent,
open the file in a real browser, read what it shows, and look at it."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import pytest
from PIL import Image

from tests.browser import Browser
from tests.helpers import fetch, free_port, wait_until
from tests.kpi.helpers import load_spec
from tests.report.stack import MRR, Stack

pytestmark = pytest.mark.slow  # a real shop, agent and Prometheus with recorded history, and Chromium

AGENT = [sys.executable, "-m", "agent"]
PERIOD = "30s"
GREEN, RED = (0x1A, 0x7F, 0x37), (0xCF, 0x22, 0x2E)  # the Met and Missed badges
BLUE = (0x09, 0x69, 0xDA)  # a chart's first line

ROWS = """[...document.querySelectorAll('table.summary tbody tr')].map(row => ({
  cells: [...row.cells].map(cell => cell.innerText.trim()),
  values: [...row.cells].map(cell => cell.dataset.value ?? null)}))"""


def report(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*AGENT, "report", *args], capture_output=True, text=True, timeout=timeout)


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def percent(text: str) -> float:
    return float(text.rstrip("%"))


def colour_pixels(png: bytes, colour: tuple[int, int, int]) -> int:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(count for count, pixel in image.getcolors(maxcolors=1 << 24)
               if all(abs(a - b) <= 12 for a, b in zip(pixel, colour, strict=True)))


def blank_share(png: bytes) -> float:
    image = Image.open(io.BytesIO(png)).convert("L")
    histogram = image.histogram()
    return sum(histogram[250:]) / (image.width * image.height)


async def open_in_browser(chromium: str, url: str) -> tuple[list[dict], list[str], list[str], bytes, str]:
    async with Browser(chromium) as browser:
        page = await browser.new_page()
        await page.goto(url)
        rows = await page.evaluate(ROWS)
        text = await page.evaluate("document.body.innerText")
        ids = await page.evaluate("[...document.querySelectorAll('[id]')].map(element => element.id)")
        assert len(ids) == len(set(ids)), "ids repeat across the page's charts"
        return rows, page.errors, page.requests, await page.screenshot(), text


async def test_the_report_shows_every_kpi_with_the_value_the_traffic_implies(stack: Stack, chromium, tmp_path):
    at = time.time()
    out = tmp_path / "report.html"
    result = report(str(stack.shop_specs), "--prometheus.url", stack.prometheus, "--period", PERIOD,
                    "--at", rfc3339(at), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert re.match(rf"wrote {re.escape(str(out))} \([\d,]+ bytes, 4 KPIs over 30s\) in [\d.]+s", result.stdout)

    rows, errors, requests, png, text = await open_in_browser(chromium, out.as_uri())
    assert errors == []
    assert requests == [out.as_uri()]  # self-contained: nothing else is fetched
    by_kpi = {row["cells"][2]: row for row in rows}
    assert sorted(by_kpi) == ["availability_by_path path=/api/cart", "availability_by_path path=/api/checkout",
                              "checkout_availability", "checkout_errors", "monthly_recurring_revenue"]
    # one checkout in 50 fails: availability 98% against 99% (missed, budget overspent: 1 - 2%/1% = -100%),
    # error rate 2% against at most 5% (met, 1 - 2%/5% = 60% of the budget left)
    status, service, _, value, _, _, target, budget, owner, objective = by_kpi["checkout_availability"]["cells"]
    assert (status, service, target, owner, objective) == ("Missed", "demo", "≥ 99.00%", "payments",
                                                           "Customers can always pay")
    assert abs(percent(value) - 98.0) < 0.25 and abs(percent(budget) + 100) < 25, (value, budget)
    status, _, _, value, _, _, target, budget, _, _ = by_kpi["checkout_errors"]["cells"]
    assert (status, target) == ("Met", "≤ 5.00%")
    assert abs(percent(value) - 2.0) < 0.25 and abs(percent(budget) - 60) < 5, (value, budget)
    # one row per group_by value: the checkout path carries the failures, the cart never fails
    status, _, _, value, _, _, _, budget, owner, _ = by_kpi["availability_by_path path=/api/checkout"]["cells"]
    assert (status, owner) == ("Missed", "web") and abs(percent(value) - 98.0) < 0.25
    status, _, _, value, _, _, _, budget, _, _ = by_kpi["availability_by_path path=/api/cart"]["cells"]
    assert (status, value, budget) == ("Met", "100.00%", "100%")
    status, _, _, value, _, _, target, budget, owner, _ = by_kpi["monthly_recurring_revenue"]["cells"]
    assert (status, value, target, budget, owner) == ("Met", f"{MRR:,}", "≥ 100,000", "n/a (value KPI)", "finance")

    # the report's period value is Prometheus's own traffic-weighted ratio over the same 30 seconds
    expected = stack.value('sum_over_time(kpi:numerator:rate5m{kpi="checkout_availability"}[29s999ms]) / '
                           'sum_over_time(kpi:denominator:rate5m{kpi="checkout_availability"}[29s999ms])', at)
    assert abs(float(by_kpi["checkout_availability"]["values"][3]) - expected) < 1e-9

    assert "This report is incomplete" not in text
    for heading in ("demo / checkout_availability", "demo / checkout_errors", "lower is better",
                    "demo / monthly_recurring_revenue", "Error budget remaining", "p99 checkout latency",
                    "checkouts per second by status", "shop health probe", "target ≥ 99.00%"):
        assert heading in text, heading
    image = Image.open(io.BytesIO(png))
    assert image.width >= 1200 and image.height >= 1500
    assert blank_share(png) < 0.9  # tables, text and charts, not an empty page
    assert colour_pixels(png, GREEN) > 300 and colour_pixels(png, RED) > 300  # met and missed, in colour
    charts = out.read_text().count('<svg class="chart"')
    assert charts == 10  # 4 KPI charts, 3 budget charts, 3 supporting metrics


async def test_a_kpi_without_data_is_said_plainly_and_exits_4(stack: Stack, chromium, tmp_path):
    out = tmp_path / "report.html"
    result = report(str(stack.shop_specs), str(stack.ghost_specs), "--prometheus.url", stack.prometheus,
                    "--period", PERIOD, "--out", str(out))
    assert result.returncode == 4, result.stderr
    assert ("ghost/login_availability: no data: the rules ran, but kpi:denominator:rate5m has no sample in the "
            "period; is ghost_logins_total scraped?") in result.stderr
    rows, errors, _, _, text = await open_in_browser(chromium, out.as_uri())
    assert errors == []
    ghost = next(row["cells"] for row in rows if row["cells"][2] == "login_availability")
    assert ghost[0] == "No data" and ghost[3] == "no data" and ghost[7] == "unknown"
    assert "0%" not in ghost[3] and ghost[3] != "0"
    assert "This report is incomplete" in text and "ghost/login_availability: no data" in text
    assert len(rows) == 6  # 5 rows of the shop (one KPI has two groups) and the ghost


async def test_a_fresh_install_says_when_its_data_begins_and_charts_what_there_is(stack: Stack, chromium, tmp_path):
    """Issue 19.6: the first 30-day report on a fresh install said its data began at the start of its 3-hour
    bucket and drew every chart as an empty field. It names the first sample's time, charts the stretch with
    data, and suggests a period the data covers."""
    at = time.time()
    out = tmp_path / "report.html"
    result = report(str(stack.shop_specs), "--prometheus.url", stack.prometheus, "--period", "30d",
                    "--at", rfc3339(at), "--out", str(out))
    assert result.returncode == 3, result.stderr
    problems = result.stderr.strip().splitlines()
    assert len(problems) == 4 and all("partial period: data only from" in p for p in problems), problems
    first = min(float(t) for series in stack.query('kpi:denominator:rate5m{kpi="checkout_availability"}[1h]', at)
                for t, _ in series["values"])
    stated = re.search(r"demo/checkout_availability: partial period: data only from (\S+ \S+) UTC, (\S+) of the 30d "
                       r"period; the charts show the \S+ with data; for a complete report use --period (\S+)",
                       result.stderr)
    assert stated, result.stderr
    begins = datetime.strptime(stated.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    assert abs(begins - first) < 1.5, (stated.group(1), rfc3339(first))  # the first sample, not its bucket
    assert stated.group(3) in ("1m", "2m", "3m", "5m")
    rows, errors, _, png, text = await open_in_browser(chromium, out.as_uri())
    assert errors == []
    assert "This report is incomplete" in text and "partial" in rows[0]["cells"][0]
    # the value charts draw the minutes with data: the lines are there, in their colour
    assert colour_pixels(png, BLUE) > 1500


async def test_unreachable_prometheus_is_stated_and_exits_5(chromium, tmp_path):
    out = tmp_path / "report.html"
    url = f"http://127.0.0.1:{free_port()}"
    specs = Path(__file__).parents[2] / "rules"
    result = report(str(specs), "--prometheus.url", url, "--out", str(out))
    assert result.returncode == 5
    assert f"Prometheus could not be reached, so no KPI has a value: cannot reach Prometheus at {url}" in result.stderr
    rows, errors, _, _, text = await open_in_browser(chromium, out.as_uri())
    assert errors == []
    kpis = sum(len(load_spec(path).kpis) for path in sorted(specs.glob("*.yaml")))
    assert [row["cells"][0] for row in rows] == ["Error"] * kpis
    assert all(row["cells"][3] == "unknown" and row["values"][3] is None for row in rows)
    assert f"cannot reach Prometheus at {url}" in text


def test_credentials_in_the_url_log_in_and_are_never_shown(prometheus_bin, tmp_path):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  reporter: {hashed}\n")
    (tmp_path / "prometheus.yml").write_text("global: {scrape_interval: 1m}\n")
    port = free_port()
    server = subprocess.Popen([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--web.config.file={tmp_path / 'web.yml'}", f"--storage.tsdb.path={tmp_path / 'db'}",
                               f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: fetch(f"http://127.0.0.1:{port}/-/ready")[0] == 401, 30, what="Prometheus up")
        specs, out = str(Path(__file__).parents[2] / "rules"), tmp_path / "report.html"
        refused = report(specs, "--prometheus.url", f"http://127.0.0.1:{port}", "--out", str(out))
        assert refused.returncode == 5 and "answered HTTP 401" in refused.stderr
        logged_in = report(specs, "--prometheus.url", f"http://reporter:s3cret@127.0.0.1:{port}", "--out", str(out))
        # an empty Prometheus: every KPI without data, for the reason that the rules are not loaded
        assert logged_in.returncode == 4, logged_in.stderr
        assert "are the rules generated from" in logged_in.stderr
        page = out.read_text()
        assert f"Prometheus http://127.0.0.1:{port} " in page  # the URL without its credentials
        assert "s3cret" not in page + logged_in.stderr + logged_in.stdout + refused.stderr
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_the_pdf_is_printed_from_the_same_page(stack: Stack, chromium, tmp_path):
    out = tmp_path / "report.pdf"
    result = report(str(stack.shop_specs), "--prometheus.url", stack.prometheus, "--period", PERIOD,
                    "--out", str(out), "--chromium", chromium)
    assert result.returncode == 0, result.stderr
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))
    assert 2 <= pages <= 6, pages
    assert re.search(rb"/MediaBox \[0 0 841\.9\d* 594\.9\d*\]", pdf)  # A4 landscape, from the page's @page rule
    assert b"/Title (KPI report: demo, 30s to " in pdf


def test_bad_arguments_fail_before_anything_is_written(stack: Stack, tmp_path):
    out = tmp_path / "report.html"
    bad_time = report(str(stack.shop_specs), "--prometheus.url", stack.prometheus, "--at", "yesterday",
                      "--out", str(out))
    assert bad_time.returncode == 2 and "'yesterday' is neither RFC 3339" in bad_time.stderr
    bad_period = report(str(stack.shop_specs), "--prometheus.url", stack.prometheus, "--period", "a month",
                        "--out", str(out))
    assert bad_period.returncode == 2 and "'a month' is not a period: use a duration" in bad_period.stderr
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text("service: x\nkpis:\n  - name: a\n    window: 1h\n    target: 2\n    value: up\n"
                        "    supporting_metrics: [{title: t, query: up, unit: furlongs}]\n")
    invalid = report(str(bad_spec), "--prometheus.url", stack.prometheus, "--out", str(out))
    assert invalid.returncode == 1
    assert f"{bad_spec}:7: kpis[0].supporting_metrics[0].unit: 'furlongs' is not one of" in invalid.stderr
    assert not out.exists()


def test_the_agent_does_not_load_the_plotting_library():
    """`kpi-agent run` imports the command line, which registers `report` and `ui`: the report's libraries
    (plotting, the goals' statistics, cron, recurrence rules) must stay out."""
    probe = ("import sys, agent.cli, agent.cli.run; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
             "('matplotlib', 'numpy', 'PIL', 'statsmodels', 'scipy', 'pandas', 'cronsim', 'dateutil')); "
             "print(heavy)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout
