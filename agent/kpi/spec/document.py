"""Reads a whole spec file: one service, its labels and its KPIs (each by agent.kpi.spec.kpi)."""

from __future__ import annotations

from typing import Any

from agent.config import values as config_values
from agent.config.fields import Fields
from agent.config.problems import FileProblems
from agent.config.yaml import LocatedMap
from agent.kpi.conventions import RESERVED_LABELS
from agent.kpi.model import Kpi, ServiceSpec
from agent.kpi.spec import values
from agent.kpi.spec.kpi import read_kpi
from agent.kpi.spec.review import read_exclusions, read_time_zone


def parse_spec(data: Any, file: str) -> tuple[ServiceSpec | None, FileProblems]:
    """The spec of a loaded YAML document (None if it has errors) and every problem found in it."""
    report = FileProblems(file)
    top = Fields(data if data is not None else LocatedMap(), "", report, 1)
    service = top.get("service", config_values.nonempty_string)
    if service and not values.SERVICE_NAME_RE.match(service):
        top.error("service", f"{service!r} may only contain letters, digits, '_', '-' and '.'")
        service = None
    labels = top.get("labels", config_values.label_map, {}) or {}
    for reserved in RESERVED_LABELS:
        if reserved in labels:
            top.error("labels", f"{reserved!r} is set by the compiler")
    tz = read_time_zone(top)
    exclusions = read_exclusions(top, tz)
    kpis: list[Kpi] = []
    seen: dict[str, int | None] = {}
    for item, path, line in top.items("kpis"):
        kpi = read_kpi(Fields(item, path, report, line), line, labels, tz, exclusions)
        if kpi is None:
            continue
        if kpi.name in seen:
            report.error(line, f"{path}.name", f"{kpi.name!r} is already defined on line {seen[kpi.name]}")
            continue
        seen[kpi.name] = line
        kpis.append(kpi)
    if top.raw("kpis") in (None, []):
        report.error(top.line, "kpis", "is required: at least one KPI")
    top.finish()
    if report.errors or not service:
        return None, report
    return ServiceSpec(file, service, tuple(kpis), labels, tz.key), report
