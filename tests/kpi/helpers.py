"""What the KPI tests need of the KPI side that the agent itself does not: one spec file loaded (or a failure),
a dashboard's queries, the rules that read raw series, the generated promtool tests as text."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.config.yaml import load_file
from agent.kpi.model import ServiceSpec
from agent.kpi.promtest import generated_files
from agent.kpi.render import to_yaml
from agent.kpi.spec.document import parse_spec


def load_spec(path: str | Path) -> ServiceSpec:
    """Load and validate one spec file; raises ConfigError with every problem."""
    spec, report = parse_spec(load_file(path), str(path))
    report.raise_if_errors()
    assert spec is not None
    return spec


def panel_queries(dashboard_json: str) -> list[str]:
    """Every PromQL expression of a dashboard's panels (used to prove each returns data)."""
    document = json.loads(dashboard_json)
    return [target["expr"] for panel in document.get("panels", []) for target in panel.get("targets", [])
            if target.get("expr")]


def raw_reading_rules(groups: list[dict[str, Any]], metrics: Iterable[str]) -> list[str]:
    """The names of the rules whose expressions read any of ``metrics`` directly (for cost reports)."""
    metric_names = tuple(metrics)
    return [rule.get("record") or rule["alert"] for group in groups for rule in group["rules"]
            if any(name in rule["expr"] for name in metric_names)]


def generate_tests(spec: ServiceSpec, rule_file: str) -> tuple[dict[str, str], list[str]]:
    """The promtool test files `rules test` writes for ``spec`` (file name -> YAML text), each loading
    ``rule_file`` instead of its KPI's rules, and the notes on what could not be tested."""
    files, notes = generated_files(spec, Path("."))
    return {test.name: to_yaml({**document, "rule_files": [rule_file]}) for test, document in files}, notes
