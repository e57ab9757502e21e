"""How every command shows problems: one `file:line: field: message` per line on stderr."""

from __future__ import annotations

import click

from agent.config.problems import Problem


def report_problems(problems: list[Problem], strict: bool = False) -> bool:
    """Prints every problem; True if any fails the command (every warning does when ``strict``)."""
    for problem in problems:
        click.echo(str(problem), err=True)
    return any(strict or not p.warning for p in problems)
