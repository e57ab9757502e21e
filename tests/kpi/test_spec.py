"""Spec validation: every mistake named by file, line and field."""

import pytest

from agent.config.problems import ConfigError
from agent.config.yaml import load_text
from agent.kpi.selectors import parse_selector
from agent.kpi.spec.document import parse_spec
from agent.kpi.windows import scaled_tiers
from tests.kpi.helpers import load_spec

GOOD = """\
service: shop
labels: {team: payments}
kpis:
  - name: availability
    window: 30d
    target: 99.9%
    ratio:
      numerator: http_requests_total{job="shop",status!~"5.."}
      denominator: http_requests_total{job="shop"}
"""


def problems(text: str) -> list[str]:
    spec, report = parse_spec(load_text(text, "spec.yaml"), "spec.yaml")
    return [str(p) for p in report.problems]


def test_a_good_spec_loads_with_defaults(tmp_path):
    path = tmp_path / "shop.yaml"
    path.write_text(GOOD)
    spec = load_spec(path)
    (kpi,) = spec.kpis
    assert (kpi.target, kpi.window, kpi.higher_is_better, kpi.alerting.strategy) == (0.999, 30 * 86400, True,
                                                                                    "burn_rate")
    assert abs(kpi.error_budget - 0.001) < 1e-12
    assert [t.severity for t in kpi.alerting.tiers] == ["page", "ticket"]
    # absent metrics: a KPI that cannot see is reported in 10m (Pyrra: ~15m); no traffic at all: after the page
    # tier's long window, when a total outage would already have paged
    assert kpi.alerting.no_data is not None
    assert (kpi.alerting.no_data.for_, kpi.alerting.no_data.no_traffic_for) == (600, 3600)


def test_errors_name_file_line_and_field():
    found = problems(
        "service: shop\n"
        "kpis:\n"
        "  - name: Bad-Name\n"
        "    window: 10x\n"
        "    target: 150%\n"
        "    ratio:\n"
        "      numerator: 'rate(x[5m])'\n"
        "      denominator: y\n"
        "    colour: red\n"
        "  - name: ok\n"
        "    window: 7d\n"
        "    target: 99%\n"
        "    value: sum(x)\n"
        "    ratio: {numerator: a, denominator: b}\n")
    assert "spec.yaml:3: kpis[0].name: 'Bad-Name' must match [a-z][a-z0-9_]*" in found
    assert any(p.startswith("spec.yaml:4: kpis[0].window: '10x' is not a duration") for p in found)
    assert any(p.startswith("spec.yaml:7: kpis[0].ratio.numerator: 'rate(x[5m])' is not a selector") for p in found)
    assert "spec.yaml:9: kpis[0].colour: unknown field" in found
    assert "spec.yaml:10: kpis[1]: give exactly one of ratio, latency, bool_gauge or value (got ratio, value)" in found


def test_targets_percent_or_fraction_and_range():
    assert problems(GOOD.replace("99.9%", "0.999")) == []
    assert problems(GOOD.replace("99.9%", "1.5")) == [
        "spec.yaml:6: kpis[0].target: a ratio target must be between 0 and 1 (0% and 100%) exclusive, got 1.5"]
    assert problems(GOOD.replace("99.9%", "lots%")) == ["spec.yaml:6: kpis[0].target: 'lots%' is not a percentage"]


def test_duplicate_kpi_names_are_rejected():
    found = problems(GOOD + GOOD.split("kpis:\n")[1])
    assert found == ["spec.yaml:10: kpis[1].name: 'availability' is already defined on line 4"]


def test_a_burn_rate_tier_that_can_never_fire_is_an_error_suggesting_threshold():
    found = problems(GOOD.replace("99.9%", "90%"))
    assert len(found) == 1
    assert found[0].startswith("spec.yaml:4: kpis[0].alerting: the page tier can never fire: a burn rate of 14.4x")
    assert "use strategy: threshold" in found[0]
    conversion = GOOD.replace("99.9%", "3%") + "    alerting: {strategy: threshold, window: 1h, for: 30m}\n"
    assert problems(conversion) == []
    only_ticket = GOOD.replace("99.9%", "90%") + "    alerting: {page: false}\n"
    assert problems(only_ticket) == []


def test_lower_is_better_budget_is_the_target():
    spec, _ = parse_spec(load_text(GOOD.replace("99.9%", "1%") + "    higher_is_better: false\n", "s"), "s")
    assert spec.kpis[0].error_budget == 0.01


def test_raw_queries_need_a_window_placeholder():
    text = GOOD.replace('numerator: http_requests_total{job="shop",status!~"5.."}',
                        "numerator_query: sum(rate(x[5m]))")
    assert any("must contain {{window}}" in p for p in problems(text))


def test_selector_parsing():
    selector = parse_selector('http_requests_total{job="shop", status!~"5..",path=~"/a|/b"}')
    assert selector.metric == "http_requests_total"
    assert [(m.label, m.op, m.value) for m in selector.matchers] == [
        ("job", "=", "shop"), ("status", "!~", "5.."), ("path", "=~", "/a|/b")]
    assert selector.matchers[1].matches("200") and not selector.matchers[1].matches("503")
    with pytest.raises(ValueError, match="does not compile"):
        parse_selector('x{a=~"("}')


def test_tiers_scale_with_the_window_keeping_the_share_of_budget():
    thirty = scaled_tiers(30 * 86400)
    assert [(w.long, w.short, w.factor) for w in thirty["page"]] == [(3600, 300, 14.4), (21600, 1800, 6.0)]
    assert [(w.long, w.short, w.factor) for w in thirty["ticket"]] == [(86400, 7200, 3.0), (259200, 21600, 1.0)]
    seven = scaled_tiers(7 * 86400)
    # 2% of a 7d budget in 14m burns at 14.4x, as 2% of a 30d budget in 1h does; windows are rounded to whole
    # 5m (15m) so that they are sums of the recorded 5m rates, not extra reads of raw series
    assert seven["page"][0].long == 900 and seven["page"][0].factor == 14.4
    assert all(w.short >= 300 and w.short % 300 == 0 and w.long % 300 == 0 for tier in seven.values() for w in tier)


def test_load_spec_raises_with_every_problem(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("service: x\nkpis: []\nextra: 1\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    text = str(info.value)
    assert f"{path}:2: kpis: is required" in text or f"{path}:1: kpis: is required" in text
    assert f"{path}:3: extra: unknown field" in text


def kpi_of(text: str):
    spec, report = parse_spec(load_text(text, "spec.yaml"), "spec.yaml")
    assert report.errors == [], [str(p) for p in report.errors]
    return spec.kpis[0]


def test_latency_shorthand_reads_the_bucket_under_the_bound_over_the_count():
    kpi = kpi_of("service: s\nkpis:\n  - name: fast\n    window: 30d\n    target: 99%\n    latency:\n"
                 "      histogram: http_request_duration_seconds{job=\"shop\"}\n      le: 0.25\n")
    assert kpi.indicator == "latency"
    assert kpi.numerator.selector.text == 'http_request_duration_seconds_bucket{job="shop",le="0.25"}'
    assert kpi.denominator.selector.text == 'http_request_duration_seconds_count{job="shop"}'
    whole = kpi_of("service: s\nkpis:\n  - name: fast\n    window: 30d\n    target: 99%\n    latency:\n"
                   "      histogram: rpc_seconds\n      le: 1\n")
    # Go clients write the bound 1 as "1", Python's as "1.0": both match
    assert whole.numerator.selector.text == 'rpc_seconds_bucket{le=~"1\\\\.0|1"}'
    le = whole.numerator.selector.matchers[-1]
    assert le.matches("1") and le.matches("1.0") and not le.matches("10")


def test_latency_mistakes_are_named():
    base = "service: s\nkpis:\n  - name: fast\n    window: 30d\n    target: 99%\n"
    assert problems(base + "    latency: {histogram: x_seconds_bucket, le: 0.5}\n") == [
        "spec.yaml:6: kpis[0].latency.histogram: give the histogram's name without its suffix: x_seconds"]
    assert problems(base + "    latency: {histogram: 'x_seconds{le=\"0.5\"}', le: 0.5}\n") == [
        "spec.yaml:6: kpis[0].latency.histogram: set the bound with le: <seconds>, not in the selector"]
    assert problems(base + "    latency: {histogram: x_seconds, le: -1}\n") == [
        "spec.yaml:6: kpis[0].latency.le: a bucket bound must be a positive number, got -1"]
    assert ("spec.yaml:7: kpis[0].latency: counts requests at most `le` seconds long: higher is better "
            "(remove higher_is_better: false)") in problems(base + "    higher_is_better: false\n"
                                                             "    latency: {histogram: x_seconds, le: 1}\n")


def test_bool_gauge_and_bad_events_and_per_kpi_labels():
    gauge = kpi_of("service: s\nkpis:\n  - name: up\n    window: 30d\n    target: 99.5%\n"
                   "    bool_gauge: probe_success{target=\"home\"}\n    labels: {component: web}\n")
    assert gauge.indicator == "bool_gauge" and gauge.gauge.text == 'probe_success{target="home"}'
    assert gauge.labels == {"component": "web"}
    bad = kpi_of(GOOD.replace('numerator: http_requests_total{job="shop",status!~"5.."}',
                              'bad: http_requests_total{job="shop",status=~"5.."}'))
    assert bad.bad.selector.text == 'http_requests_total{job="shop",status=~"5.."}' and bad.numerator is None
    assert not bad.fills_missing_good_events  # no failed-events series means nothing failed
    found = problems(GOOD.replace('numerator: http_requests_total{job="shop",status!~"5.."}',
                                  'bad: http_requests_total{job="shop",status=~"5.."}')
                     + "    higher_is_better: false\n    labels: {kpi_severity: x, team: y}\n"
                       "    group_by: [team, kpi_term]\n")
    assert any("kpis[0].ratio.bad: bad events make the good ratio" in p for p in found)
    assert "spec.yaml:11: kpis[0].labels: 'kpi_severity' is set by the compiler" in found
    assert "spec.yaml:12: kpis[0].group_by: 'team' is also a static label of the KPI" in found
    assert "spec.yaml:12: kpis[0].group_by: 'kpi_term' is reserved" in found


def test_alert_windows_and_factors_per_kpi_are_validated():
    custom = GOOD + ("    alerting:\n      page:\n        windows:\n          - {long: 30m, short: 2m, factor: 20}\n"
                     "        for: 1m\n      ticket: false\n")
    kpi = kpi_of(custom)
    (page,) = kpi.alerting.tiers
    assert [(w.long, w.short, w.factor) for w in page.windows] == [(1800, 120, 20)] and page.for_ == 60
    found = problems(GOOD + ("    alerting:\n      page:\n        windows:\n"
                             "          - {long: 1h, short: 1h, factor: 14.4}\n"
                             "          - {long: 1h, short: 90s, factor: 2}\n"
                             "          - {long: 40d, short: 1h, factor: 2}\n"
                             "          - {long: 6h, short: 30m, factor: 0}\n"))
    assert "spec.yaml:13: kpis[0].alerting.page.windows[0].short: must be shorter than long (1h)" in found
    assert "spec.yaml:14: kpis[0].alerting.page.windows[1].short: '90s': alert windows are whole minutes, at least 1m" \
        in found
    assert "spec.yaml:15: kpis[0].alerting.page.windows[2].long: is longer than the KPI's window (30d)" in found
    assert "spec.yaml:16: kpis[0].alerting.page.windows[3].factor: a burn factor must be greater than zero, got 0" \
        in found
    # a tier that cannot fire is still an error, pointing at the windows that were given
    never = problems(GOOD.replace("99.9%", "95%") + ("    alerting:\n      page:\n        windows:\n"
                                                     "          - {long: 1h, short: 5m, factor: 25}\n"))
    assert len(never) == 1 and never[0].startswith(
        "spec.yaml:12: kpis[0].alerting.page.windows: the page tier can never fire: a burn rate of 25x over 1h")


def test_strategy_specific_options_are_refused_elsewhere():
    found = problems(GOOD + "    alerting: {severity: page, min_bad_events: 3}\n")
    assert found == ["spec.yaml:10: kpis[0].alerting.severity: applies to threshold alerting; burn_rate windows and "
                     "severities come from its tiers"]
    found = problems(GOOD.replace("99.9%", "3%") + "    alerting: {strategy: threshold, min_bad_events: 3}\n")
    assert found == ["spec.yaml:10: kpis[0].alerting.min_bad_events: applies to burn_rate alerting"]
    assert problems(GOOD.replace("window: 30d", "window: 1h1m")) == [
        "spec.yaml:5: kpis[0].window: must be a whole number of 5m (it is summed from recorded 5m rates)"]
