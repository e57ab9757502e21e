"""`kpi-agent rules check|generate|test` as a user runs them."""

import os
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
def test_rules_test_passes_on_every_example(promtool, tmp_path):
    result = rules("test", str(ROOT / "rules"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    generated = list(tmp_path.glob("*/*.test.yml"))
    assert generated and all(yaml.safe_load(p.read_text())["tests"] for p in generated)


@pytest.mark.slow
def test_generated_tests_catch_each_broken_burn_threshold(promtool, tmp_path):
    """Break one window pair's threshold at a time: the generated page-tier tests must notice each."""
    from agent.kpi.loading import load_spec
    from agent.kpi.model import ServiceSpec
    from agent.kpi.promtest import generate_tests
    from agent.kpi.render import render_prometheus

    shop = load_spec(ROOT / "rules" / "shop.yaml")
    spec = ServiceSpec(shop.file, shop.service, tuple(k for k in shop.kpis if k.name == "checkout_availability"))
    files, _ = generate_tests(spec, "rules.yml")
    rules_text = render_prometheus(spec, "shop.yaml")
    variants = {"intact": rules_text, "page 1h at 144": rules_text.replace("> 14.4", "> 144"),
                "page 6h at 60": rules_text.replace("> 6 ", "> 60 "),
                "page 1h at 1.44": rules_text.replace("> 14.4", "> 1.44")}
    assert len(set(variants.values())) == len(variants)

    def run(name: str) -> subprocess.CompletedProcess:
        directory = tmp_path / name.replace(" ", "-")
        directory.mkdir()
        (directory / "page.test.yml").write_text(files["shop.checkout_availability.eval1m.test.yml"])
        (directory / "rules.yml").write_text(variants[name])
        return subprocess.run([promtool, "test", "rules", "page.test.yml"], cwd=directory, capture_output=True,
                              text=True)

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
