"""Reads one KPI of a spec's ``kpis`` list: its name, window, target, direction, labels and group_by, its
indicator (agent.kpi.spec.indicator), alerting (agent.kpi.spec.alerting) and supporting metrics."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from agent.config import values as config_values
from agent.config.fields import Fields
from agent.config.validation import label_name
from agent.kpi.conventions import RESERVED_GROUP_BY, RESERVED_LABELS
from agent.kpi.model import Exclusion, Expression, Kpi, SupportingMetric
from agent.kpi.spec import values
from agent.kpi.spec.alerting import read_alerting
from agent.kpi.spec.indicator import read_indicator
from agent.kpi.spec.review import read_calendar, read_exclusions, read_goals
from agent.kpi.units import DEFAULT_UNIT, UNITS
from agent.kpi.windows import BASE_RATE_WINDOW, BASE_WINDOW, MIN_KPI_WINDOW


def read_kpi(fields: Fields, line: int | None, spec_labels: dict[str, str], tz: ZoneInfo | None = None,
             spec_exclusions: tuple[Exclusion, ...] = ()) -> Kpi | None:
    """The KPI, or None if it has errors (all reported). ``tz``: the spec's time zone; ``spec_exclusions``: the
    planned exclusions of every KPI of the spec."""
    name = _read_name(fields)
    description = fields.get("description", config_values.string, "")
    objective = fields.get("objective", config_values.string, "")
    owner = fields.get("owner", config_values.string, "")
    window = _read_window(fields)
    target = fields.get("target", values.target)
    higher = fields.get("higher_is_better", config_values.boolean, True)
    expressions: list[Expression] = []
    indicator = read_indicator(fields, higher, expressions)
    indicator_expressions = list(expressions)
    is_ratio = indicator is None or indicator.kind != "value"
    if target is not None and is_ratio and not 0 < target < 1:
        fields.error("target", f"a ratio target must be between 0 and 1 (0% and 100%) exclusive, got {target:g}")
        target = None
    labels, group_by = _read_labels(fields, is_ratio, spec_labels)
    budget = None
    if target is not None and is_ratio:
        budget = 1 - target if higher else target
    alerting = read_alerting(fields.section("alerting"), fields, is_ratio, window or BASE_WINDOW, budget)
    supporting = _read_supporting_metrics(fields, expressions)
    zone = tz or ZoneInfo("UTC")
    calendar = read_calendar(fields)
    goals = read_goals(fields, zone, is_ratio, higher if higher is not None else True)
    exclusions = spec_exclusions + read_exclusions(fields, zone)
    fields.finish()
    if name is None or window is None or target is None or indicator is None:
        return None
    return Kpi(name, window, target, higher, alerting, description or "", objective or "", owner or "",
               indicator.kind, indicator.numerator, indicator.bad, indicator.denominator, indicator.gauge,
               indicator.value, labels, group_by, supporting, line or 0, tuple(expressions),
               tuple(indicator_expressions), calendar, goals, exclusions)


def _read_name(fields: Fields) -> str | None:
    name = fields.get("name", config_values.nonempty_string)
    if name and not values.KPI_NAME_RE.match(name):
        fields.error("name", f"{name!r} must match [a-z][a-z0-9_]*")
        return None
    return name


def _read_window(fields: Fields) -> float | None:
    window = fields.get("window", config_values.duration)
    if window is not None and window < MIN_KPI_WINDOW:
        fields.error("window", "must be at least 1h (burn-rate windows are derived from it)")
        return None
    if window is not None and window % BASE_RATE_WINDOW:
        fields.error("window", "must be a whole number of 5m (it is summed from recorded 5m rates)")
        return None
    return window


def _read_labels(fields: Fields, is_ratio: bool,
                 spec_labels: dict[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """``labels`` (on every rule of the KPI) and ``group_by`` (one series per value set)."""
    labels = fields.get("labels", config_values.label_map, {}) or {}
    group_by = fields.get("group_by", config_values.list_of(label_name), []) or []
    for reserved in RESERVED_GROUP_BY:
        if reserved in group_by:
            fields.error("group_by", f"{reserved!r} is reserved")
    for reserved in RESERVED_LABELS:
        if reserved in labels:
            fields.error("labels", f"{reserved!r} is set by the compiler")
    for clash in sorted(set(group_by) & (set(labels) | set(spec_labels))):
        fields.error("group_by", f"{clash!r} is also a static label of the {'KPI' if clash in labels else 'spec'}")
    if not is_ratio and group_by:
        fields.error("group_by", "applies to ratio KPIs; aggregate inside the value expression instead")
    return labels, tuple(group_by)


def _read_supporting_metrics(fields: Fields, expressions: list[Expression]) -> tuple[SupportingMetric, ...]:
    supporting = []
    for item, path, item_line in fields.items("supporting_metrics"):
        metric = Fields(item, path, fields.report, item_line)
        title = metric.get("title", config_values.nonempty_string)
        query = metric.get("query", config_values.nonempty_string)
        unit = metric.get("unit", config_values.one_of(*UNITS), DEFAULT_UNIT)
        metric.finish()
        if title and query:
            supporting.append(SupportingMetric(title, query, unit))
            expressions.append((metric.field("query"), metric.line_of("query") or 0, query))
    return tuple(supporting)
