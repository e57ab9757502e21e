"""The ``kpi-agent`` command. Flags follow the Prometheus exporters' conventions (--config.file, ...)."""

from __future__ import annotations

import importlib
from typing import Any

import click

from agent import __version__


class _LazyGroup(click.Group):
    """Loads each command's module only when that command runs: `kpi-agent run` never imports the KPI commands
    (the compiler, Grafana's SDK, the report's plotting), which keeps the running agent's memory down."""

    LAZY = {"run": "agent.cli.run", "check": "agent.cli.run", "example-config": "agent.cli.run",
            "rules": "agent.cli.rules", "dashboards": "agent.cli.dashboards", "report": "agent.cli.report",
            "ui": "agent.cli.report"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "run":  # before the imports, the config and the sources, which take seconds
            from agent.runtime import hangup, heap, lazyssl

            hangup.hold()
            heap.pause_for_start()
            lazyssl.import_asyncio()  # OpenSSL (4 MiB) only once something speaks TLS
        if cmd_name in self.LAZY:
            module = importlib.import_module(self.LAZY[cmd_name])
            command: click.Command = getattr(module, cmd_name.replace("-", "_"))
            return command
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        finally:
            from agent.runtime import heap

            heap.resume_after_start()  # `run` paused the collector but stopped before building anything


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="kpi-agent")
def main() -> None:
    """Collect operational metrics for Prometheus and compile KPI specs into rules, alerts and dashboards."""
