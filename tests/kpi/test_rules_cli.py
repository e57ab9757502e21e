"""`kpi-agent rules check|generate|test` as a user runs them."""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

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
    assert any("checkout_availability: ticket tier, burn 1.1x for 3d5m against 1x over 3d/6h" in line
               for line in progress)
    assert re.fullmatch(rf"{len(generated)} passed, 0 failed in [0-9.]+s", lines[-1])


def test_generated_tests_cost_less_than_half_of_what_they_did():
    """promtool evaluates every loaded rule at every step: rules x evaluations is what `rules test` costs. The
    examples' 40 cases cost 1,041,188 rule evaluations when they took 4-9 minutes (each loaded its KPI's whole
    rule file, page tiers were evaluated every minute, every burn followed a healthy history as long as the
    tier's longest window); the same cases now cost less than half of that."""
    from agent.kpi.promtest import kpi_cases, kpi_rules
    from tests.kpi.helpers import load_spec

    spec = load_spec(ROOT / "rules" / "shop.yaml")
    cost = cases = 0
    for kpi in spec.kpis:
        loaded = yaml.safe_load(kpi_rules(spec, kpi))
        rules_loaded = sum(len(group["rules"]) for group in loaded["groups"])
        for case in kpi_cases(spec, kpi)[0]:
            cost += case.evaluations * rules_loaded
            cases += 1
    assert cases == 40
    assert cost < 1_041_188 / 2, cost


@pytest.mark.slow
def test_generated_tests_catch_each_broken_burn_threshold(promtool, tmp_path):
    """Break one window pair's threshold at a time: the generated page-tier tests must notice each."""
    from agent.kpi.model import ServiceSpec
    from agent.kpi.promtest import generate_tests
    from agent.kpi.render import render_prometheus
    from tests.kpi.helpers import load_spec

    shop = load_spec(ROOT / "rules" / "shop.yaml")
    spec = ServiceSpec(shop.file, shop.service, tuple(k for k in shop.kpis if k.name == "checkout_availability"))
    files, _ = generate_tests(spec, "rules.yml")
    page_cases = [text for text in files.values() if "page tier, burn" in text]
    assert len(page_cases) == 4
    rules_text = render_prometheus(spec, "shop.yaml")
    variants = {"intact": rules_text, "page 1h at 144": rules_text.replace("> 14.4", "> 144"),
                "page 6h at 60": rules_text.replace("> 6 ", "> 60 "),
                "page 1h at 1.44": rules_text.replace("> 14.4", "> 1.44")}
    assert len(set(variants.values())) == len(variants)

    def run(name: str) -> subprocess.CompletedProcess:
        directory = tmp_path / name.replace(" ", "-")
        directory.mkdir()
        for index, text in enumerate(page_cases):
            (directory / f"page{index}.test.yml").write_text(text)
        (directory / "rules.yml").write_text(variants[name])
        return subprocess.run([promtool, "test", "rules", *(f"page{i}.test.yml" for i in range(len(page_cases)))],
                              cwd=directory, capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # independent promtool runs, at once
        results = dict(zip(variants, pool.map(run, variants), strict=True))
    intact = results.pop("intact")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    for name, result in results.items():
        assert result.returncode == 1 and "FAILED" in result.stdout + result.stderr, name


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
