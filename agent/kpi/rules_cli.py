"""`kpi-agent rules ...` commands. STUB: to be written."""

import click


@click.group("rules")
def rules() -> None:
    """Check, generate and test KPI rule files."""
