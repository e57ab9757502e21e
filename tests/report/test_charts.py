"""Charts are SVG a page can inline: unique ids, the spec's words as text, the same bytes for the same data."""

import re

from agent.kpi.model import SupportingMetric
from agent.report import charts
from agent.report.model import Chart, plan_period

PERIOD = plan_period(3600, 1_800_000_000.0, 60)


def chart(title: str, unit: str = "seconds", prefix: str = "a") -> str:
    values = tuple(0.01 * (i % 7) for i in range(PERIOD.buckets))
    times = tuple(PERIOD.bucket_end(i) for i in range(PERIOD.buckets))
    return charts.supporting_chart(Chart(SupportingMetric(title, "up", unit), (({"job": "x"}, values),), times=times),
                                   PERIOD, prefix)


def test_titles_are_text_never_markup_or_tex():
    svg = chart("Revenue in $ per $day <b>&</b>")
    assert "Revenue in $ per $day &lt;b&gt;&amp;&lt;/b&gt;" in svg
    assert svg.startswith('<svg class="chart" role="img" aria-label="Revenue in $ per $day &lt;b&gt;&amp;&lt;/b&gt;"')


def test_the_same_data_gives_the_same_svg_and_two_charts_share_no_id():
    first, second = chart("p99", prefix="a"), chart("p99", prefix="b")
    assert chart("p99", prefix="a") == first
    ids = set(re.findall(r'id="([^"]+)"', first)) & set(re.findall(r'id="([^"]+)"', second))
    assert ids == set()


def test_the_axis_speaks_the_unit():
    svg = chart("latency", "seconds")
    assert "60 ms" in svg and "0 s" in svg
    assert "%" in chart("share", "ratio")


def test_a_large_report_drawn_by_several_processes_is_the_same_page():
    from agent.config.yaml import load_text
    from agent.kpi.spec import parse_spec
    from agent.report.model import KpiResult, Report, ratio_line
    from agent.report.render import PARALLEL_FROM, render

    text = "service: s\nkpis:\n" + "".join(
        f"  - {{name: k{i}, window: 30d, target: 99%, ratio: {{numerator: good, denominator: all}}}}\n"
        for i in range(PARALLEL_FROM))
    spec, _ = parse_spec(load_text(text, "s.yaml"), "s.yaml")
    assert spec is not None
    results = tuple(KpiResult(spec, kpi, (ratio_line(kpi, {}, [0.99 * (i + 1)] * PERIOD.buckets,
                                                     [1.0 * (i + 1)] * PERIOD.buckets),))
                    for i, kpi in enumerate(spec.kpis))
    report = Report(PERIOD, "http://prometheus", 1_800_000_000.0, results)
    assert render(report, workers=2) == render(report, workers=1)
