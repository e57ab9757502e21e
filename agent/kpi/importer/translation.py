"""What the Sloth and OpenSLO importers share: the translation (spec documents per service, and problems
with their file and line), YAML node helpers, names and labels made valid, and the indicator a pair of
queries becomes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from agent.config.problems import Problem
from agent.config.validation import is_label_name
from agent.kpi.conventions import RESERVED_LABELS
from agent.kpi.model import BurnWindow
from agent.kpi.promql import sum_of_rate
from agent.kpi.selectors import make_selector, parse_selector
from agent.kpi.windows import scaled_tiers, unfireable_window

_WINDOW_PLACEHOLDER_RE = re.compile(r"\{\{\s*\.?window\s*\}\}")
MAX_TEXT = 4096  # characters of a description or title


@dataclass
class Translation:
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # service -> spec document
    sources: dict[str, list[str]] = field(default_factory=dict)  # service -> files it came from
    problems: list[Problem] = field(default_factory=list)

    def error(self, file: str, node: Any, key: str | None, path: str, message: str) -> None:
        self.problems.append(Problem(file, line_of(node, key), path, message))

    def warn(self, file: str, node: Any, key: str | None, path: str, message: str) -> None:
        self.problems.append(Problem(file, line_of(node, key), path, message, warning=True))

    def add(self, file: str, node: Any, service: str, labels: dict[str, str], kpi: dict[str, Any]) -> None:
        spec = self.specs.setdefault(service, {"service": service, "labels": dict(labels), "kpis": []})
        if spec["labels"] != labels:
            self.warn(file, node, None, "labels", f"service {service!r} was already imported with labels "
                                                  f"{spec['labels']}; keeping those, these go on the KPI")
            kpi.setdefault("labels", {}).update({k: v for k, v in labels.items() if spec["labels"].get(k) != v})
        names = {existing["name"] for existing in spec["kpis"]}
        if kpi["name"] in names:
            self.error(file, node, None, "name", f"{kpi['name']!r} is already a KPI of service {service!r}")
            return
        spec["kpis"].append(kpi)
        sources = self.sources.setdefault(service, [])
        if file not in sources:
            sources.append(file)


def line_of(node: Any, key: str | None) -> int | None:
    if isinstance(node, dict):
        lines = getattr(node, "key_lines", {})
        return lines.get(key, getattr(node, "line", None)) if key else getattr(node, "line", None)
    return None


def first_of(node: Any, *keys: str) -> Any:
    """The first of ``keys`` present (Sloth's YAML spells fields snake_case, its CRD camelCase)."""
    if not isinstance(node, dict):
        return None
    for key in keys:
        if key in node:
            return node[key]
    return None


def key_of(node: Any, *keys: str) -> str:
    return next((key for key in keys if isinstance(node, dict) and key in node), keys[0])


def kpi_name(name: str) -> str:
    """A KPI name ([a-z][a-z0-9_]*) from an SLO name: lower case, anything else becomes '_'."""
    text = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    return text if re.match(r"^[a-z]", text) else f"slo_{text}"


def service_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", name).strip("-") or "service"


def percent(value: Any, per: int = 1) -> str | None:
    """``value`` x ``per`` as our percentage text ("99.9%"), or None if it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        return None
    try:
        number = Decimal(str(value).strip()) * per
    except InvalidOperation:
        return None
    return f"{number.normalize():f}%" if number.is_finite() else None


def percent_value(text: str) -> Decimal:
    """The number of a ``percent`` result ("99.9%" -> 99.9)."""
    return Decimal(text[:-1])


def free_text(translation: Translation, file: str, node: Any, key: str, path: str) -> str | None:
    """A description or title, refused (with its line) past MAX_TEXT characters: it becomes a label value."""
    value = node.get(key) if isinstance(node, dict) else None
    if not value:
        return None
    text = str(value)
    if len(text) > MAX_TEXT:
        translation.error(file, node, key, path, f"{len(text)} characters, more than {MAX_TEXT}: left out (it would "
                                                 "become a label of kpi_info and the alerts' descriptions)")
        return None
    return text


def read_labels(translation: Translation, file: str, node: Any, key: str, path: str) -> dict[str, str]:
    """Prometheus labels from ``node[key]``; invalid or reserved names are reported and left out."""
    raw = node.get(key) if isinstance(node, dict) else None
    if not isinstance(raw, dict):
        return {}
    labels = {}
    for name, value in raw.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if not is_label_name(name):
            translation.warn(file, raw, name, f"{path}.{name}", "not a Prometheus label name: left out")
        elif name in RESERVED_LABELS:
            translation.warn(file, raw, name, f"{path}.{name}", "is set by kpi-agent's compiler: left out")
        else:
            labels[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return labels


def mappings(translation: Translation, file: str, node: Any, key: str, path: str) -> list[tuple[str, Any]]:
    """(path, item) for each mapping in the list ``node[key]``; anything else is reported."""
    items = node.get(key)
    if not isinstance(items, list) or not items:
        translation.error(file, node, key, path, "expected a list of mappings")
        return []
    lines = getattr(items, "item_lines", [None] * len(items))
    result = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            result.append((f"{path}[{index}]", item))
        else:
            translation.problems.append(Problem(file, lines[index], f"{path}[{index}]", "expected a mapping"))
    return result


def strings(node: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in node.items()} if isinstance(node, dict) else {}


def as_template(query: str) -> str | None:
    """A query as our {{window}} template: a sum of rates of a selector gets one, others must have one."""
    simple = sum_of_rate(query)
    if simple is not None:
        selector, by = simple
        grouping = f" by ({', '.join(by)})" if by else ""
        return f"sum{grouping} (rate({selector}[{{{{window}}}}]))"
    if _WINDOW_PLACEHOLDER_RE.search(query):
        return _WINDOW_PLACEHOLDER_RE.sub("{{window}}", query.strip())
    return None


def indicator(counted: str, total: str, counts_bad: bool, counter: bool = False) -> tuple[dict[str, Any], str | None]:
    """Our indicator for a ratio of ``counted`` (good, or failed events) over ``total`` queries, or a reason
    it cannot be translated. ``counter``: the queries return counter values (OpenSLO's ratioMetric.counter)."""
    simple_counted, simple_total = sum_of_rate(counted, counter), sum_of_rate(total, counter)
    if simple_counted and simple_total and simple_counted[1] == simple_total[1]:
        try:
            good, all_events = parse_selector(simple_counted[0]), parse_selector(simple_total[0])
        except ValueError as exc:
            return {}, str(exc)
        result: dict[str, Any] = {}
        bound = next((m for m in good.matchers if m.label == "le" and m.op == "="), None)
        others = tuple(m for m in good.matchers if m.label != "le")
        if (not counts_bad and bound and good.metric.endswith("_bucket")
                and all_events.metric == good.metric[:-len("_bucket")] + "_count"
                and set(others) == set(all_events.matchers)):
            try:
                le = float(bound.value)
            except ValueError:
                le = 0.0
            if le > 0:
                histogram = good.metric[:-len("_bucket")]
                result["latency"] = {"histogram": make_selector(histogram, all_events.matchers).text,
                                     "le": int(le) if le.is_integer() else le}
        if not result:
            result["ratio"] = {"bad" if counts_bad else "numerator": good.text, "denominator": all_events.text}
        if simple_total[1]:
            result["group_by"] = simple_total[1]
        return result, None
    counted_template, total_template = as_template(counted), as_template(total)
    for query, template in ((counted, counted_template), (total, total_template)):
        if template is None:
            return {}, (f"{query.strip()!r} is neither a sum of rates of a selector nor a query with a {{{{.window}}}} "
                        "range: its range cannot follow the alert windows")
    return {"ratio": {"bad_query" if counts_bad else "numerator_query": counted_template,
                      "denominator_query": total_template}}, None


def disable_tiers_that_cannot_fire(translation: Translation, file: str, node: Any, path: str,
                                   kpi: dict[str, Any], target: float, window: float,
                                   tiers: dict[str, tuple[BurnWindow, ...]] | None = None) -> None:
    """A tier that needs over 100% bad events at ``target`` is disabled, with a warning. ``tiers``: the windows
    the KPI's tiers use (default: ours, scaled to ``window``)."""
    alerting = kpi.setdefault("alerting", {})
    for severity, windows in (tiers or scaled_tiers(window)).items():
        if alerting.get(severity) is False:
            continue
        hopeless = unfireable_window(windows, 1 - target)
        if hopeless is not None:
            alerting[severity] = False
            translation.warn(file, node, None, path,
                             f"the {severity} tier can never fire at {target:.4g} ({hopeless.factor:g}x the budget is "
                             f"over 100% bad events): disabled (Sloth would generate an alert that never fires)")
    if not alerting:
        del kpi["alerting"]
