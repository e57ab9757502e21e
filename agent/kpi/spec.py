"""The KPI spec model: one YAML file per service, validated into frozen dataclasses.

A KPI is either a ratio of two counters (good / total events, or bad / total when lower is better) or a
PromQL value, judged against a target over a window. Errors name file, line and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from agent import yamlsrc
from agent.kpi.units import DEFAULT_UNIT, UNITS
from agent.yamlsrc import Fields, Report

KPI_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
ALERT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Multi-window multi-burn-rate tiers of the SRE Workbook for a 30-day window: (long window, burn factor).
# Each factor means the same share of budget spent in its long window (2% in 1h, 5% in 6h, 10% in 1d, 10% in 3d).
BASE_WINDOW = 30 * 86400
BASE_TIERS: dict[str, tuple[tuple[float, float], ...]] = {
    "page": ((3600, 14.4), (6 * 3600, 6.0)),
    "ticket": ((86400, 3.0), (3 * 86400, 1.0)),
}
SHORT_WINDOW_DIVISOR = 12
MIN_WINDOW = 300  # the recorded base rate is a 5m rate: no window can be shorter

_MATCHER_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_SELECTOR_RE = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$", re.DOTALL)


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str  # = != =~ !~
    value: str

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = re.fullmatch(self.value, value) is not None
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True)
class Selector:
    text: str
    metric: str
    matchers: tuple[Matcher, ...] = ()


def parse_selector(value: Any) -> Selector:
    """A counter selector: ``metric{label="v",other!~"5.."}``."""
    text = yamlsrc.nonempty_string(value)
    match = _SELECTOR_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a selector (metric{{label=\"value\",...}}); "
                         "use numerator_query/denominator_query for other PromQL")
    metric, body = match.group(1), match.group(2)
    matchers = []
    if body and body.strip():
        for part in _split_matchers(body):
            found = _MATCHER_RE.fullmatch(part)
            if not found:
                raise ValueError(f"{text!r}: {part.strip()!r} is not a label matcher (label=\"value\")")
            label, op, raw = found.groups()
            unescaped = raw.encode().decode("unicode_escape")
            if op in ("=~", "!~"):
                try:
                    re.compile(unescaped)
                except re.error as exc:
                    raise ValueError(f"{text!r}: regex {raw!r} does not compile: {exc}") from None
            matchers.append(Matcher(label, op, unescaped))
    return Selector(text.strip(), metric, tuple(matchers))


def _split_matchers(body: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in body:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if "".join(current).strip():
        parts.append("".join(current))
    return parts


def parse_target(value: Any) -> float:
    """``99.9%`` or ``0.999`` for ratios; any number for value KPIs (range checked by the caller)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:  # Decimal, so "99.9%" is exactly the float 0.999 and not 0.9990000000000001
            return float(Decimal(value.strip()[:-1]) / 100)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a percentage") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a target: use a number (0.999) or a percentage (\"99.9%\")")
    return float(value)


def _query_template(value: Any) -> str:
    text = yamlsrc.nonempty_string(value)
    if "{{window}}" not in text:
        raise ValueError("a raw query must contain {{window}} where the range goes, e.g. rate(x[{{window}}])")
    return text


def _alert_name(value: Any) -> str:
    if not isinstance(value, str) or not ALERT_NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid alert name")
    return value


@dataclass(frozen=True)
class BurnWindow:
    long: float
    short: float
    factor: float


@dataclass(frozen=True)
class Tier:
    severity: str  # page | ticket
    windows: tuple[BurnWindow, ...]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NoData:
    for_: float
    labels: dict[str, str] = field(default_factory=dict)
    name: str = "KPINoData"


@dataclass(frozen=True)
class Alerting:
    strategy: str  # burn_rate | threshold | none
    tiers: tuple[Tier, ...] = ()
    name: str | None = None  # of the main alert; None = KPIErrorBudgetBurn / KPIBelowTarget / KPIAboveTarget
    window: float = 3600  # threshold strategy: the window the value is judged over
    for_: float = 0
    labels: dict[str, str] = field(default_factory=dict)  # threshold strategy labels
    annotations: dict[str, str] = field(default_factory=dict)
    no_data: NoData | None = None


@dataclass(frozen=True)
class SupportingMetric:
    title: str
    query: str
    unit: str = DEFAULT_UNIT  # one of agent.kpi.units.UNITS


@dataclass(frozen=True)
class Kpi:
    name: str
    window: float
    target: float
    higher_is_better: bool
    alerting: Alerting
    description: str = ""
    objective: str = ""
    owner: str = ""
    numerator: Selector | None = None
    denominator: Selector | None = None
    numerator_query: str | None = None
    denominator_query: str | None = None
    value: str | None = None
    group_by: tuple[str, ...] = ()
    supporting_metrics: tuple[SupportingMetric, ...] = ()
    line: int = 0  # where the KPI starts in its file
    # (field path, line, PromQL) of every expression the user wrote, for errors found later by promtool
    expressions: tuple[tuple[str, int, str], ...] = field(default=(), compare=False)

    @property
    def is_ratio(self) -> bool:
        return self.value is None

    @property
    def error_budget(self) -> float:
        """The bad ratio allowed over the window."""
        return 1 - self.target if self.higher_is_better else self.target


@dataclass(frozen=True)
class ServiceSpec:
    file: str
    service: str
    kpis: tuple[Kpi, ...]
    labels: dict[str, str] = field(default_factory=dict)


def scaled_tiers(window: float) -> dict[str, tuple[BurnWindow, ...]]:
    """The Workbook's 30d tiers scaled to ``window``: long windows shrink or grow with the window, so each
    factor still means the same share of budget spent; short windows are long/12; both at least 5m and
    whole minutes."""
    scale = window / BASE_WINDOW
    result = {}
    for severity, tiers in BASE_TIERS.items():
        windows = []
        for long, factor in tiers:
            scaled_long = max(MIN_WINDOW, round(long * scale / 60) * 60)
            short = max(MIN_WINDOW, round(scaled_long / SHORT_WINDOW_DIVISOR / 60) * 60)
            windows.append(BurnWindow(float(scaled_long), float(short), factor))
        result[severity] = tuple(windows)
    return result


def _parse_tier(severity: str, raw: Any, fields: Fields, kpi_window: float) -> Tier | None:
    """``page: {labels, annotations}``; ``page: false`` disables the tier."""
    defaults = scaled_tiers(kpi_window)[severity]
    if raw is False:
        return None
    section = fields.section(severity)
    if section is None:
        return Tier(severity, defaults)
    labels = section.get("labels", yamlsrc.label_map, {}) or {}
    annotations = section.get("annotations", yamlsrc.string_map, {}) or {}
    section.finish()
    return Tier(severity, defaults, labels, annotations)


def _parse_alerting(fields: Fields | None, is_ratio: bool, window: float) -> Alerting:
    default_strategy = "burn_rate" if is_ratio else "threshold"
    tiers_default = scaled_tiers(window)
    page_long = tiers_default["page"][0].long
    if fields is None:
        defaults = tuple(Tier(s, w) for s, w in tiers_default.items()) if default_strategy == "burn_rate" else ()
        return Alerting(default_strategy, defaults, no_data=NoData(page_long))
    strategy = fields.get("strategy", yamlsrc.one_of("burn_rate", "threshold", "none"), default_strategy)
    if strategy == "burn_rate" and not is_ratio:
        fields.error("strategy", "burn_rate needs a ratio KPI; a value KPI uses threshold")
    tiers: list[Tier] = []
    if strategy == "burn_rate":
        for severity in ("page", "ticket"):
            tier = _parse_tier(severity, fields.raw(severity), fields, window)
            if tier:
                tiers.append(tier)
    else:
        for severity in ("page", "ticket"):
            if fields.has(severity):
                fields.error(severity, f"only burn_rate alerting has tiers (strategy is {strategy})")
    alert_window = fields.get("window", yamlsrc.duration, 3600.0)
    for_ = fields.get("for", yamlsrc.duration, 0.0) if fields.has("for") else 0.0
    labels = fields.get("labels", yamlsrc.label_map, {}) or {}
    annotations = fields.get("annotations", yamlsrc.string_map, {}) or {}
    if strategy == "burn_rate":
        for key in ("window", "for"):
            if fields.has(key):
                fields.error(key, "applies to threshold alerting; burn_rate windows come from the KPI window")
    name = fields.get("alert_name", _alert_name, None)
    no_data = _parse_no_data(fields, page_long)
    fields.finish()
    return Alerting(strategy or default_strategy, tuple(tiers), name, alert_window or 3600.0, for_ or 0.0, labels,
                    annotations, no_data)


def _parse_no_data(fields: Fields, default_for: float) -> NoData | None:
    raw = fields.raw("no_data")
    if raw is False:
        return None
    if raw is None or raw is True:
        return NoData(default_for)
    section = fields.section("no_data")
    if section is None:
        return NoData(default_for)
    for_ = section.get("for", yamlsrc.duration, default_for)
    labels = section.get("labels", yamlsrc.label_map, {}) or {}
    name = section.get("alert_name", _alert_name, "KPINoData")
    section.finish()
    return NoData(for_ or default_for, labels, name or "KPINoData")


def _parse_kpi(fields: Fields, line: int | None) -> Kpi | None:
    name = fields.get("name", yamlsrc.nonempty_string)
    if name and not KPI_NAME_RE.match(name):
        fields.error("name", f"{name!r} must match [a-z][a-z0-9_]*")
        name = None
    description = fields.get("description", yamlsrc.string, "")
    objective = fields.get("objective", yamlsrc.string, "")
    owner = fields.get("owner", yamlsrc.string, "")
    window = fields.get("window", yamlsrc.duration)
    if window is not None and window < 3600:
        fields.error("window", "must be at least 1h (burn-rate windows are derived from it)")
        window = None
    target = fields.get("target", parse_target)
    higher = fields.get("higher_is_better", yamlsrc.boolean, True)
    value = fields.get("value", yamlsrc.nonempty_string, None)
    numerator = denominator = None
    numerator_query = denominator_query = None
    expressions: list[tuple[str, int, str]] = []
    if value is not None:
        expressions.append((fields.field("value"), fields.line_of("value") or 0, value))
    ratio = fields.section("ratio")
    if ratio is not None:
        numerator = ratio.get("numerator", parse_selector, None)
        denominator = ratio.get("denominator", parse_selector, None)
        numerator_query = ratio.get("numerator_query", _query_template, None)
        denominator_query = ratio.get("denominator_query", _query_template, None)
        for side in ("numerator", "denominator"):
            if ratio.has(side) == ratio.has(f"{side}_query"):
                ratio.report.error(ratio.line, f"{ratio.path}.{side}",
                                   f"give exactly one of {side} (a selector) or {side}_query (PromQL)")
        for side, parsed in (("numerator", numerator), ("denominator", denominator),
                             ("numerator_query", numerator_query), ("denominator_query", denominator_query)):
            if parsed is not None:
                text = parsed.text if isinstance(parsed, Selector) else parsed.replace("{{window}}", "5m")
                expressions.append((ratio.field(side), ratio.line_of(side) or 0, text))
        ratio.finish()
    if (ratio is None) == (value is None):
        fields.report.error(fields.line, fields.path, "give exactly one of ratio or value")
    is_ratio = ratio is not None
    if target is not None and is_ratio and not 0 < target < 1:
        fields.error("target", f"a ratio target must be between 0 and 1 (0% and 100%) exclusive, got {target:g}")
        target = None
    group_by = fields.get("group_by", yamlsrc.list_of(yamlsrc.label_name), []) or []
    for reserved in ("kpi", "kpi_service", "le"):
        if reserved in group_by:
            fields.error("group_by", f"{reserved!r} is reserved")
    if value is not None and group_by:
        fields.error("group_by", "applies to ratio KPIs; aggregate inside the value expression instead")
    alerting = _parse_alerting(fields.section("alerting"), is_ratio, window or BASE_WINDOW)
    supporting = []
    for item, path, item_line in fields.items("supporting_metrics"):
        metric = Fields(item, path, fields.report, item_line)
        title = metric.get("title", yamlsrc.nonempty_string)
        query = metric.get("query", yamlsrc.nonempty_string)
        unit = metric.get("unit", yamlsrc.one_of(*UNITS), DEFAULT_UNIT)
        metric.finish()
        if title and query:
            supporting.append(SupportingMetric(title, query, unit))
            expressions.append((metric.field("query"), metric.line_of("query") or 0, query))
    fields.finish()
    if name is None or window is None or target is None:
        return None
    kpi = Kpi(name, window, target, higher, alerting, description or "", objective or "", owner or "",
              numerator, denominator, numerator_query, denominator_query, value, tuple(group_by),
              tuple(supporting), line or 0, tuple(expressions))
    _check_tiers_can_fire(kpi, fields)
    return kpi


def _check_tiers_can_fire(kpi: Kpi, fields: Fields) -> None:
    """A burn factor whose share of the budget would need a bad ratio above 100% can never fire."""
    for tier in kpi.alerting.tiers:
        for window in tier.windows:
            needed = window.factor * kpi.error_budget
            if needed >= 1:
                fields.error("alerting", (
                    f"the {tier.severity} tier can never fire: a burn rate of {window.factor:g}x over "
                    f"{yamlsrc.format_duration(window.long)} needs {needed:.0%} bad events with an error budget of "
                    f"{kpi.error_budget:.4g}; use strategy: threshold for a target like {kpi.target:.4g}, "
                    f"or disable the tier ({tier.severity}: false)"))
                return


def parse_spec(data: Any, file: str) -> tuple[ServiceSpec | None, Report]:
    report = Report(file)
    top = Fields(data if data is not None else yamlsrc.LocatedMap(), "", report, 1)
    service = top.get("service", yamlsrc.nonempty_string)
    if service and not re.match(r"^[a-zA-Z0-9_.-]+$", service):
        top.error("service", f"{service!r} may only contain letters, digits, '_', '-' and '.'")
        service = None
    labels = top.get("labels", yamlsrc.label_map, {}) or {}
    for reserved in ("kpi", "kpi_service", "kpi_severity", "alertname"):
        if reserved in labels:
            top.error("labels", f"{reserved!r} is set by the compiler")
    kpis: list[Kpi] = []
    seen: dict[str, int | None] = {}
    for item, path, line in top.items("kpis"):
        kpi = _parse_kpi(Fields(item, path, report, line), line)
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
    return ServiceSpec(file, service, tuple(kpis), labels), report


def load_spec(path: str | Path) -> ServiceSpec:
    """Load and validate one spec file; raises ConfigError with every problem."""
    spec, report = parse_spec(yamlsrc.load_file(path), str(path))
    report.raise_if_errors()
    assert spec is not None
    return spec


def spec_files(paths: list[str]) -> list[Path]:
    """Expand directories to the *.yaml / *.yml files inside, sorted, so `rules/` works as an argument."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            files.append(path)
    return files
