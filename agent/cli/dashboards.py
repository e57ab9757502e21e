"""`kpi-agent dashboards generate`: Grafana dashboards and Grafana-managed alert rules from KPI specs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agent.cli import flags
from agent.cli.problems import report_problems
from agent.kpi import grafana, output
from agent.kpi.loading import load_specs
from agent.kpi.output import OutputFile


@click.group("dashboards")
def dashboards() -> None:
    """Generate Grafana dashboards and alert rules from KPI specs."""


@dashboards.command("generate")
@click.argument("specs", nargs=-1, required=True, type=flags.SPECS)
@click.option("--out", "out_dir", required=True, type=flags.OUTPUT_DIRECTORY, help="Directory to write to.")
@click.option("--alert-datasource-uid", default="prometheus", show_default=True, type=flags.GRAFANA_UID,
              help="uid of the Prometheus datasource the Grafana-managed alert rules query.")
def generate(specs: tuple[str, ...], out_dir: str, alert_datasource_uid: str) -> None:
    """Write kpi-overview.json, kpi-agent-health.json, kpi-<service>.json for each spec, and
    grafana-alert-rules.yml (Grafana alerting provisioning) into --out. Service dashboards it generated earlier
    that no spec produces any more are removed; a file a person wrote is never overwritten or removed."""
    loaded, problems = load_specs(specs)
    if report_problems(problems):
        sys.exit(1)
    files = [OutputFile("kpi-overview.json", grafana.overview_dashboard(), ""),
             OutputFile("kpi-agent-health.json", grafana.agent_dashboard(), ""),
             OutputFile("grafana-alert-rules.yml", grafana.grafana_alert_rules(loaded, alert_datasource_uid), "")]
    files += [OutputFile(f"kpi-{spec.service}.json", grafana.service_dashboard(spec), spec.file) for spec in loaded]
    lines, refused = output.write(Path(out_dir), sorted(files, key=lambda f: f.name), ("kpi-*.json",), specs)
    if report_problems(refused):
        sys.exit(1)
    for line in lines:
        click.echo(line)
