"""The KPI spec model: one YAML file per service, validated into frozen dataclasses.

A KPI is a ratio of good to total events, judged against a target over a window, or a PromQL value. Ratios
come from two counters (``ratio``), a classic histogram's bucket under a bound (``latency``) or a 0/1 gauge
(``bool_gauge``); all compile to the same ``kpi:*`` series. Errors name file, line and field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from agent.config import values
from agent.config.fields import Fields
from agent.config.problems import Report
from agent.config.validation import label_name
from agent.config.yaml import LocatedMap, load_file
from agent.formatting import format_duration
from agent.kpi.units import DEFAULT_UNIT, UNITS
from agent.series.exposition import escape_label_value, go_float

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
# The only range read over raw series: every window that is a multiple of it is summed from recorded rates.
BASE_RATE_WINDOW = 300
MIN_WINDOW = 60  # a window shorter than this holds too few scrapes for rate()
DEFAULT_NO_DATA_FOR = 600.0
RESERVED_LABELS = ("kpi", "kpi_service", "kpi_severity", "kpi_term", "alertname")  # kpi_term: telescoped sums

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

    @property
    def text(self) -> str:
        return f'{self.label}{self.op}"{escape_label_value(self.value)}"'


@dataclass(frozen=True)
class Selector:
    text: str
    metric: str
    matchers: tuple[Matcher, ...] = ()


def make_selector(metric: str, matchers: tuple[Matcher, ...]) -> Selector:
    """A selector built from parts (the histogram shorthand's _bucket and _count selectors)."""
    body = ",".join(m.text for m in matchers)
    return Selector(f"{metric}{{{body}}}" if body else metric, metric, matchers)


def parse_selector(value: Any) -> Selector:
    """A series selector: ``metric{label="v",other!~"5.."}``."""
    text = values.nonempty_string(value)
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
    text = values.nonempty_string(value)
    if "{{window}}" not in text:
        raise ValueError("a raw query must contain {{window}} where the range goes, e.g. rate(x[{{window}}])")
    return text


def _alert_name(value: Any) -> str:
    if not isinstance(value, str) or not ALERT_NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid alert name")
    return value


def _bucket_bound(value: Any) -> float:
    bound = values.number(value)
    if not 0 < bound < math.inf:
        raise ValueError(f"a bucket bound must be a positive number, got {value!r}")
    return bound


def _burn_factor(value: Any) -> float:
    factor = values.number(value)
    if factor <= 0:
        raise ValueError(f"a burn factor must be greater than zero, got {value!r}")
    return factor


def bound_spellings(bound: float) -> list[str]:
    """How exporters write a bucket bound in ``le``: Go's client (``1``, ``1e+06``) and Python's (``1.0``)."""
    digits = Decimal(repr(bound)).normalize()
    exponent = digits.adjusted()
    if exponent < -4 or exponent >= 6:  # Go's %g with the shortest precision switches to an exponent here
        mantissa = f"{digits.scaleb(-exponent):f}"
        go = f"{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"
    else:
        go = f"{digits:f}"
    return list(dict.fromkeys([go_float(bound), go]))


def bound_matcher(bound: float) -> Matcher:
    spellings = bound_spellings(bound)
    if len(spellings) == 1:
        return Matcher("le", "=", spellings[0])
    return Matcher("le", "=~", "|".join(re.escape(s) for s in spellings))


@dataclass(frozen=True)
class Source:
    """One side of a ratio as written: a selector (read as a counter) or a PromQL template with {{window}}."""

    selector: Selector | None = None
    query: str | None = None

    @property
    def text(self) -> str:
        return self.selector.text if self.selector else str(self.query)


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
    for_: float = 0


@dataclass(frozen=True)
class NoData:
    for_: float  # metrics absent: the KPI is blind
    no_traffic_for: float  # metrics present but no event counted
    labels: dict[str, str] = field(default_factory=dict)
    name: str = "KPINoData"


@dataclass(frozen=True)
class Alerting:
    strategy: str  # burn_rate | threshold | none
    tiers: tuple[Tier, ...] = ()
    name: str | None = None  # of the main alert; None = KPIErrorBudgetBurn / KPIBelowTarget / KPIAboveTarget
    window: float = 3600  # threshold strategy: the window the value is judged over
    for_: float = 0
    labels: dict[str, str] = field(default_factory=dict)  # on the main alert(s), under the tiers' own
    annotations: dict[str, str] = field(default_factory=dict)
    no_data: NoData | None = None
    min_bad_events: int = 0  # burn_rate: a window pair fires only once this many events failed in its long window
    severity: str | None = None  # threshold strategy: its kpi_severity, if any (else routed by alert name)


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
    indicator: str = "ratio"  # ratio | latency | bool_gauge | value
    numerator: Source | None = None  # good events (bad events when lower is better)
    bad: Source | None = None  # ratio.bad: good events are the denominator's minus these
    denominator: Source | None = None
    gauge: Selector | None = None  # bool_gauge: each sample is 1 (good) or 0 (bad)
    value: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # on every rule of this KPI
    group_by: tuple[str, ...] = ()
    supporting_metrics: tuple[SupportingMetric, ...] = ()
    line: int = 0  # where the KPI starts in its file
    # (field path, line, PromQL) of every expression the user wrote, for errors found later by promtool
    expressions: tuple[tuple[str, int, str], ...] = field(default=(), compare=False)
    # (field path, line, PromQL) of what the indicator reads: selectors and value, checked against live series
    indicator_expressions: tuple[tuple[str, int, str], ...] = field(default=(), compare=False)

    @property
    def is_ratio(self) -> bool:
        return self.value is None

    @property
    def error_budget(self) -> float:
        """The bad ratio allowed over the window."""
        return 1 - self.target if self.higher_is_better else self.target

    @property
    def fills_missing_good_events(self) -> bool:
        """Whether missing good-event series count as zero only once good events have been seen: a numerator
        that never matched anything is a mistake (KPINumeratorAbsent), not an outage."""
        return self.numerator is not None and self.higher_is_better


@dataclass(frozen=True)
class ServiceSpec:
    file: str
    service: str
    kpis: tuple[Kpi, ...]
    labels: dict[str, str] = field(default_factory=dict)


def round_window(seconds: float) -> float:
    """A derived window rounded to whole base-rate windows (at least one), so it is summed from recorded rates."""
    return float(max(BASE_RATE_WINDOW, round(seconds / BASE_RATE_WINDOW) * BASE_RATE_WINDOW))


def scaled_tiers(window: float) -> dict[str, tuple[BurnWindow, ...]]:
    """The Workbook's 30d tiers scaled to ``window``: long windows shrink or grow with the window, so each
    factor still means the same share of budget spent; short windows are long/12; both rounded to whole 5m."""
    scale = window / BASE_WINDOW
    result = {}
    for severity, tiers in BASE_TIERS.items():
        windows = []
        for long, factor in tiers:
            scaled_long = round_window(long * scale)
            windows.append(BurnWindow(scaled_long, round_window(scaled_long / SHORT_WINDOW_DIVISOR), factor))
        result[severity] = tuple(windows)
    return result


def _window(value: Any) -> float:
    seconds = values.duration(value)
    if seconds < MIN_WINDOW or seconds % 60:
        raise ValueError(f"{value!r}: alert windows are whole minutes, at least 1m")
    return seconds


def _parse_windows(section: Fields, kpi_window: float) -> tuple[BurnWindow, ...] | None:
    windows = []
    for item, path, line in section.items("windows"):
        pair = Fields(item, path, section.report, line)
        long = pair.get("long", _window)
        short = pair.get("short", _window)
        factor = pair.get("factor", _burn_factor)
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


def _parse_tier(severity: str, fields: Fields, kpi_window: float, budget: float | None) -> Tier | None:
    """``page: {windows, for, labels, annotations}``; ``page: false`` disables the tier."""
    defaults = scaled_tiers(kpi_window)[severity]
    raw = fields.raw(severity)
    if raw is False:
        return None
    section = fields.section(severity)
    if section is None:
        tier = Tier(severity, defaults)
        where, line = fields.path, fields.line
    else:
        windows = _parse_windows(section, kpi_window)
        labels = section.get("labels", values.label_map, {}) or {}
        annotations = section.get("annotations", values.string_map, {}) or {}
        for_ = section.get("for", values.duration, 0.0) if section.has("for") else 0.0
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


def unfireable_window(windows: Sequence[BurnWindow], budget: float) -> BurnWindow | None:
    """The first window whose burn rate needs 100% bad events or more with this error budget: a tier that has
    one can never fire."""
    return next((window for window in windows if window.factor * budget >= 1), None)


def _parse_alerting(fields: Fields | None, kpi_fields: Fields, is_ratio: bool, window: float,
                    budget: float | None) -> Alerting:
    default_strategy = "burn_rate" if is_ratio else "threshold"
    tiers_default = scaled_tiers(window)
    no_traffic_for = tiers_default["page"][0].long
    if fields is None:  # defaults, whose problems (a tier that cannot fire) are reported on the KPI
        fields = Fields({}, kpi_fields.field("alerting"), kpi_fields.report, kpi_fields.line)
    strategy = fields.get("strategy", values.one_of("burn_rate", "threshold", "none"), default_strategy)
    if strategy == "burn_rate" and not is_ratio:
        fields.error("strategy", "burn_rate needs a ratio KPI; a value KPI uses threshold")
    tiers: list[Tier] = []
    if strategy == "burn_rate":
        for severity in ("page", "ticket"):
            tier = _parse_tier(severity, fields, window, budget)
            if tier:
                tiers.append(tier)
        if tiers and tiers[0].severity == "page":
            no_traffic_for = tiers[0].windows[0].long  # by then a total outage would have paged
    else:
        for severity in ("page", "ticket"):
            if fields.has(severity):
                fields.error(severity, f"only burn_rate alerting has tiers (strategy is {strategy})")
    alert_window = fields.get("window", values.duration, 3600.0)
    for_ = fields.get("for", values.duration, 0.0) if fields.has("for") else 0.0
    labels = fields.get("labels", values.label_map, {}) or {}
    annotations = fields.get("annotations", values.string_map, {}) or {}
    threshold_severity = fields.get("severity", values.one_of("page", "ticket"), None)
    min_bad_events = fields.get("min_bad_events", values.positive_integer, 0)
    if strategy == "burn_rate":
        for key in ("window", "for", "severity"):
            if fields.has(key):
                fields.error(key, "applies to threshold alerting; burn_rate windows and severities come from "
                                  "its tiers")
    elif fields.has("min_bad_events"):
        fields.error("min_bad_events", "applies to burn_rate alerting")
    if alert_window is not None and alert_window % 60:
        fields.error("window", "must be whole minutes")
    for reserved in RESERVED_LABELS:
        if reserved in labels:
            fields.error("labels", f"{reserved!r} is set by the compiler")
    name = fields.get("alert_name", _alert_name, None)
    no_data = _parse_no_data(fields, no_traffic_for)
    fields.finish()
    return Alerting(strategy or default_strategy, tuple(tiers), name, alert_window or 3600.0, for_ or 0.0, labels,
                    annotations, no_data, min_bad_events or 0, threshold_severity)


def _parse_no_data(fields: Fields, no_traffic_for: float) -> NoData | None:
    raw = fields.raw("no_data")
    if raw is False:
        return None
    section = fields.section("no_data") if isinstance(raw, dict) else None
    if section is None:
        if raw not in (None, True):
            fields.error("no_data", "expected false, true or a mapping {for, no_traffic_for, labels, alert_name}")
        return NoData(DEFAULT_NO_DATA_FOR, no_traffic_for)
    for_ = section.get("for", values.duration, DEFAULT_NO_DATA_FOR)
    quiet_for = section.get("no_traffic_for", values.duration, no_traffic_for)
    labels = section.get("labels", values.label_map, {}) or {}
    name = section.get("alert_name", _alert_name, "KPINoData")
    section.finish()
    return NoData(for_ or DEFAULT_NO_DATA_FOR, quiet_for or no_traffic_for, labels, name or "KPINoData")


@dataclass
class _Indicator:
    kind: str
    numerator: Source | None = None
    bad: Source | None = None
    denominator: Source | None = None
    gauge: Selector | None = None
    value: str | None = None


def _parse_ratio(ratio: Fields, higher: bool, found: _Indicator,
                 expressions: list[tuple[str, int, str]]) -> None:
    sides: dict[str, Source] = {}
    for side in ("numerator", "bad", "denominator"):
        selector = ratio.get(side, parse_selector, None)
        query = ratio.get(f"{side}_query", _query_template, None)
        for key, text in ((side, selector.text if selector else None),
                          (f"{side}_query", query.replace("{{window}}", "5m") if query else None)):
            if text is not None:
                expressions.append((ratio.field(key), ratio.line_of(key) or 0, text))
        if selector or query:
            sides[side] = Source(selector, query)
        if ratio.has(side) and ratio.has(f"{side}_query"):
            ratio.report.error(ratio.line, f"{ratio.path}.{side}",
                               f"give {side} (a selector) or {side}_query (PromQL), not both")
    good_keys = [k for k in ("numerator", "numerator_query", "bad", "bad_query") if ratio.has(k)]
    if len(good_keys) != 1:
        ratio.report.error(ratio.line, f"{ratio.path}.numerator",
                           "give exactly one of numerator, numerator_query (good events), bad or bad_query "
                           "(failed events)")
    if not (ratio.has("denominator") or ratio.has("denominator_query")):
        ratio.report.error(ratio.line, f"{ratio.path}.denominator",
                           "give exactly one of denominator (a selector) or denominator_query (PromQL)")
    if "bad" in sides and not higher:
        ratio.error(good_keys[0], "bad events make the good ratio (higher is better); for an error rate use "
                                  "numerator with higher_is_better: false")
    ratio.finish()
    found.numerator, found.bad, found.denominator = sides.get("numerator"), sides.get("bad"), sides.get("denominator")


def _parse_latency(latency: Fields, higher: bool, found: _Indicator,
                   expressions: list[tuple[str, int, str]]) -> None:
    histogram = latency.get("histogram", parse_selector)
    bound = latency.get("le", _bucket_bound)
    latency.finish()
    if not higher:
        latency.report.error(latency.line, latency.path, "counts requests at most `le` seconds long: higher is "
                                                         "better (remove higher_is_better: false)")
    if histogram is None or bound is None:
        return
    if histogram.metric.endswith(("_bucket", "_count", "_sum")):
        latency.error("histogram", f"give the histogram's name without its suffix: "
                                   f"{histogram.metric.rsplit('_', 1)[0]}")
        return
    if any(m.label == "le" for m in histogram.matchers):
        latency.error("histogram", "set the bound with le: <seconds>, not in the selector")
        return
    good = make_selector(f"{histogram.metric}_bucket", (*histogram.matchers, bound_matcher(bound)))
    total = make_selector(f"{histogram.metric}_count", histogram.matchers)
    line = latency.line_of("histogram") or 0
    expressions.extend([(latency.field("histogram"), line, good.text), (latency.field("histogram"), line, total.text)])
    found.numerator, found.denominator = Source(good), Source(total)


def _parse_indicator(fields: Fields, higher: bool, expressions: list[tuple[str, int, str]]) -> _Indicator | None:
    given = [key for key in ("ratio", "latency", "bool_gauge", "value") if fields.has(key)]
    if len(given) != 1:
        fields.report.error(fields.line, fields.path, "give exactly one of ratio, latency, bool_gauge or value"
                            + (f" (got {', '.join(given)})" if given else ""))
    found = _Indicator(given[0] if given else "ratio")
    value = fields.get("value", values.nonempty_string, None)
    if value is not None:
        expressions.append((fields.field("value"), fields.line_of("value") or 0, value))
        found.value = value
    gauge = fields.get("bool_gauge", parse_selector, None)
    if gauge is not None:
        expressions.append((fields.field("bool_gauge"), fields.line_of("bool_gauge") or 0, gauge.text))
        found.gauge = gauge
    ratio = fields.section("ratio")
    if ratio is not None:
        _parse_ratio(ratio, higher, found, expressions)
    latency = fields.section("latency")
    if latency is not None:
        _parse_latency(latency, higher, found, expressions)
    return found if len(given) == 1 else None


def _parse_kpi(fields: Fields, line: int | None, spec_labels: dict[str, str]) -> Kpi | None:
    name = fields.get("name", values.nonempty_string)
    if name and not KPI_NAME_RE.match(name):
        fields.error("name", f"{name!r} must match [a-z][a-z0-9_]*")
        name = None
    description = fields.get("description", values.string, "")
    objective = fields.get("objective", values.string, "")
    owner = fields.get("owner", values.string, "")
    window = fields.get("window", values.duration)
    if window is not None and window < 3600:
        fields.error("window", "must be at least 1h (burn-rate windows are derived from it)")
        window = None
    elif window is not None and window % BASE_RATE_WINDOW:
        fields.error("window", "must be a whole number of 5m (it is summed from recorded 5m rates)")
        window = None
    target = fields.get("target", parse_target)
    higher = fields.get("higher_is_better", values.boolean, True)
    expressions: list[tuple[str, int, str]] = []
    indicator = _parse_indicator(fields, higher, expressions)
    indicator_expressions = list(expressions)
    is_ratio = indicator is None or indicator.kind != "value"
    if target is not None and is_ratio and not 0 < target < 1:
        fields.error("target", f"a ratio target must be between 0 and 1 (0% and 100%) exclusive, got {target:g}")
        target = None
    labels = fields.get("labels", values.label_map, {}) or {}
    group_by = fields.get("group_by", values.list_of(label_name), []) or []
    for reserved in ("kpi", "kpi_service", "kpi_term", "le"):
        if reserved in group_by:
            fields.error("group_by", f"{reserved!r} is reserved")
    for reserved in RESERVED_LABELS:
        if reserved in labels:
            fields.error("labels", f"{reserved!r} is set by the compiler")
    for clash in sorted(set(group_by) & (set(labels) | set(spec_labels))):
        fields.error("group_by", f"{clash!r} is also a static label of the {'KPI' if clash in labels else 'spec'}")
    if not is_ratio and group_by:
        fields.error("group_by", "applies to ratio KPIs; aggregate inside the value expression instead")
    budget = None
    if target is not None:
        budget = 1 - target if higher else target
    alerting = _parse_alerting(fields.section("alerting"), fields, is_ratio, window or BASE_WINDOW,
                               budget if is_ratio else None)
    supporting = []
    for item, path, item_line in fields.items("supporting_metrics"):
        metric = Fields(item, path, fields.report, item_line)
        title = metric.get("title", values.nonempty_string)
        query = metric.get("query", values.nonempty_string)
        unit = metric.get("unit", values.one_of(*UNITS), DEFAULT_UNIT)
        metric.finish()
        if title and query:
            supporting.append(SupportingMetric(title, query, unit))
            expressions.append((metric.field("query"), metric.line_of("query") or 0, query))
    fields.finish()
    if name is None or window is None or target is None or indicator is None:
        return None
    return Kpi(name, window, target, higher, alerting, description or "", objective or "", owner or "",
               indicator.kind, indicator.numerator, indicator.bad, indicator.denominator, indicator.gauge,
               indicator.value, labels, tuple(group_by), tuple(supporting), line or 0, tuple(expressions),
               tuple(indicator_expressions))


def parse_spec(data: Any, file: str) -> tuple[ServiceSpec | None, Report]:
    report = Report(file)
    top = Fields(data if data is not None else LocatedMap(), "", report, 1)
    service = top.get("service", values.nonempty_string)
    if service and not re.match(r"^[a-zA-Z0-9_.-]+$", service):
        top.error("service", f"{service!r} may only contain letters, digits, '_', '-' and '.'")
        service = None
    labels = top.get("labels", values.label_map, {}) or {}
    for reserved in RESERVED_LABELS:
        if reserved in labels:
            top.error("labels", f"{reserved!r} is set by the compiler")
    kpis: list[Kpi] = []
    seen: dict[str, int | None] = {}
    for item, path, line in top.items("kpis"):
        kpi = _parse_kpi(Fields(item, path, report, line), line, labels)
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
    spec, report = parse_spec(load_file(path), str(path))
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
