"""Metrics read from a JSON response body (json_exporter's model): JSONPaths parsed once, one family each.

Each probe's series of a metric are what the body holds now, so series that vanish from the response vanish
from /metrics. A path that matches nothing or a value that is not a number is counted and clears that metric
only; the other metrics and the probe's result stay as they are.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from agent.series.family import Family
from agent.sources.http.config import JsonMetric

log = logging.getLogger(__name__)


def number(value: Any) -> float:
    """A JSON value as a sample: numbers, numeric strings, booleans (1/0). Raises ValueError otherwise."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        result = float(value.strip())  # ValueError for non-numeric strings
    else:
        raise ValueError(f"not a number: {type(value).__name__}")
    if math.isnan(result):
        raise ValueError("NaN is not a value")
    return result


class CompiledJsonMetric:
    """A json_metrics entry with its JSONPaths parsed once per source (parsing one costs about a millisecond;
    a source may probe ten thousand targets)."""

    def __init__(self, spec: JsonMetric):
        from jsonpath_ng.ext import parse as parse_jsonpath  # lazily: an agent without json_metrics never loads it

        self.spec = spec
        self.error_labels = (spec.name,)
        self.path = parse_jsonpath(spec.path)
        self.value = parse_jsonpath(spec.value) if spec.value else None
        self.labels = [(parse_jsonpath(v) if v.startswith("$") else None, v) for v in spec.labels.values()]

    def extract(self, document: Any, errors: Family | None) -> dict[tuple[str, ...], float] | None:
        """The series the document holds now; None (and counted in ``errors``) on a bad path or value."""
        try:
            return self.read(document)
        except (ValueError, TypeError, RecursionError) as exc:
            if errors is not None:
                errors.inc(self.error_labels)
            log.debug("json extraction failed", extra={"metric": self.spec.name, "error": str(exc)[:200]})
            return None

    def read(self, document: Any) -> dict[tuple[str, ...], float]:
        """The series the document holds for this metric; raises ValueError for a bad path or value."""
        matches = [m.value for m in self.path.find(document)]
        if not matches:
            raise ValueError(f"{self.spec.path} matched nothing")
        if self.value is None and len(matches) > 1:
            raise ValueError(f"{self.spec.path} matched {len(matches)} values; use value: for one series each")
        series = {}
        for match in matches:
            scope = match if self.value is not None else document
            raw = self._first(self.value, match) if self.value is not None else match
            labels = tuple(self._label(path, literal, scope) for path, literal in self.labels)
            series[labels] = number(raw)
        return series

    @staticmethod
    def _first(path: Any, scope: Any) -> Any:
        found = path.find(scope)
        if not found:
            raise ValueError(f"{path} matched nothing")
        return found[0].value

    def _label(self, path: Any, literal: str, scope: Any) -> str:
        if path is None:
            return literal
        value = self._first(path, scope)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            raise ValueError(f"label path {literal} points at a {type(value).__name__}, not a value")
        return str(value)
