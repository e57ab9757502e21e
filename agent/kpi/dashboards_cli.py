"""`kpi-agent dashboards ...` commands. STUB: to be written."""

import click


@click.group("dashboards")
def dashboards() -> None:
    """Generate Grafana dashboards and alert rules from KPI specs."""
