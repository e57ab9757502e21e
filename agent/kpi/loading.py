"""Loading spec files and directories of them: what every command that reads specs starts with."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agent.config.problems import ConfigError, Problem
from agent.config.yaml import load_file
from agent.kpi.model import ServiceSpec
from agent.kpi.spec.document import parse_spec

SPEC_SUFFIXES = (".yaml", ".yml")


def spec_files(paths: Iterable[str]) -> list[Path]:
    """Expand directories to the *.yaml / *.yml files inside, sorted, so `rules/` works as an argument."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file()))
        else:
            files.append(path)
    return files


def load_specs(paths: Iterable[str]) -> tuple[list[ServiceSpec], list[Problem]]:
    """Every spec that validates, and every problem (errors and warnings) of all files: a directory without
    a spec, and two files for one service, are problems too."""
    paths = list(paths)
    specs: list[ServiceSpec] = []
    problems: list[Problem] = []
    for raw in paths:
        if Path(raw).is_dir() and not spec_files([raw]):
            problems.append(Problem(raw, None, "", "no KPI spec (*.yaml, *.yml) in this directory"))
    for path in spec_files(paths):
        try:
            spec, report = parse_spec(load_file(path), str(path))
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(report.problems)
        if spec:
            specs.append(spec)
    services: dict[str, str] = {}
    for spec in specs:
        if spec.service in services:
            problems.append(Problem(spec.file, 1, "service",
                                    f"{spec.service!r} is already the service of {services[spec.service]}"))
        services[spec.service] = spec.file
    return specs, problems
