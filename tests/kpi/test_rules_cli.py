"""`kpi-agent rules check|generate|test` as a user runs them."""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.kpi.helpers import generate_tests, load_spec

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "agent", "rules"]


def rules(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_check_accepts_the_examples(promtool):
    result = rules("check", str(ROOT / "rules"))
    assert result.returncode == 0, result.stderr
    assert "KPI(s): OK" in result.stdout


def test_check_maps_promql_errors_to_file_line_field(promtool, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("service: s\nkpis:\n  - name: k\n    window: 30d\n    target: 99%\n    ratio:\n"
                    "      numerator: a_total\n      denominator: b_total\n    supporting_metrics:\n"
                    "      - title: broken\n        query: sum(rate(x[5m])\n")
    result = rules("check", str(spec))
    assert result.returncode == 1
    assert f"{spec}:11: kpis[0].supporting_metrics[0].query: PromQL does not parse:" in result.stderr


def test_check_warns_about_metrics_the_agent_does_not_produce(promtool, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("http:\n  - name: shop\n    url: http://127.0.0.1:1/\n    json_metrics:\n"
                      "      - {name: shop_orders_total, type: counter, path: $.a}\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("service: s\nkpis:\n  - name: k\n    window: 7d\n    target: 3%\n    ratio:\n"
                    "      numerator: shop_orders_total\n      denominator: shop_checkouts_started_total\n"
                    "    alerting: {strategy: threshold}\n"
                    "  - name: probes\n    window: 30d\n    target: 99%\n    ratio:\n"
                    "      numerator: probes_total{result=\"success\"}\n      denominator: probes_total\n")
    result = rules("check", str(spec), "--config.file", str(config))
    assert result.returncode == 0, result.stderr
    assert (f"{spec}:8: warning: kpis[0].ratio.denominator: shop_checkouts_started_total is not produced by the "
            f"agent config") in result.stderr
    assert "shop_orders_total is not" not in result.stderr and "probes_total is not" not in result.stderr


def test_generate_writes_one_file_per_spec_in_both_formats(promtool, tmp_path):
    result = rules("generate", str(ROOT / "rules"), "--out", str(tmp_path / "prom"))
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "prom").iterdir())
    assert [f.name for f in files] == sorted(f"{yaml.safe_load(p.read_text())['service']}.rules.yml"
                                             for p in (ROOT / "rules").glob("*.yaml"))
    checked = subprocess.run([promtool, "check", "rules", *map(str, files)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = rules("generate", str(ROOT / "rules"), "--out", str(tmp_path / "again"))
    assert again.returncode == 0
    assert all(f.read_bytes() == (tmp_path / "again" / f.name).read_bytes() for f in files)
    operator = rules("generate", str(ROOT / "rules"), "--out", str(tmp_path / "op"), "--format", "prometheus-operator")
    assert operator.returncode == 0
    document = yaml.safe_load(next((tmp_path / "op").iterdir()).read_text())
    assert document["kind"] == "PrometheusRule" and document["spec"]["groups"]


def test_generate_refuses_a_bad_spec(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("service: s\nkpis:\n  - name: k\n    window: 30d\n    target: 90%\n"
                    "    ratio: {numerator: a_total, denominator: b_total}\n")
    result = rules("generate", str(spec), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert f"{spec}:3: kpis[0].alerting: the page tier can never fire" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_rules_test_passes_on_every_example_and_shows_each_result(promtool, tmp_path):
    result = rules("test", str(ROOT / "rules"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    generated = sorted(tmp_path.glob("*/*.test.yml"))
    assert generated and all(yaml.safe_load(p.read_text())["tests"] for p in generated)
    lines = result.stdout.splitlines()
    assert lines[0] == f"{len(generated)} promtool tests of 4 KPI(s), {os.cpu_count()} at a time"
    progress = [line for line in lines if line.startswith("[")]
    assert [line.split("]")[0] for line in progress] == [f"[{i:{len(str(len(generated)))}}/{len(generated)}"
                                                          for i in range(1, len(generated) + 1)]
    assert all(" ok " in line for line in progress)
    assert any("checkout_availability: ticket tier, 1x over 3d/6h: a 2x burn after 3d healthy: no ticket at 1d6h, "
               "ticket at 1d18h, no ticket 6h after it ends (rules every 6h)" in line for line in progress)
    assert re.fullmatch(rf"{len(generated)} passed, 0 failed in [0-9.]+s", lines[-1])


SHAPES = """\
service: shapes
kpis:
  - name: errors_7d              # lower is better, a scaled 7d tier with 'for', every window evaluated every 5m
    window: 7d
    target: 2%
    higher_is_better: false
    ratio: {numerator: rpc_errors_total, denominator: rpc_calls_total}
    alerting: {page: {for: 10m}}
  - name: custom_pairs           # windows read from raw series (2m, 7m), min_bad_events, failed events counted
    window: 30d
    target: 99%
    ratio: {bad: 'jobs_total{result="failed"}', denominator: jobs_total}
    alerting:
      min_bad_events: 20
      page: {windows: [{long: 10m, short: 2m, factor: 20}, {long: 2h, short: 7m, factor: 8}]}
      ticket: false
  - name: probe_up               # a 0/1 gauge, by instance, with min_bad_events
    window: 30d
    target: 99%
    bool_gauge: probe_success{job="probe"}
    group_by: [instance]
    alerting: {min_bad_events: 3, ticket: false}
  - name: error_ratio            # threshold, lower is better, with 'for'
    window: 7d
    target: 5%
    higher_is_better: false
    ratio: {numerator: rpc_errors_total, denominator: rpc_calls_total}
    alerting: {strategy: threshold, window: 30m, for: 15m}
  - name: success_ratio          # threshold, a high target
    window: 30d
    target: 99.5%
    ratio: {numerator: 'jobs_total{result="ok"}', denominator: jobs_total}
    alerting: {strategy: threshold, window: 2h}
"""


@pytest.mark.slow
def test_rules_test_passes_on_kpis_of_every_shape(promtool, tmp_path):
    """The generated tests hold for windows evaluated every 5m or every minute, raw windows, `for`, guards,
    gauges and thresholds, not only for the examples' shapes."""
    (tmp_path / "shapes.yaml").write_text(SHAPES)
    result = rules("test", str(tmp_path / "shapes.yaml"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    progress = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert any("custom_pairs: page tier, 20x over 10m/2m: a 40x burn after 2h healthy: no page at 4m, page at 6m, "
               "no page 2m after it ends (rules every 1m)" in line for line in progress)
    assert any("error_ratio: threshold, at most 5% over 30m for 15m: the ratio from 4.5% to 5.5% after 30m: "
               "no KPIAboveTarget at 25m, KPIAboveTarget at 35m (rules every 5m)" in line for line in progress)
    assert "note:" not in result.stderr


def test_generated_tests_cost_a_fifteenth_of_what_they_did():
    """promtool evaluates every loaded rule at every evaluation: rules x evaluations is what `rules test` costs.
    The examples' cases cost 1,041,188 rule evaluations when they took 4-9 minutes, then 438,525 (each loaded
    only its KPI's rates and alerts; 3-day histories evaluated every 5m), now 24,596: each window pair has one
    history, evaluated once per short window where that counts every window exactly (a 3-day window in 20
    evaluations)."""
    from agent.kpi.promtest import kpi_cases, kpi_rules

    spec = load_spec(ROOT / "rules" / "shop.yaml")
    cost = 0
    for kpi in spec.kpis:
        loaded = yaml.safe_load(kpi_rules(spec, kpi))
        rules_loaded = sum(len(group["rules"]) for group in loaded["groups"])
        cases = kpi_cases(spec, kpi)[0]
        cost += sum(case.evaluations for case in cases) * rules_loaded
        pairs = [f"{tier.severity} tier, {w.factor:g}x over" for tier in kpi.alerting.tiers for w in tier.windows]
        assert [case.name.split(": ")[1].split(" over")[0] + " over" for case in cases if " tier, " in case.name] \
            == pairs, kpi.name
        assert all(case.evaluations <= 100 for case in cases), kpi.name
    assert cost < 438_525 / 15, cost


# Rules a compiler with one mistake would write, as edits of the right ones (checkout_availability): each must
# fail at least one generated test. A ticket 1d/2h factor set too high cannot be seen from outside: whenever that
# pair would fire, the 3d/6h pair (1x) fires too, as the Workbook's factors make it.
BROKEN = {
    "page 1h factor 144": ("> 14.4", "> 144"),
    "page 1h factor 1.44": ("> 14.4", "> 1.44"),
    "page 6h factor 60": ("> 6 ", "> 60 "),
    "ticket 1d factor 0.3": ("> 3 ", "> 0.3 "),
    "ticket 3d factor 10": ("> 1 ", "> 10 "),
    "ticket 3d factor 0.1": ("> 1 ", "> 0.1 "),
    "page 1h pair reads 30m": ("kpi:burn_rate:rate1h{{{id}}} > 14.4", "kpi:burn_rate:rate30m{{{id}}} > 14.4"),
    "page 6h pair reads 1h": ("kpi:burn_rate:rate6h{{{id}}} > 6", "kpi:burn_rate:rate1h{{{id}}} > 6"),
    "ticket 1d pair reads 6h": ("kpi:burn_rate:rate1d{{{id}}} > 3", "kpi:burn_rate:rate6h{{{id}}} > 3"),
    "ticket 3d pair reads 1d": ("kpi:burn_rate:rate3d{{{id}}} > 1", "kpi:burn_rate:rate1d{{{id}}} > 1"),
    "page 6h pair without its 30m window": (" and kpi:burn_rate:rate30m{{{id}}} > 6", ""),
    "ticket 3d pair without its 6h window": (" and kpi:burn_rate:rate6h{{{id}}} > 1", ""),
    "3d window one day short": ("\n        or\n          label_replace(last_over_time("
                                "kpi:{side}:rate1d{{{id}}}[29s999ms] offset 2d), \"kpi_term\", \"2\", \"\", \"\")", ""),
}


@pytest.mark.slow
def test_generated_tests_catch_each_broken_threshold_and_window(promtool, tmp_path):
    """Break one window pair's factor or window at a time: the generated tests of its tier must notice each."""
    from agent.kpi.model import ServiceSpec
    from agent.kpi.render import render_prometheus

    shop = load_spec(ROOT / "rules" / "shop.yaml")
    spec = ServiceSpec(shop.file, shop.service, tuple(k for k in shop.kpis if k.name == "checkout_availability"))
    files, _ = generate_tests(spec, "rules.yml")
    tier_cases = [text for text in files.values() if " tier, " in text]
    assert len(tier_cases) == 4
    rules_text = render_prometheus(spec, "shop.yaml")
    identity = 'kpi="checkout_availability",kpi_service="shop"'
    variants = {"intact": rules_text}
    for name, (old, new) in BROKEN.items():
        broken = rules_text
        for side in ("numerator", "denominator") if "{side}" in old else ("",):
            old_text, new_text = old.format(id=identity, side=side), new.format(id=identity, side=side)
            assert old_text in broken, name
            broken = broken.replace(old_text, new_text)
        variants[name] = broken
    assert len(set(variants.values())) == len(variants)

    def run(name: str) -> subprocess.CompletedProcess:
        directory = tmp_path / name.replace(" ", "-")
        directory.mkdir()
        for index, text in enumerate(tier_cases):
            (directory / f"tier{index}.test.yml").write_text(text)
        (directory / "rules.yml").write_text(variants[name])
        return subprocess.run([promtool, "test", "rules", *(f"tier{i}.test.yml" for i in range(len(tier_cases)))],
                              cwd=directory, capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # independent promtool runs, at once
        results = dict(zip(variants, pool.map(run, variants), strict=True))
    intact = results.pop("intact")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    missed = [name for name, result in results.items()
              if result.returncode != 1 or "FAILED" not in result.stdout + result.stderr]
    assert not missed


def test_strict_turns_warnings_into_errors_and_value_kpis_are_cross_checked(promtool, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text("http:\n  - name: shop\n    url: http://127.0.0.1:1/\n    json_metrics:\n"
                      "      - {name: shop_mrr_dollars, type: gauge, path: $.a}\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("service: s\nkpis:\n  - name: mrr\n    window: 30d\n    target: 100\n"
                    "    value: sum(shop_mrr_dollars) + sum(shop_arr_dollars) / 12\n")
    relaxed = rules("check", str(spec), "--config.file", str(config))
    warning = (f"{spec}:6: warning: kpis[0].value: shop_arr_dollars is not produced by the agent config {config} "
               "(fine if another exporter provides it)")
    assert relaxed.returncode == 0 and warning in relaxed.stderr
    assert "shop_mrr_dollars is not" not in relaxed.stderr
    strict = rules("check", str(spec), "--config.file", str(config), "--strict")
    assert strict.returncode == 1 and warning in strict.stderr and "OK" not in strict.stdout


def test_a_directory_without_specs_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = rules("check", str(tmp_path / "empty"))
    assert result.returncode == 1
    assert f"{tmp_path / 'empty'}: no KPI spec (*.yaml, *.yml) in this directory" in result.stderr


def test_generate_refuses_an_interval_that_does_not_divide_5m(tmp_path):
    result = rules("generate", str(ROOT / "rules"), "--out", str(tmp_path), "--interval", "45s")
    assert result.returncode == 2 and "must divide 5m" in result.stderr


SPEC = "service: {service}\nkpis:\n  - name: k\n    window: 30d\n    target: 99%\n" \
       "    ratio: {{numerator: 'a_total{{code=\"200\"}}', denominator: a_total}}\n"


def test_generate_removes_the_files_it_generated_that_no_spec_produces_and_never_a_persons(promtool, tmp_path):
    specs, out, elsewhere = tmp_path / "rules", tmp_path / "out", tmp_path / "other"
    specs.mkdir()
    elsewhere.mkdir()
    (specs / "shop.yaml").write_text(SPEC.format(service="shop"))
    (elsewhere / "billing.yaml").write_text(SPEC.format(service="billing"))
    assert rules("generate", str(specs), "--out", str(out)).returncode == 0
    assert rules("generate", str(elsewhere), "--out", str(out)).returncode == 0  # another team's, same dir
    mine = out / "mine.rules.yml"
    mine.write_text("groups: []  # written by a person\n")
    # the user replaces the example with their own spec
    (specs / "shop.yaml").unlink()
    (specs / "payments.yaml").write_text(SPEC.format(service="payments"))
    result = rules("generate", str(specs), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"wrote {out / 'payments.rules.yml'}",
        f"removed {out / 'shop.rules.yml'} (generated from {specs / 'shop.yaml'}, which no longer exists)"]
    assert sorted(p.name for p in out.iterdir()) == ["billing.rules.yml", "mine.rules.yml", "payments.rules.yml"]
    assert mine.read_text() == "groups: []  # written by a person\n"
    # a spec that now names another service
    (specs / "payments.yaml").write_text(SPEC.format(service="checkout"))
    result = rules("generate", str(specs), "--out", str(out))
    assert f"removed {out / 'payments.rules.yml'} (generated from {specs / 'payments.yaml'}, which now produces " \
           "checkout.rules.yml)" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["billing.rules.yml", "checkout.rules.yml", "mine.rules.yml"]


def test_generate_never_overwrites_a_file_a_person_wrote(promtool, tmp_path):
    (tmp_path / "shop.yaml").write_text(SPEC.format(service="shop"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "shop.rules.yml").write_text("# my own rules\ngroups: []\n")
    result = rules("generate", str(tmp_path / "shop.yaml"), "--out", str(out))
    assert result.returncode == 1
    assert f"{out / 'shop.rules.yml'}: not written by kpi-agent (no \"Generated by kpi-agent\" header): refusing " \
           "to overwrite it; move it away or choose another --out" in result.stderr
    assert (out / "shop.rules.yml").read_text() == "# my own rules\ngroups: []\n"


def test_generate_checks_what_rules_check_checks(promtool, tmp_path):
    """An imported MetricsQL query that promtool rejects: no rule file, exit 1, the problem at its line."""
    spec = tmp_path / "vm.yaml"
    spec.write_text("service: vm\nkpis:\n  - name: k\n    window: 30d\n    target: 99%\n    ratio:\n"
                    "      numerator_query: sum(rate_over_sum(a_total[{{window}}]))\n"
                    "      denominator_query: sum(rate(a_total[{{window}}]))\n")
    result = rules("generate", str(spec), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert f"{spec}:7: kpis[0].ratio.numerator_query: PromQL does not parse:" in result.stderr
    assert "rate_over_sum" in result.stderr
    assert not (tmp_path / "out").exists()


def test_dashboards_generate_removes_its_stale_dashboards_only(tmp_path):
    specs, out = tmp_path / "rules", tmp_path / "dashboards"
    specs.mkdir()
    (specs / "shop.yaml").write_text(SPEC.format(service="shop"))
    dashboards = [sys.executable, "-m", "agent", "dashboards", "generate", str(specs), "--out", str(out)]
    assert subprocess.run(dashboards, capture_output=True, text=True).returncode == 0
    (out / "kpi-team.json").write_text('{"title": "our own board", "tags": ["team"]}\n')
    (specs / "shop.yaml").rename(specs / "payments.yaml")
    (specs / "payments.yaml").write_text(SPEC.format(service="payments"))
    result = subprocess.run(dashboards, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"removed {out / 'kpi-shop.json'} (generated from {specs / 'shop.yaml'}, which no longer exists)" \
        in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "grafana-alert-rules.yml", "kpi-agent-health.json", "kpi-overview.json", "kpi-payments.json", "kpi-team.json"]
