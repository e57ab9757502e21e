"""Units of supporting metrics: one vocabulary in specs, Grafana's ids on dashboards, readable numbers in reports."""

from agent.config.yaml import load_text
from agent.kpi.spec.document import parse_spec
from agent.kpi.units import GRAFANA_UNITS, UNITS, format_value

SPEC = """\
service: shop
kpis:
  - name: availability
    window: 30d
    target: 99.9%
    ratio: {numerator: 'requests_total{code!~"5.."}', denominator: requests_total}
    supporting_metrics:
      - {title: Latency, query: "histogram_quantile(0.99, sum by (le) (rate(latency_seconds_bucket[5m])))", unit: UNIT}
"""


def parse(unit: str):
    return parse_spec(load_text(SPEC.replace("UNIT", unit), "shop.yaml"), "shop.yaml")


def test_a_supporting_metric_takes_a_unit_and_defaults_to_short():
    spec, report = parse("seconds")
    assert report.errors == [] and spec.kpis[0].supporting_metrics[0].unit == "seconds"
    spec, report = parse_spec(load_text(SPEC.replace(", unit: UNIT", ""), "s.yaml"), "s.yaml")
    assert spec.kpis[0].supporting_metrics[0].unit == "short"


def test_an_unknown_unit_names_file_line_and_field_and_the_choices():
    _, report = parse("milliseconds")
    (problem,) = [str(p) for p in report.errors]
    assert problem.startswith("shop.yaml:8: kpis[0].supporting_metrics[0].unit:"), problem
    assert "'milliseconds' is not one of: " + ", ".join(UNITS) in problem


def test_every_unit_has_a_grafana_id_and_reads_well():
    assert set(GRAFANA_UNITS) == set(UNITS)
    cases = [(0.0123, "seconds", "12.3 ms"), (95, "seconds", "1.58 min"), (0, "seconds", "0 s"),
             (1536, "bytes", "1.5 KiB"), (3 * 1024**3, "bytes", "3 GiB"), (0.995, "ratio", "99.5%"),
             (-0.5, "ratio", "-50%"), (12.5, "percent", "12.5%"), (23.4, "per_second", "23.4/s"),
             (2500, "per_second", "2.5k/s"), (2 * 1024**2, "bytes_per_second", "2 MiB/s"), (123456, "short", "123k"),
             (0.5, "short", "0.5")]
    assert [(value, unit, format_value(value, unit)) for value, unit, _ in cases] == cases
