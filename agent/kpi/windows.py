"""Every window decision of the KPI rules, in one place: the burn-rate tiers (the SRE Workbook's, scaled to
a KPI's window), the windows a KPI's rules record, and how each longer window is *telescoped* from shorter
recorded rates.

Raw series are read once per KPI and evaluation, as 5m rates. Every longer window that is a whole number of
5m is the mean of a shorter recorded rate taken at consecutive offsets (the 1h rate is the 30m rate now and
30m ago). Each term covers its own slice of the window exactly once, so the result is what a raw rate over
the whole window counts (traffic-weighted, no smoothing lag), at the cost of a few lookups of one recorded
series instead of a pass over days of raw samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agent.kpi.model import BurnWindow, Kpi, Tier

# Multi-window multi-burn-rate tiers of the SRE Workbook for a 30-day window: (long window, burn factor).
# Each factor means the same share of budget spent in its long window (2% in 1h, 5% in 6h, 10% in 1d, 10% in 3d).
BASE_WINDOW = 30 * 86400
BASE_TIERS: dict[str, tuple[tuple[float, float], ...]] = {
    "page": ((3600, 14.4), (6 * 3600, 6.0)),
    "ticket": ((86400, 3.0), (3 * 86400, 1.0)),
}
SEVERITIES = tuple(BASE_TIERS)  # page, ticket: the order tiers are read and compiled in
SHORT_WINDOW_DIVISOR = 12
# The only range read over raw series: every window that is a multiple of it is summed from recorded rates.
BASE_RATE_WINDOW = 300
MIN_KPI_WINDOW = 3600  # burn-rate windows are derived from the KPI's window: shorter ones leave none
MIN_WINDOW = 60  # an alert window shorter than this holds too few scrapes for rate()
MAX_TERMS = 12  # a telescoped window sums at most this many terms; longer ones get an intermediate window
DEFAULT_THRESHOLD_WINDOW = 3600.0  # threshold alerting judges the last hour unless told otherwise
DEFAULT_NO_DATA_FOR = 600.0  # metrics absent this long: the KPI is blind

Terms = tuple[tuple[float, float], ...]  # (recorded window, offset) pairs that together cover a window


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


def unfireable_window(windows: Sequence[BurnWindow], budget: float) -> BurnWindow | None:
    """The first window whose burn rate needs 100% bad events or more with this error budget: a tier that has
    one can never fire."""
    return next((window for window in windows if window.factor * budget >= 1), None)


def no_traffic_window(window: float, tiers: Sequence[Tier]) -> float:
    """How long a KPI may count no event before KPINoTraffic: its first page pair's long window (by then a
    total outage would have paged), else the default page tier's."""
    if tiers and tiers[0].severity == "page":
        return tiers[0].windows[0].long
    return scaled_tiers(window)["page"][0].long


def check_evaluation_interval(seconds: float) -> None:
    """Raises ValueError unless rules evaluated every ``seconds`` land on the 5m offsets telescoping reads."""
    if round(BASE_RATE_WINDOW * 1000) % round(seconds * 1000):
        raise ValueError("must divide 5m: longer windows sum recorded 5m rates at 5m offsets")


def alert_windows(kpi: Kpi) -> list[float]:
    """Every window some alert or dashboard reads a ratio of, shortest first (the 5m base included)."""
    windows = {float(BASE_RATE_WINDOW)}
    for tier in kpi.alerting.tiers:
        for window in tier.windows:
            windows.update((window.long, window.short))
    if kpi.alerting.strategy == "threshold" and kpi.is_ratio:
        windows.add(kpi.alerting.window)
    return sorted(windows)


def is_telescoped(window: float) -> bool:
    return window >= BASE_RATE_WINDOW and window % BASE_RATE_WINDOW == 0


def _decompose(window: float, levels: Iterable[float]) -> Terms:
    """``window`` as consecutive slices, longest recorded windows first, newest slice at offset 0."""
    terms = []
    offset, remaining = 0.0, window
    for level in sorted(levels, reverse=True):
        while remaining >= level:
            terms.append((level, offset))
            offset += level
            remaining -= level
    return tuple(terms)


class WindowPlan:
    """Which windows a KPI records and the terms each one sums, dependencies first. Windows that are not a
    whole number of 5m are read from raw series (and cost a raw read each)."""

    def __init__(self, kpi: Kpi):
        self.levels = [float(BASE_RATE_WINDOW)]
        self.recorded: dict[float, Terms] = {}  # window -> terms; raw-read windows have no terms
        for window in alert_windows(kpi):
            if window == BASE_RATE_WINDOW:
                continue
            if is_telescoped(window):
                self._record(window)
            else:
                self.recorded[window] = ()
        self.period: Terms = self._terms(kpi.window) if kpi.is_ratio else ()

    def _record(self, window: float) -> None:
        if window in self.levels:
            return
        self.recorded[window] = self._terms(window)
        self.levels.append(window)

    def _terms(self, window: float) -> Terms:
        while True:
            terms = _decompose(window, self.levels)
            if len(terms) <= MAX_TERMS:
                return terms
            top = max(level for level in self.levels if level <= window)
            whole, rest = divmod(window, top)
            # too many slices of the longest window: record a window 12 times longer; too many small slices
            # for the remainder: record the remainder itself
            self._record(top * MAX_TERMS if whole > MAX_TERMS else rest)
