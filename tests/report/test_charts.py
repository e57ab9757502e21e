"""Charts are SVG a page can inline: unique ids, the spec's words as text, the same bytes for the same data."""

import re

from agent.kpi.model import SupportingMetric
from agent.report import charts
from agent.report.grid import plan_period
from agent.report.model import Chart

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


def test_the_target_is_a_legend_entry_that_cannot_meet_the_legend():
    """Issue 19.6: the target's label sat at the end of its line and met the legend when the target was near the
    top of the plot. It is an entry of the legend, laid out with the others on one row beside the title."""
    from agent.config.yaml import load_text
    from agent.kpi.spec.document import parse_spec
    from agent.report.judging import ratio_line
    from agent.report.model import KpiResult

    spec, _ = parse_spec(load_text("service: s\nkpis:\n  - {name: a, window: 30d, target: 99%, ratio: "
                                   "{numerator: good, denominator: all}}\n", "s.yaml"), "s.yaml")
    assert spec is not None
    kpi = spec.kpis[0]
    near_the_top = ratio_line(kpi, {}, [0.985] * PERIOD.buckets, [1.0] * PERIOD.buckets)
    svg = charts.kpi_chart(KpiResult(spec, kpi, (near_the_top,)), PERIOD)
    entries = re.findall(r'<g transform="translate\(([\d.]+),([\d.]+)\)">.*?<text[^>]*>([^<]*)</text></g>', svg)
    assert [text for _, _, text in entries] == ["each 1m", "since period start", "target ≥ 99.00%"]
    assert svg.count("target ≥ 99.00%") == 1
    rows = {float(y) for _, y, _ in entries}
    assert len(rows) == 1 and rows.pop() < charts.TOP  # one row, above the plot
    lefts = [float(x) for x, _, _ in entries]
    assert lefts == sorted(lefts) and lefts[-1] + 20 + 9.5 * charts.CHAR * len("target ≥ 99.00%") <= charts.WIDE
