"""``kpi-agent run``, ``check`` and ``example-config``: the commands of the agent itself."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from agent.cli import flags
from agent.config.agent import ConfigError, example_config_text, load_config, load_example_config
from agent.config.model import AgentConfig
from agent.runtime.logconfig import setup_logging
from agent.runtime.shard import Shard
from agent.server.listener import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, ListenAddress
from agent.sources.kinds import KINDS

log = logging.getLogger("agent")

DEFAULT_LISTEN = ":9910"


def _self_address(listen: ListenAddress) -> str:
    """Where the agent can reach itself: a wildcard listen address is reached over loopback."""
    if listen.host in (None, "0.0.0.0"):
        return f"127.0.0.1:{listen.port}"
    if listen.host == "::":
        return f"[::1]:{listen.port}"
    return str(listen)


def _distinct(ctx: click.Context, param: click.Parameter, values: tuple[ListenAddress, ...]) -> list[ListenAddress]:
    addresses: list[ListenAddress] = []
    for address in values:
        if address in addresses:
            raise click.BadParameter(f"'{address}' is given twice")
        addresses.append(address)
    return addresses


def _print_warnings(report) -> None:
    for warning in report.warnings:
        click.echo(str(warning), err=True)


@click.command()
@click.option("--config.file", "config_file", type=click.Path(dir_okay=False),
              help="Agent config (YAML). Without it the built-in example runs: the agent probes itself.")
@click.option("--web.listen-address", "listen", multiple=True, default=[DEFAULT_LISTEN], show_default=True,
              type=flags.LISTEN_ADDRESS, callback=_distinct,
              help="Address to serve /metrics on, host:port (':9910' means every interface, [::1]:9910 an IPv6 "
                   "one); repeat to serve on several.")
@flags.web_config_file
@click.option("--web.max-connections", "max_connections", type=click.IntRange(min=1),
              default=DEFAULT_MAX_CONNECTIONS, show_default=True,
              help="Most connections served at once (capped to leave file descriptors for probes).")
@click.option("--web.read-header-timeout", "header_timeout", type=flags.Seconds(0.1),
              default=DEFAULT_HEADER_TIMEOUT, show_default=True,
              help="Seconds a client has to send a request's head before its connection is closed.")
@flags.log_level
@flags.log_format
@click.option("--shard.index", "shard_index", type=click.IntRange(min=0), default=0, show_default=True,
              help="This replica's shard, 0 to --shard.count - 1 (a StatefulSet pod's ordinal).")
@click.option("--shard.count", "shard_count", type=click.IntRange(min=1), default=1, show_default=True,
              help="Replicas sharing the HTTP targets: each probes its share (log sources run on every replica).")
@click.option("--shard.index-from-hostname", "index_from_hostname", is_flag=True,
              help="Take --shard.index from the host name's last '-N' (a StatefulSet pod is <name>-<ordinal>).")
def run(config_file: str | None, listen: list[ListenAddress], web_config_file: str | None, max_connections: int,
        header_timeout: float, log_level: str, log_format: str, shard_index: int, shard_count: int,
        index_from_hostname: bool) -> None:
    """Run the agent until SIGTERM or SIGINT; SIGHUP or POST /-/reload reloads the config."""
    from agent.runtime.agent import Agent, StartError, serve

    if index_from_hostname:
        shard_index = _ordinal_of_hostname(click.get_current_context())
    if shard_index >= shard_count:
        raise click.BadParameter(f"{shard_index} is not below --shard.count {shard_count}",
                                 param_hint="'--shard.index'")
    setup_logging(log_level, log_format)

    def load() -> AgentConfig:
        config, report = load_config(config_file) if config_file else load_example_config(_self_address(listen[0]))
        for warning in report.warnings:
            log.warning(str(warning))
        return config

    try:
        web_config = None
        if web_config_file:
            from agent.server.webconfig import LiveWebConfig  # here: most agents have none

            web_config = LiveWebConfig(web_config_file)
        agent = Agent(load, [str(address) for address in listen], web_config, max_connections, header_timeout,
                      Shard(shard_index, shard_count))
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if not config_file:
        log.info("no --config.file: running the built-in example (see `kpi-agent example-config`)")
    try:
        asyncio.run(serve(agent))
    except (OSError, StartError) as exc:  # OSError: an address in use or not ours to bind
        click.echo(f"kpi-agent: {exc}", err=True)
        sys.exit(1)


def _ordinal_of_hostname(ctx: click.Context) -> int:
    """A StatefulSet pod's ordinal, from its host name (``kpi-agent-http-2`` -> 2)."""
    import re
    import socket

    if ctx.get_parameter_source("shard_index") is not click.core.ParameterSource.DEFAULT:
        raise click.BadParameter("give --shard.index or --shard.index-from-hostname, not both",
                                 param_hint="'--shard.index-from-hostname'")
    hostname = socket.gethostname()
    found = re.search(r"-(\d+)$", hostname)
    if found is None:
        raise click.BadParameter(f"the host name {hostname!r} does not end in -<ordinal>",
                                 param_hint="'--shard.index-from-hostname'")
    return int(found.group(1))


@click.command()
@click.option("--config.file", "config_files", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Agent config to validate; repeat for several.")
def check(config_files: tuple[str, ...]) -> None:
    """Validate agent configs (and the target files their sources discover now): exit 0, or print every problem
    as file:line: field: message and exit 1."""
    failed = False
    for path in config_files:
        try:
            config, report = load_config(path)
            discovered: int | None = None
            for kind_name, source in config.sources:  # what sources read now: target files, permissions
                problems, count = KINDS[kind_name].check(source, path)
                report.problems += problems
                if count is not None:
                    discovered = (discovered or 0) + count
            _print_warnings(report)
            report.raise_if_errors()
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            failed = True
            continue
        counts = ", ".join(f"{len(config.of_kind(kind))} {kind}" for kind in KINDS if config.of_kind(kind))
        targets = f"; {discovered} discovered targets" if discovered is not None else ""
        click.echo(f"{path}: OK ({counts or 'no'} sources{targets})")
    sys.exit(1 if failed else 0)


@click.command("example-config")
def example_config() -> None:
    """Print the built-in example config, a starting point for your own."""
    click.echo(example_config_text(), nl=False)

