"""`kpi-agent rules check|generate|test|import`: KPI specs in, validated Prometheus rule files out."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from agent.cli import flags
from agent.cli.problems import report_problems
from agent.config.files import SHARED, write_atomically
from agent.config.problems import ConfigError, Problem
from agent.kpi import importer, output
from agent.kpi.checks import check_metric_names, promtool_problems
from agent.kpi.loading import load_specs, spec_files
from agent.kpi.model import ServiceSpec
from agent.kpi.output import OutputFile
from agent.kpi.promtest import GeneratedTest, write_tests
from agent.kpi.promtool import PromtoolMissing, run_unit_tests
from agent.kpi.render import render_operator, render_prometheus


@click.group("rules")
def rules() -> None:
    """Check, generate and test Prometheus rules from KPI specs (files or directories of *.yaml)."""


@rules.command("check")
@click.argument("specs", nargs=-1, required=True, type=flags.SPECS)
@click.option("--config.file", "config_files", multiple=True, type=flags.EXISTING_FILE,
              help="Agent config: warn about metrics a KPI reads that it does not produce. Repeat it for "
                   "several agents (e.g. the HTTP shards' and the log DaemonSet's configs).")
@click.option("--prometheus.url", "prometheus_url", type=flags.PROMETHEUS_URL,
              help="Ask this Prometheus whether every selector and value expression matches series (pint-style).")
@click.option("--prometheus.lookback", "lookback", default="1d", show_default=True, type=flags.DURATION,
              help="How far back a series counts as existing for --prometheus.url.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1), for CI.")
def check(specs: tuple[str, ...], config_files: tuple[str, ...], prometheus_url: str | None, lookback: float,
          strict: bool) -> None:
    """Validate specs: every problem as file:line: field: message; exit 1 on errors."""
    try:
        loaded, problems = load_specs(specs)
        problems += promtool_problems(loaded, problems)
        if config_files:
            problems += check_metric_names(loaded, config_files)
        if prometheus_url:
            problems += _live_problems(loaded, prometheus_url, lookback)
        failed = report_problems(problems, strict)
    except (PromtoolMissing, ConfigError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    if not failed:
        click.echo(f"{len(loaded)} spec(s), {sum(len(s.kpis) for s in loaded)} KPI(s): OK")
    sys.exit(1 if failed else 0)


def _live_problems(specs: list[ServiceSpec], url: str, lookback: float) -> list[Problem]:
    from agent.kpi.live import check_series  # loads aiohttp: only when a Prometheus is to be asked
    from agent.kpi.prometheus_api import PrometheusError

    try:
        return check_series(specs, url, lookback)
    except PrometheusError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


@rules.command("generate")
@click.argument("specs", nargs=-1, required=True, type=flags.SPECS)
@click.option("--out", "out_dir", required=True, type=flags.OUTPUT_DIRECTORY, help="Directory to write to.")
@click.option("--format", "output_format", type=click.Choice(["prometheus", "prometheus-operator"]),
              default="prometheus", show_default=True)
@click.option("--namespace", type=flags.KUBERNETES_NAME,
              help="metadata.namespace of PrometheusRule objects (prometheus-operator format).")
@click.option("--interval", type=flags.EVALUATION_INTERVAL, default=None,
              help="Evaluation interval of both rule groups (default 30s for rates and alerts, 5m for the period).")
def generate(specs: tuple[str, ...], out_dir: str, output_format: str, namespace: str | None,
             interval: str | None) -> None:
    """Write one rule file per spec: <service>.rules.yml, or a PrometheusRule <service>.prometheusrule.yml,
    after the checks of `rules check`. Files it generated earlier that no spec produces any more are removed;
    a file a person wrote is never overwritten or removed."""
    try:
        loaded, problems = load_specs(specs)
        problems += promtool_problems(loaded, problems)
    except PromtoolMissing as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    if report_problems(problems):
        sys.exit(1)
    suffix = ".rules.yml" if output_format == "prometheus" else ".prometheusrule.yml"
    files = []
    for spec in loaded:
        if output_format == "prometheus":
            text = render_prometheus(spec, spec.file, interval)
        else:
            text = render_operator(spec, spec.file, namespace, interval)
        files.append(OutputFile(f"{spec.service}{suffix}", text, spec.file))
    _write(out_dir, files, f"*{suffix}", specs)


def _write(out_dir: str, files: list[OutputFile], owned: str, specs: tuple[str, ...]) -> None:
    lines, refused = output.write(Path(out_dir), files, (owned,), specs)
    if report_problems(refused):
        sys.exit(1)
    for line in lines:
        click.echo(line)


@rules.command("test")
@click.argument("specs", nargs=-1, required=True, type=flags.SPECS)
@click.option("--out", "out_dir", type=flags.OUTPUT_DIRECTORY,
              help="Keep the rules and generated promtool tests here (default: a temporary directory).")
def test(specs: tuple[str, ...], out_dir: str | None) -> None:
    """Generate promtool unit tests for every KPI (burn just above and below each tier's factor, zero
    traffic, missing metrics) and run `promtool test rules` on them, showing each result as it comes."""
    loaded, problems = load_specs(specs)
    if report_problems(problems):
        sys.exit(1)
    with tempfile.TemporaryDirectory() as scratch:
        tests: list[GeneratedTest] = []
        for spec in loaded:
            written, notes = write_tests(spec, Path(out_dir or scratch) / spec.service)
            tests.extend(written)
            for note in notes:
                click.echo(f"{spec.file}: note: {note}", err=True)
        try:
            failed = _run_tests(sorted(tests, key=lambda t: -t.evaluations))
        except PromtoolMissing as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)
    sys.exit(1 if failed else 0)


def _run_tests(tests: list[GeneratedTest]) -> int:
    """Runs the tests (costliest first), one line per test as it finishes; the number that failed."""
    kpis = len({(t.directory, t.kpi) for t in tests})
    click.echo(f"{len(tests)} promtool tests of {kpis} KPI(s), {os.cpu_count() or 1} at a time")
    started = time.monotonic()
    done = failed = 0

    def report(index: int, result: subprocess.CompletedProcess, seconds: float) -> None:
        nonlocal done, failed
        done += 1
        test = tests[index]
        verdict = "ok" if result.returncode == 0 else "FAILED"
        click.echo(f"[{done:{len(str(len(tests)))}}/{len(tests)}] {verdict:6} {seconds:5.1f}s  {test.case}")
        if result.returncode != 0:
            failed += 1
            click.echo(f"{test.directory / test.name}:\n{(result.stdout + result.stderr).strip()}", err=True)

    run_unit_tests([(t.directory, t.name) for t in tests], report)
    click.echo(f"{len(tests) - failed} passed, {failed} failed in {time.monotonic() - started:.1f}s")
    return failed


@rules.command("import")
@click.option("--from", "source_format", type=click.Choice(["sloth", "openslo"]), required=True,
              help="sloth: prometheus/v1 specs and PrometheusServiceLevel objects; openslo: v1alpha and v1 SLOs.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=flags.OUTPUT_DIRECTORY, help="Directory to write to.")
@click.option("--window", default="30d", show_default=True, type=flags.DURATION,
              help="The SLO period where the source does not state one (Sloth's is a command-line flag).")
def import_(source_format: str, files: tuple[str, ...], out_dir: str, window: float) -> None:
    """Translate Sloth or OpenSLO SLO specs into KPI specs, one <service>.yaml per service. What cannot be
    translated is reported as file:line: field: message (exit 1); everything else is still written."""
    translation = importer.import_files(source_format, spec_files(files), window)
    failed = report_problems(translation.problems)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for service, spec in translation.specs.items():
        path = out / f"{service}.yaml"
        write_atomically(path, importer.render(spec, translation.sources[service], source_format).encode(), SHARED)
        click.echo(f"wrote {path} ({len(spec['kpis'])} KPI(s))")
    if not translation.specs:
        click.echo("nothing to write: no SLO could be translated", err=True)
    sys.exit(1 if failed else 0)
