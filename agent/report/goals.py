"""Goals with due dates: progress from a baseline, and a forecast to the due date from the recent trend.

The trend is a straight line through the KPI's daily values since the goal was set (at most the last 90 days),
each day weighted by its traffic, fitted by statsmodels' weighted least squares; the forecast is the line at
the due date with its 80% confidence interval (``get_prediction(...).conf_int(alpha=0.2)``). A goal is
**on track** when the whole interval meets the target, **off track** when none of it does, **at risk**
otherwise; once the due date has passed it was **reached** or **missed** by the last week's value.
statsmodels is imported only when a report has goals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.kpi.model import Goal

DAY = 86400.0
FIT_DAYS = 90  # the recent trend: a longer history would fit last year's trend
MIN_DAYS = 7  # fewer daily values give an interval too wide to say anything
RECENT_DAYS = 7  # "now": the value of the last week (a single day is noise)
CONFIDENCE = 0.8


@dataclass(frozen=True)
class Outlook:
    goal: Goal
    verdict: str  # on track | at risk | off track | reached | missed | not enough data
    current: float | None = None  # the last week's value
    baseline: float | None = None
    progress: float | None = None  # the share of the way from the baseline to the target
    forecast: float | None = None  # the trend at the due date
    low: float | None = None  # its 80% interval
    high: float | None = None
    reaches: float | None = None  # when the trend meets the target, if it does between now and the due date
    days: tuple[tuple[float, float], ...] = ()  # (end of day, value) the trend was fitted to
    trend: tuple[float, float] = (0.0, 0.0)  # intercept (at now) and slope per day


def _weighted(values: Sequence[tuple[float, float, float]]) -> float | None:
    total = math.fsum(w for _, _, w in values)
    return math.fsum(v * w for _, v, w in values) / total if total > 0 else None


def outlook(goal: Goal, higher_is_better: bool, daily: Sequence[tuple[float, float, float]], now: float) -> Outlook:
    """``daily``: (end of day, value, weight) for each day with data, oldest first."""
    days = [(t, v, w) for t, v, w in daily if goal.start < t <= now and w > 0 and math.isfinite(v)]
    days = [d for d in days if d[0] > now - FIT_DAYS * DAY]
    current = _weighted([d for d in days if d[0] > now - RECENT_DAYS * DAY])
    baseline = goal.baseline if goal.baseline is not None else _weighted(
        [d for d in days if d[0] <= goal.start + RECENT_DAYS * DAY])

    def meets(value: float) -> bool:
        return value >= goal.target if higher_is_better else value <= goal.target

    progress = None
    if current is not None and baseline is not None and goal.target != baseline:
        progress = (current - baseline) / (goal.target - baseline)
    common = {"current": current, "baseline": baseline, "progress": progress,
              "days": tuple((t, v) for t, v, _ in days)}
    if now >= goal.due:
        verdict = "not enough data" if current is None else "reached" if meets(current) else "missed"
        return Outlook(goal, verdict, **common)  # type: ignore[arg-type]
    if len(days) < MIN_DAYS:
        return Outlook(goal, "not enough data", **common)  # type: ignore[arg-type]
    import numpy as np
    import statsmodels.api as sm

    x = np.array([(t - now) / DAY for t, _, _ in days])
    y = np.array([v for _, v, _ in days])
    weights = np.array([w for _, _, w in days])
    fit = sm.WLS(y, sm.add_constant(x, has_constant="add"), weights=weights / weights.mean()).fit()
    horizon = (goal.due - now) / DAY
    prediction = fit.get_prediction(np.array([[1.0, horizon]]))
    low, high = (float(v) for v in prediction.conf_int(alpha=1 - CONFIDENCE)[0])
    forecast = float(prediction.predicted_mean[0])
    intercept, slope = (float(v) for v in fit.params)
    if meets(low) and meets(high):
        verdict = "on track"
    elif not meets(low) and not meets(high):
        verdict = "off track"
    else:
        verdict = "at risk"
    reaches = None
    if slope != 0:
        crossing = (goal.target - intercept) / slope
        if 0 <= crossing <= horizon:
            reaches = now + crossing * DAY
    return Outlook(goal, verdict, forecast=forecast, low=low, high=high, reaches=reaches,
                   trend=(intercept, slope), **common)  # type: ignore[arg-type]


def describe(outlook: Outlook, fmt: Callable[[float], str], day: Callable[[float], str]) -> str:
    """The goal's outlook in one sentence: "on track: forecast 3.16% (3.14% to 3.18%) on 2027-03-31, ..."."""
    goal = outlook.goal
    due = day(goal.due - 1)  # the due day, not the midnight that ends it
    head = f"{goal.text or f'{fmt(goal.target)} by {due}'}: {outlook.verdict}"
    parts = []
    if outlook.forecast is not None and outlook.low is not None and outlook.high is not None:
        parts.append(f"forecast {fmt(outlook.forecast)} ({fmt(outlook.low)} to {fmt(outlook.high)}, "
                     f"{CONFIDENCE:.0%} interval) on {due}")
    if outlook.reaches is not None:
        parts.append(f"the trend reaches {fmt(goal.target)} around {day(outlook.reaches)}")
    if outlook.progress is not None and outlook.baseline is not None:
        parts.append(f"{outlook.progress:.0%} of the way from {fmt(outlook.baseline)}")
    return head + (": " + "; ".join(parts) if parts else "")
