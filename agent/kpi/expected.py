"""What a KPI's alerts must do on a synthetic history, worked out from what the spec says (a window's burn rate
is the share of its events that failed, over the error budget), not from the compiled rules: the generated
promtool tests (agent.kpi.promtest) hold the rules to it.

promtool evaluates the rules every ``interval`` of a test. Where that is longer than 5m, a telescoped window can
only sum the slices recorded at evaluations: the others are left out, as when Prometheus misses evaluations,
so the window reads one 5m rate per interval. ``exact_interval`` says whether every window an alert reads is
still counted exactly then, for a history whose phases change only on the interval's grid (each 5m rate then
stands for its whole interval). Its event counts shrink with the slices left out (``coverage``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from agent.kpi.model import BurnWindow, Kpi
from agent.kpi.synthetic import EVENTS_PER_MINUTE, STEP, Series, written_share
from agent.kpi.windows import BASE_RATE_WINDOW, WindowPlan

FLOAT_NOISE = 1e-6  # relative: PromQL adds the same numbers in another order
BEFORE, AFTER = 0.9, 1.1  # an onset's checks: 10% of the way to the crossing either side
MINUTE = 60.0
GAUGE_SAMPLES_PER_RATE = 6  # a 5m range holds the samples at both ends: 6 one-minute samples, not 5

Slices = list[tuple[float, float]]  # (offset, weight) of the 5m rates a recorded window sums


@dataclass(frozen=True)
class Phase:
    share: float  # of events that fail (of a 0/1 gauge: of samples that are 0)
    minutes: int


@dataclass(frozen=True)
class Alert:
    """What the model needs of an alerting rule: its window pairs (each fires when both windows burn faster than
    its factor), its ``for``, and the min_bad_events guard on each pair's long window. A threshold alert is one
    pair of its window with itself at factor 1 (the ratio is on the wrong side of the target)."""

    windows: tuple[BurnWindow, ...]
    for_: float = 0
    min_bad_events: int = 0


def slices(plan: WindowPlan, window: float, interval: float) -> Slices | None:
    """The 5m rates the recorded ``window`` sums when rules run every ``interval`` (a slice recorded between
    evaluations is left out), with their weights; None for a window read from raw series."""
    if window == BASE_RATE_WINDOW:
        return [(0.0, 1.0)]
    terms = plan.recorded.get(window)
    if not terms:
        return None
    uniform = len({level for level, _ in terms}) == 1
    found: Slices = []
    for level, offset in terms:
        if offset % interval:
            continue
        weight = 1 / len(terms) if uniform else level / window
        found.extend((offset + inner, weight * inner_weight)
                     for inner, inner_weight in slices(plan, level, interval) or [(0.0, 1.0)])
    return found


def exact_interval(plan: WindowPlan, windows: Iterable[float], interval: float) -> bool:
    """Whether rules evaluated every ``interval`` count each of ``windows`` exactly for a history that changes
    only on that grid: every slice recorded (an interval that divides 5m), or one 5m rate per interval, all of
    one weight, covering the window (or a window no longer than the interval: one rate at its end)."""
    if interval <= BASE_RATE_WINDOW:
        return BASE_RATE_WINDOW % interval == 0
    for window in windows:
        found = slices(plan, window, interval)
        if found is None:  # a raw range: it covers whole intervals, or lies inside one
            if window > interval and window % interval:
                return False
        elif window <= interval:
            if [offset for offset, _ in found] != [0.0]:
                return False
        elif window % interval or sorted(offset for offset, _ in found) != [
                k * interval for k in range(int(window // interval))] or len({round(w, 12) for _, w in found}) != 1:
            return False
    return True


def coverage(plan: WindowPlan, window: float, interval: float) -> float:
    """The share of ``window``'s events its recorded rate counts when rules run every ``interval``."""
    found = slices(plan, window, interval)
    return 1.0 if found is None else sum(weight for _, weight in found)


@dataclass
class History:
    """Constant traffic from the first sample on, in phases of a failed share; the rules evaluated every
    ``interval``. Times are seconds from the first sample."""

    phases: list[Phase]
    budget: float
    gauge: bool
    plan: WindowPlan
    interval: float
    count_every_slice: bool = False  # event counts as if no slice were left out

    @property
    def end(self) -> float:
        return sum(phase.minutes for phase in self.phases) * 60.0

    def share(self, start: float, end: float) -> float:
        """The share of the events in (start, end] that failed."""
        failed, at = 0.0, 0.0
        for phase in self.phases:
            until = at + phase.minutes * 60
            failed += phase.share * max(0.0, min(until, end) - max(at, start))
            at = until
        return failed / (end - start)

    def burn(self, window: float, at: float) -> float:
        assert window <= at <= self.end, (window, at, self.end)  # the window holds data only
        return self.share(at - window, at) / self.budget

    def _uncertainty(self, window: float) -> float:
        """How far the rules' burn over ``window`` may be from ``burn``: float noise, and for a gauge read every
        slice, the sample at a phase change that two 5m ranges share (both ends of a range count)."""
        highest = max(phase.share for phase in self.phases) / self.budget
        shared = len(self.phases) - 1 if self.gauge and self.interval <= BASE_RATE_WINDOW else 0
        return highest * (FLOAT_NOISE + shared * STEP / window)

    def burn_range(self, window: float, at: float) -> tuple[float, float, float]:
        """(burn, lowest, highest) the rules may record."""
        burn, off = self.burn(window, at), self._uncertainty(window)
        return burn, burn - off, burn + off

    def _failed_events(self, window: float, at: float) -> tuple[float, float]:
        """(fewest, most) failed events the min_bad_events guard may count in ``window``."""
        counted = 1.0 if self.count_every_slice else coverage(self.plan, window, self.interval)
        failing = self.share(at - window, at) * window * counted  # seconds of traffic, had it all failed
        if not self.gauge:
            events = failing * EVENTS_PER_MINUTE / 60
            return events * (1 - FLOAT_NOISE), events * (1 + FLOAT_NOISE)
        shared = len(self.phases) - 1
        samples = failing / STEP
        return samples - shared, samples * GAUGE_SAMPLES_PER_RATE / 5 + shared

    def _active(self, alert: Alert, at: float, most: bool) -> bool:
        side = 2 if most else 1
        for pair in alert.windows:
            if all(self.burn_range(window, at)[side] > pair.factor for window in (pair.long, pair.short)):
                if not alert.min_bad_events or self._failed_events(pair.long, at)[side - 1] >= alert.min_bad_events:
                    return True
        return False

    def firing(self, alert: Alert, at: float) -> bool | None:
        """Whether ``alert`` fires at ``at`` (its condition held at every evaluation of its last ``for``), or
        None when it is too close to call."""
        evaluations = [at - k * self.interval for k in range(int(alert.for_ // self.interval) + 1)]
        least = all(self._active(alert, t, most=False) for t in evaluations)
        most = all(self._active(alert, t, most=True) for t in evaluations)
        return least if least == most else None

    def pair_active(self, pair: BurnWindow, at: float) -> bool | None:
        """Whether one window pair's condition holds at ``at`` (None: too close to call)."""
        least = self._active(Alert((pair,)), at, most=False)
        return least if least == self._active(Alert((pair,)), at, most=True) else None


def round_up(seconds: float, interval: float) -> float:
    return -(-seconds // interval) * interval


def round_down(seconds: float, interval: float) -> float:
    return seconds // interval * interval


def evaluation_intervals(*preferred: float) -> list[float]:
    """Evaluation intervals to try, fewest evaluations first: the preferred ones that land on the 5m offsets
    telescoped windows read or on whole multiples of them, then 5m, then a minute."""
    usable = [i for i in preferred if i % MINUTE == 0 and (i % BASE_RATE_WINDOW == 0 or BASE_RATE_WINDOW % i == 0)]
    return list(dict.fromkeys([*sorted(usable, reverse=True), float(BASE_RATE_WINDOW), MINUTE]))


@dataclass
class Onset:
    """A history in three phases: ``before`` for as long as the alert's longest window, ``during`` until the
    alert must fire, ``before`` again; the instants it is judged at, and what the alert must do then."""

    history: History
    healthy: float  # seconds of the first phase
    checks: list[tuple[float, bool]]  # (seconds, fires)
    burns: list[tuple[float, float, float]]  # (seconds, the tested long window's burn, tolerance)


def find_onset(kpi: Kpi, series: Series, plan: WindowPlan, alert: Alert, pair: BurnWindow,
               shares: tuple[float, float], intervals: list[float], resolve: bool) -> Onset | None:
    """The cheapest history on which ``pair`` turns from quiet to active 10% of the way either side of where
    ``shares`` (before, during) make its long window cross its factor; None if none tells them apart."""
    before, during = (written_share(series, share) for share in shares)
    start, burn = before / kpi.error_budget, during / kpi.error_budget
    if not start < pair.factor < burn:
        return None  # the synthetic traffic cannot put a share that small (or large) on either side of it
    crossing = pair.long * (pair.factor - start) / (burn - start)
    windows = [w for p in alert.windows for w in (p.long, p.short)]
    for interval in intervals:
        if alert.for_ % interval or not exact_interval(plan, windows, interval):
            continue
        healthy = round_up(max(windows), interval)
        quiet = round_down(BEFORE * crossing, interval)
        fires = min(round_up(AFTER * crossing, interval), round_down(pair.long, interval))
        after = round_up(pair.short, interval) if resolve else 0.0
        if quiet < interval or fires <= quiet:
            continue
        history = History([Phase(before, int(healthy // 60)), Phase(during, int((fires + alert.for_) // 60)),
                           Phase(before, int(after // 60))], kpi.error_budget, bool(series.gauge), plan, interval)
        if history.pair_active(pair, healthy + quiet) is not False or \
                history.pair_active(pair, healthy + fires) is not True:
            continue
        instants = [healthy + quiet + alert.for_, healthy + fires + alert.for_]
        if resolve:
            instants.append(healthy + fires + alert.for_ + after)
        verdicts = [history.firing(alert, at) for at in instants]
        if any(verdict is None for verdict in verdicts) or (alert.min_bad_events and verdicts != [
                replace(history, count_every_slice=True).firing(alert, at) for at in instants]):
            continue  # too close to call, or the guard would count differently when every slice is recorded
        burns = []
        for at in (healthy + quiet, healthy + fires):
            value, _, highest = history.burn_range(pair.long, at)
            burns.append((at, value, max(highest - value, FLOAT_NOISE * max(value, 1.0))))
        return Onset(history, healthy, [(at, bool(v)) for at, v in zip(instants, verdicts, strict=True)], burns)
    return None
