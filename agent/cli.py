"""The ``kpi-agent`` command. Flags follow the Prometheus exporters' conventions (--config.file, ...)."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from agent import __version__
from agent.config import AgentConfig, ConfigError, example_config_text, load_config, load_example_config
from agent.kpi.dashboards_cli import dashboards
from agent.kpi.rules_cli import rules
from agent.logconfig import LEVELS, setup_logging
from agent.report.cli import report, ui

log = logging.getLogger("agent")

DEFAULT_LISTEN = ":9910"


def _self_address(listen: str) -> str:
    """Where the agent can reach itself: a wildcard listen address is reached over loopback."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def _print_warnings(report) -> None:
    for warning in report.warnings:
        click.echo(str(warning), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="kpi-agent")
def main() -> None:
    """Collect operational metrics for Prometheus and compile KPI specs into rules, alerts and dashboards."""


@main.command()
@click.option("--config.file", "config_file", type=click.Path(dir_okay=False),
              help="Agent config (YAML). Without it the built-in example runs: the agent probes itself.")
@click.option("--web.listen-address", "listen", default=DEFAULT_LISTEN, show_default=True,
              help="Address to serve /metrics on, host:port (':9910' means every interface).")
@click.option("--web.config.file", "web_config_file", type=click.Path(exists=True, dir_okay=False),
              help="exporter-toolkit web config: TLS, basic auth, headers.")
@click.option("--log.level", "log_level", type=click.Choice(list(LEVELS)), default="info", show_default=True)
@click.option("--log.format", "log_format", type=click.Choice(["logfmt", "json"]), default="logfmt",
              show_default=True)
def run(config_file: str | None, listen: str, web_config_file: str | None, log_level: str, log_format: str) -> None:
    """Run the agent until SIGTERM or SIGINT; SIGHUP or POST /-/reload reloads the config."""
    from agent.runtime import Agent, serve
    from agent.webconfig import load_web_config

    setup_logging(log_level, log_format)

    def load() -> AgentConfig:
        config, report = load_config(config_file) if config_file else load_example_config(_self_address(listen))
        for warning in report.warnings:
            log.warning(str(warning))
        return config

    try:
        web_config = load_web_config(web_config_file) if web_config_file else None
        agent = Agent(load, listen, web_config)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if not config_file:
        log.info("no --config.file: running the built-in example (see `kpi-agent example-config`)")
    try:
        asyncio.run(serve(agent))
    except OSError as exc:
        click.echo(f"kpi-agent: {exc}", err=True)
        sys.exit(1)


@main.command()
@click.option("--config.file", "config_files", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Agent config to validate; repeat for several.")
def check(config_files: tuple[str, ...]) -> None:
    """Validate agent configs: exit 0, or print every problem as file:line: field: message and exit 1."""
    failed = False
    for path in config_files:
        try:
            config, report = load_config(path)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            failed = True
            continue
        _print_warnings(report)
        click.echo(f"{path}: OK ({len(config.http)} http, {len(config.logs)} logs sources)")
    sys.exit(1 if failed else 0)


@main.command("example-config")
def example_config() -> None:
    """Print the built-in example config, a starting point for your own."""
    click.echo(example_config_text(), nl=False)


main.add_command(rules)
main.add_command(dashboards)
main.add_command(report)
main.add_command(ui)
