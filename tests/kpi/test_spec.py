"""Spec validation: every mistake named by file, line and field."""

import pytest

from agent import yamlsrc
from agent.kpi.spec import load_spec, parse_selector, parse_spec, scaled_tiers
from agent.yamlsrc import ConfigError

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
    spec, report = parse_spec(yamlsrc.load_text(text, "spec.yaml"), "spec.yaml")
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
    assert kpi.alerting.no_data is not None and kpi.alerting.no_data.for_ == 3600


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
    assert "spec.yaml:10: kpis[1]: give exactly one of ratio or value" in found


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
    spec, _ = parse_spec(yamlsrc.load_text(GOOD.replace("99.9%", "1%") + "    higher_is_better: false\n", "s"), "s")
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
    # 2% of a 7d budget in 14m burns at 14.4x, as 2% of a 30d budget in 1h does.
    assert seven["page"][0].long == 840 and seven["page"][0].factor == 14.4
    assert all(w.short >= 300 for tier in seven.values() for w in tier)


def test_load_spec_raises_with_every_problem(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("service: x\nkpis: []\nextra: 1\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    text = str(info.value)
    assert f"{path}:2: kpis: is required" in text or f"{path}:1: kpis: is required" in text
    assert f"{path}:3: extra: unknown field" in text
