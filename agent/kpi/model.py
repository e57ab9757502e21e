"""The KPI model: what a validated spec holds, as frozen dataclasses. No parsing here (agent.kpi.spec reads
files into these), no PromQL (agent.kpi.compiler writes it).

A KPI is a ratio of good to total events, judged against a target over a window, or a PromQL value. Ratios
come from two counters (``ratio``), a classic histogram's bucket under a bound (``latency``) or a 0/1 gauge
(``bool_gauge``); all compile to the same ``kpi:*`` series.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from agent.kpi.units import DEFAULT_UNIT
from agent.series.exposition import escape_label_value

# (field path, line, PromQL) of an expression a user wrote, for problems found later (promtool, Prometheus)
Expression = tuple[str, int, str]


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


@dataclass(frozen=True)
class Events:
    """The events one side of a ratio counts, as written: a selector (read as a counter) or a PromQL template
    with {{window}} (its per-second rate over that window)."""

    selector: Selector | None = None
    query: str | None = None

    @property
    def text(self) -> str:
        return self.selector.text if self.selector else str(self.query)


@dataclass(frozen=True)
class BurnWindow:
    """One window pair of a burn-rate tier: fires when both windows burn faster than ``factor``."""

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
    name: str  # of the alert (conventions.NO_DATA_ALERT unless the spec renames it)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Alerting:
    strategy: str  # burn_rate | threshold | none
    tiers: tuple[Tier, ...] = ()
    name: str | None = None  # of the main alert; None: the strategy's default (conventions.main_alert_name)
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
class Goal:
    """A target to reach by a due date, from a baseline: "conversion 2.5% -> 3% by 2027-03-31"."""

    target: float
    due: float  # Unix seconds: the end of the due day in the spec's time zone
    start: float  # when the goal was set: the baseline's time, and the earliest day of the trend
    baseline: float | None = None  # the value then; None: the first week's value
    text: str = ""  # how people say it


@dataclass(frozen=True)
class Exclusion:
    """A planned window left out of a KPI's values and budgets: one, or recurring by an RFC 5545 rule."""

    start: datetime  # aware: the first (or only) window's start
    duration: float  # seconds of elapsed time
    reason: str = ""
    rrule: str = ""  # FREQ=WEEKLY;BYDAY=SU; empty: one window


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
    numerator: Events | None = None  # good events (bad events when lower is better)
    bad: Events | None = None  # ratio.bad: good events are the denominator's minus these
    denominator: Events | None = None
    gauge: Selector | None = None  # bool_gauge: each sample is 1 (good) or 0 (bad)
    value: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # on every rule of this KPI
    group_by: tuple[str, ...] = ()
    supporting_metrics: tuple[SupportingMetric, ...] = ()
    line: int = 0  # where the KPI starts in its file
    # every expression the user wrote, for errors found later by promtool
    expressions: tuple[Expression, ...] = field(default=(), compare=False)
    # what the indicator reads (selectors and value), checked against live series
    indicator_expressions: tuple[Expression, ...] = field(default=(), compare=False)
    calendar: str = ""  # day | week | month | quarter | year: judged per calendar period; "": rolling window
    goals: tuple[Goal, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()  # its own and its spec's

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
    time_zone: str = "UTC"  # of calendar periods, goal dates and exclusion times written without an offset
