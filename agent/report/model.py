"""What a report holds once collected (``agent.report.collect``): each KPI's lines and charts, and the texts
every output format shows the same way (targets, values, moments)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.kpi.model import Kpi, ServiceSpec, SupportingMetric
from agent.kpi.units import significant
from agent.report.grid import DEFAULT_EVALUATION_INTERVAL, Period
from agent.report.judging import ERROR, NO_DATA, OK, PARTIAL, Line, Values
from agent.report.periods import Interval, PeriodChoice

# Exit codes of `kpi-agent report`; the most severe one that applies wins.
EXIT_COMPLETE = 0


EXIT_PARTIAL = 3  # some KPI has data for only part of the period


EXIT_NO_DATA = 4  # some KPI has no value at all (no samples, or no traffic)


EXIT_PROMETHEUS = 5  # Prometheus was unreachable or answered with an error


@dataclass(frozen=True)
class Chart:
    """A supporting metric's series over the period (one value per sample time)."""

    metric: SupportingMetric
    series: tuple[tuple[dict[str, str], Values], ...] = ()
    error: str = ""
    times: tuple[float, ...] = ()


@dataclass(frozen=True)
class KpiResult:
    spec: ServiceSpec
    kpi: Kpi
    lines: tuple[Line, ...] = ()
    charts: tuple[Chart, ...] = ()
    state: str = OK
    note: str = ""  # what is missing or failed, in a sentence
    period: Period | None = None  # the charts' buckets, when they differ from the report's (a fresh install)
    data_start: float | None = None  # the first sample, when it came after the period's start
    exclusions: tuple[Interval, ...] = ()
    alerts: tuple[Interval, ...] = ()

    @property
    def anchor(self) -> str:
        return f"{self.spec.service}-{self.kpi.name}"


@dataclass(frozen=True)
class Report:
    period: Period
    prometheus_url: str
    generated_at: float
    results: tuple[KpiResult, ...]
    unreachable: str = ""  # why Prometheus could not be asked at all
    evaluation_interval: float = DEFAULT_EVALUATION_INTERVAL
    choice: PeriodChoice | None = None
    queries: int = 0  # how many requests the report made of Prometheus

    @property
    def exit_code(self) -> int:
        states = {r.state for r in self.results}
        if self.unreachable or ERROR in states or any(c.error for r in self.results for c in r.charts):
            return EXIT_PROMETHEUS
        if NO_DATA in states:
            return EXIT_NO_DATA
        if PARTIAL in states:
            return EXIT_PARTIAL
        return EXIT_COMPLETE

    def problems(self) -> list[str]:
        """Every reason the report is not complete, one sentence each."""
        if self.unreachable:
            return [f"Prometheus could not be reached, so no KPI has a value: {self.unreachable}"]
        found = []
        for result in self.results:
            if result.state != OK:
                found.append(f"{result.spec.service}/{result.kpi.name}: {result.note}")
            for chart in result.charts:
                if chart.error:
                    found.append(f"{result.spec.service}/{result.kpi.name}: supporting metric "
                                 f"{chart.metric.title!r} failed: {chart.error}")
        return found


def target_text(kpi: Kpi) -> str:
    sign = "≥" if kpi.higher_is_better else "≤"
    return f"{sign} {format_kpi_value(kpi, kpi.target)}"


def format_kpi_value(kpi: Kpi, value: float) -> str:
    """A KPI value with enough decimals to tell it from its target: 99.95% against 99.9%, 99.987% against
    99.99%."""
    if not kpi.is_ratio:  # thousands grouped and whole (123,456), smaller numbers to 4 significant digits
        return f"{value:,.0f}" if abs(value) >= 1000 else significant(value, 4)
    target_decimals = len(f"{kpi.target * 100:.10g}".partition(".")[2])
    return f"{value * 100:.{max(2, target_decimals + 1)}f}%"
