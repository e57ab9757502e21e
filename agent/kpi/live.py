"""Asks a live Prometheus whether what each KPI reads exists, the way cloudflare/pint's promql/series check does:
a selector that matches no series (over a lookback) is almost always a typo, a renamed metric or a missing
histogram bucket, and is reported with its file, line and the matcher to blame."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from agent.kpi.promql import metric_names
from agent.kpi.spec import Kpi, Selector, ServiceSpec, make_selector, parse_selector
from agent.yamlsrc import Problem, format_duration


class PrometheusError(RuntimeError):
    pass


class Prometheus:
    def __init__(self, url: str, timeout: float = 30):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, expr: str) -> list[dict[str, Any]]:
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(address, timeout=self.timeout) as response:  # noqa: S310 - the user's URL
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise PrometheusError(f"{self.url}: HTTP {exc.code} for {expr!r}: {detail[:300]}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PrometheusError(f"cannot query Prometheus at {self.url}: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url}: {body.get('error', body)} for {expr!r}")
        return body["data"]["result"]

    def count(self, expr: str) -> float:
        result = self.query(f"count({expr})")
        return float(result[0]["value"][1]) if result else 0.0


def _counts_failures(kpi: Kpi, field: str) -> bool:
    """Selectors of failed events may rightly match nothing yet (nothing has failed)."""
    return ".bad" in field or (not kpi.higher_is_better and ".numerator" in field)


def _selector(text: str) -> Selector | None:
    try:
        return parse_selector(text)
    except ValueError:
        return None


def _why_selector_is_empty(prometheus: Prometheus, selector: Selector, lookback: str) -> str:
    def seen(expr: str) -> bool:
        return prometheus.count(f"last_over_time({expr}[{lookback}])") > 0

    if not seen(f'{{__name__="{selector.metric}"}}'):
        return f"metric {selector.metric} has no series in the last {lookback} (a typo, or not scraped?)"
    reasons = []
    for matcher in selector.matchers:
        if seen(make_selector(selector.metric, (matcher,)).text):
            continue
        reason = f"no series of {selector.metric} has {matcher.text}"
        if matcher.label == "le":
            others = tuple(m for m in selector.matchers if m.label != "le")
            bounds = prometheus.query(f"count by (le) (last_over_time({make_selector(selector.metric, others).text}"
                                      f"[{lookback}]))")
            present = sorted((r["metric"].get("le", "") for r in bounds), key=_bound_order)
            reason += f" (bucket bounds present: {', '.join(present) or 'none'})"
        reasons.append(reason)
    if reasons:
        return "; ".join(reasons)
    return f"each of its matchers matches series of {selector.metric}, but no series matches all of them"


def _bound_order(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def check_series(specs: list[ServiceSpec], url: str, lookback: float) -> list[Problem]:
    """Problems for every selector and value expression of every KPI that matches nothing in Prometheus."""
    prometheus = Prometheus(url)
    window = format_duration(lookback)
    problems = []
    for spec in specs:
        for kpi in spec.kpis:
            for field, line, text in kpi.indicator_expressions:
                message = _check_expression(prometheus, text, window)
                if message:
                    problems.append(Problem(spec.file, line, field, message, warning=_counts_failures(kpi, field)))
    return problems


def _check_expression(prometheus: Prometheus, text: str, lookback: str) -> str | None:
    selector = _selector(text)
    if selector is not None:
        if prometheus.count(f"last_over_time({selector.text}[{lookback}])") > 0:
            return None
        return f"{selector.text} matches no series in the last {lookback}: " + \
            _why_selector_is_empty(prometheus, selector, lookback)
    if prometheus.query(text):
        return None
    missing = [name for name in metric_names(text)
               if prometheus.count(f'last_over_time({{__name__="{name}"}}[{lookback}])') == 0]
    detail = f": no series of {', '.join(missing)} in the last {lookback}" if missing else ""
    return f"returns nothing now{detail}"

