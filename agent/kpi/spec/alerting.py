"""Reads a KPI's ``alerting`` section: its strategy, burn-rate tiers (``page``, ``ticket``) and their window
pairs, the threshold settings, and the no-data alerts. Which windows a tier uses by default, and whether it
can fire at all, is agent.kpi.windows' decision."""

from __future__ import annotations

from agent.config import values as config_values
from agent.config.fields import Fields
from agent.formatting import format_duration
from agent.kpi.conventions import NO_DATA_ALERT, RESERVED_LABELS
from agent.kpi.model import Alerting, BurnWindow, NoData, Tier
from agent.kpi.spec import values
from agent.kpi.windows import (
    DEFAULT_NO_DATA_FOR,
    DEFAULT_THRESHOLD_WINDOW,
    SEVERITIES,
    no_traffic_window,
    scaled_tiers,
    unfireable_window,
)


def read_alerting(fields: Fields | None, kpi_fields: Fields, is_ratio: bool, window: float,
                  budget: float | None) -> Alerting:
    """``alerting: {strategy, page, ticket, window, for, labels, annotations, severity, min_bad_events,
    alert_name, no_data}``; absent, the defaults (whose problems, a tier that cannot fire, go on the KPI)."""
    default_strategy = "burn_rate" if is_ratio else "threshold"
    if fields is None:
        fields = Fields({}, kpi_fields.field("alerting"), kpi_fields.report, kpi_fields.line)
    strategy = fields.get("strategy", config_values.one_of("burn_rate", "threshold", "none"), default_strategy)
    if strategy == "burn_rate" and not is_ratio:
        fields.error("strategy", "burn_rate needs a ratio KPI; a value KPI uses threshold")
    tiers = _read_tiers(fields, strategy, window, budget)
    alert_window = fields.get("window", config_values.duration, DEFAULT_THRESHOLD_WINDOW)
    for_ = fields.get("for", config_values.duration, 0.0) if fields.has("for") else 0.0
    labels = fields.get("labels", config_values.label_map, {}) or {}
    annotations = fields.get("annotations", config_values.string_map, {}) or {}
    threshold_severity = fields.get("severity", config_values.one_of("page", "ticket"), None)
    min_bad_events = fields.get("min_bad_events", config_values.positive_integer, 0)
    _check_strategy_fields(fields, strategy)
    if alert_window is not None and alert_window % 60:
        fields.error("window", "must be whole minutes")
    for reserved in RESERVED_LABELS:
        if reserved in labels:
            fields.error("labels", f"{reserved!r} is set by the compiler")
    name = fields.get("alert_name", values.alert_name, None)
    no_data = _read_no_data(fields, no_traffic_window(window, tiers))
    fields.finish()
    return Alerting(strategy or default_strategy, tiers, name, alert_window or DEFAULT_THRESHOLD_WINDOW,
                    for_ or 0.0, labels, annotations, no_data, min_bad_events or 0, threshold_severity)


def _read_tiers(fields: Fields, strategy: str | None, window: float, budget: float | None) -> tuple[Tier, ...]:
    if strategy != "burn_rate":
        for severity in SEVERITIES:
            if fields.has(severity):
                fields.error(severity, f"only burn_rate alerting has tiers (strategy is {strategy})")
        return ()
    tiers = (_read_tier(severity, fields, window, budget) for severity in SEVERITIES)
    return tuple(tier for tier in tiers if tier)


def _check_strategy_fields(fields: Fields, strategy: str | None) -> None:
    if strategy == "burn_rate":
        for key in ("window", "for", "severity"):
            if fields.has(key):
                fields.error(key, "applies to threshold alerting; burn_rate windows and severities come from "
                                  "its tiers")
    elif fields.has("min_bad_events"):
        fields.error("min_bad_events", "applies to burn_rate alerting")


def _read_tier(severity: str, fields: Fields, kpi_window: float, budget: float | None) -> Tier | None:
    """``page: {windows, for, labels, annotations}``; ``page: false`` disables the tier."""
    defaults = scaled_tiers(kpi_window)[severity]
    if fields.raw(severity) is False:
        return None
    section = fields.section(severity)
    if section is None:
        tier = Tier(severity, defaults)
        where, line = fields.path, fields.line
    else:
        windows = _read_windows(section, kpi_window)
        labels = section.get("labels", config_values.label_map, {}) or {}
        annotations = section.get("annotations", config_values.string_map, {}) or {}
        for_ = section.get("for", config_values.duration, 0.0) if section.has("for") else 0.0
        section.finish()
        tier = Tier(severity, windows or defaults, labels, annotations, for_ or 0.0)
        where = section.field("windows") if windows else section.path
        line = section.line_of("windows") if windows else section.line
    if budget is not None and (window := unfireable_window(tier.windows, budget)) is not None:
        fields.report.error(line, where, (
            f"the {severity} tier can never fire: a burn rate of {window.factor:g}x over "
            f"{format_duration(window.long)} needs {window.factor * budget:.0%} bad events with an error "
            f"budget of {budget:.4g}; use strategy: threshold for a target like that, "
            f"or disable the tier ({severity}: false)"))
    return tier


def _read_windows(section: Fields, kpi_window: float) -> tuple[BurnWindow, ...] | None:
    """A tier's own ``windows: [{long, short, factor}]``; None when it gives none (the defaults apply)."""
    windows = []
    for item, path, line in section.items("windows"):
        pair = Fields(item, path, section.report, line)
        long = pair.get("long", values.alert_window)
        short = pair.get("short", values.alert_window)
        factor = pair.get("factor", values.burn_factor)
        pair.finish()
        if long is None or short is None or factor is None:
            continue
        if short >= long:
            pair.error("short", f"must be shorter than long ({format_duration(long)})")
        elif long > kpi_window:
            pair.error("long", f"is longer than the KPI's window ({format_duration(kpi_window)})")
        else:
            windows.append(BurnWindow(long, short, factor))
    if section.has("windows") and not section.raw("windows"):
        section.error("windows", "give at least one {long, short, factor} or disable the tier (false)")
    return tuple(windows) if section.has("windows") else None


def _read_no_data(fields: Fields, no_traffic_for: float) -> NoData | None:
    """``no_data: {for, no_traffic_for, labels, alert_name}``, ``true`` (the defaults) or ``false``."""
    raw = fields.raw("no_data")
    if raw is False:
        return None
    section = fields.section("no_data") if isinstance(raw, dict) else None
    if section is None:
        if raw not in (None, True):
            fields.error("no_data", "expected false, true or a mapping {for, no_traffic_for, labels, alert_name}")
        return NoData(DEFAULT_NO_DATA_FOR, no_traffic_for, NO_DATA_ALERT)
    for_ = section.get("for", config_values.duration, DEFAULT_NO_DATA_FOR)
    quiet_for = section.get("no_traffic_for", config_values.duration, no_traffic_for)
    labels = section.get("labels", config_values.label_map, {}) or {}
    name = section.get("alert_name", values.alert_name, NO_DATA_ALERT)
    section.finish()
    return NoData(for_ or DEFAULT_NO_DATA_FOR, quiet_for or no_traffic_for, name or NO_DATA_ALERT, labels)
