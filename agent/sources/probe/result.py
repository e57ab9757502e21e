"""What one probe attempt records, and how a prober says it failed.

A prober records into a ``ProbeResult`` as it goes (what was measured before a timeout stays, as in
blackbox_exporter); the framework then makes the target's series exactly what the last attempt recorded.
Writes to a family the target does not export (one the source omits, or one its kind did not declare) are
dropped here, so they cost nothing further.
"""

from __future__ import annotations

from agent.series.family import FamilySpec

Series = dict[tuple[str, ...], float]


class ProbeFailed(Exception):
    """A failure of the target (not of the agent): ``result`` is a ``probes_total`` result label of the kind,
    ``reason`` the words operators read on the status page and in logs (no secrets, under 300 characters)."""

    def __init__(self, result: str, reason: str):
        super().__init__(reason)
        self.result = result
        self.reason = reason


class ProbeResult:
    """One attempt's measurements, by family name."""

    __slots__ = ("deadline", "timeout", "wanted", "values", "counts")

    def __init__(self, deadline: float, timeout: float, wanted: frozenset[str]):
        self.deadline = deadline  # loop time at which the attempt is cancelled
        self.timeout = timeout  # seconds allowed per attempt
        self.wanted = wanted  # family names the target exports
        self.values: dict[str, Series] = {}
        self.counts: dict[str, Series] | None = None  # what count() added to counters kept across probes

    def set(self, spec: FamilySpec, value: float, labels: tuple[str, ...] = ()) -> None:
        """A value of the family (last write wins)."""
        if spec.name in self.wanted:
            series = self.values.get(spec.name)
            if series is None:
                self.values[spec.name] = {labels: value}
            else:
                series[labels] = value

    def add(self, spec: FamilySpec, value: float, labels: tuple[str, ...] = ()) -> None:
        """Add to a value (phases summed over redirects or steps)."""
        if spec.name in self.wanted:
            series = self.values.setdefault(spec.name, {})
            series[labels] = series.get(labels, 0.0) + value

    def info(self, spec: FamilySpec, labels: tuple[str, ...]) -> None:
        """The one series of an info family (value 1), replacing any other."""
        if spec.name in self.wanted:
            self.values[spec.name] = {labels: 1.0}

    def series(self, spec: FamilySpec, series: Series) -> None:
        """Exactly these series of a family (what a JSON body held)."""
        if spec.name in self.wanted:
            self.values[spec.name] = series

    def count(self, spec: FamilySpec, amount: float = 1.0, labels: tuple[str, ...] = ()) -> None:
        """Add to a counter of the kind (one of its ``probe_families``): unlike the gauges, a counter is kept
        across probes and only grows (packets sent, so loss over any window is a ratio of increases). Counted
        after every attempt, a failed one included."""
        if spec.name in self.wanted:
            if self.counts is None:
                self.counts = {}
            series = self.counts.setdefault(spec.name, {})
            series[labels] = series.get(labels, 0.0) + amount

    def wants(self, spec: FamilySpec) -> bool:
        """Whether the target exports the family: skip work whose only use is a family nobody exports."""
        return spec.name in self.wanted
