"""Translates Sloth and OpenSLO SLO specs into kpi-agent KPI specs (``kpi-agent rules import``).

Sloth ``prometheus/v1`` files and its Kubernetes ``PrometheusServiceLevel`` objects, and OpenSLO ``v1alpha`` and
``v1`` SLOs with ratio metrics, keep their names (made valid KPI names), objectives, windows, alert names,
labels and annotations. Queries that are sums of rates of a selector become selectors (cheaper rules, series
checks, the missing-numerator guard); histogram bucket over count becomes the latency shorthand; other
queries keep their PromQL with ``{{window}}``. What cannot be translated (plugins, raw SLIs, threshold
metrics, non-Prometheus sources) is reported with its file and line, never dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from agent.config.problems import ConfigError, Problem
from agent.config.validation import is_label_name
from agent.config.yaml import load_file_documents, load_text
from agent.formatting import format_duration
from agent.kpi.compiler import to_yaml
from agent.kpi.promql import sum_of_rate
from agent.kpi.spec import (
    ALERT_NAME_RE,
    RESERVED_LABELS,
    make_selector,
    parse_selector,
    parse_spec,
    scaled_tiers,
    unfireable_window,
)

SLOTH_SPEC = "prometheus/v1"
SLOTH_KUBERNETES = ("sloth.slok.dev/v1", "PrometheusServiceLevel")
OPENSLO_VERSIONS = ("openslo/v1alpha", "openslo/v1")
_WINDOW_PLACEHOLDER_RE = re.compile(r"\{\{\s*\.?window\s*\}\}")
_OPENSLO_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400,
                  "quarter": 90 * 86400, "year": 365 * 86400}
_OPENSLO_DURATION_RE = re.compile(r"^(\d+)([smhdwMQY])$")
_OPENSLO_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "M": 30 * 86400,
                           "Q": 90 * 86400, "Y": 365 * 86400}


@dataclass
class Translation:
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # service -> spec document
    sources: dict[str, list[str]] = field(default_factory=dict)  # service -> files it came from
    problems: list[Problem] = field(default_factory=list)

    def error(self, file: str, node: Any, key: str | None, path: str, message: str) -> None:
        self.problems.append(Problem(file, _line(node, key), path, message))

    def warn(self, file: str, node: Any, key: str | None, path: str, message: str) -> None:
        self.problems.append(Problem(file, _line(node, key), path, message, warning=True))

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


def _line(node: Any, key: str | None) -> int | None:
    if isinstance(node, dict):
        lines = getattr(node, "key_lines", {})
        return lines.get(key, getattr(node, "line", None)) if key else getattr(node, "line", None)
    return None


def _get(node: Any, *keys: str) -> Any:
    """The first of ``keys`` present (Sloth's YAML spells fields snake_case, its CRD camelCase)."""
    if not isinstance(node, dict):
        return None
    for key in keys:
        if key in node:
            return node[key]
    return None


def _key(node: Any, *keys: str) -> str:
    return next((key for key in keys if isinstance(node, dict) and key in node), keys[0])


def kpi_name(name: str) -> str:
    """A KPI name ([a-z][a-z0-9_]*) from an SLO name: lower case, anything else becomes '_'."""
    text = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    return text if re.match(r"^[a-z]", text) else f"slo_{text}"


def service_name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", name).strip("-") or "service"


def _percent(value: Any) -> str | None:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return f"{number.normalize():f}%"


def _labels(translation: Translation, file: str, node: Any, key: str, path: str) -> dict[str, str]:
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


def _mappings(translation: Translation, file: str, node: Any, key: str, path: str) -> list[tuple[str, Any]]:
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


def _strings(node: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in node.items()} if isinstance(node, dict) else {}


def _template(query: str) -> str | None:
    """A query as our {{window}} template: a sum of rates of a selector gets one, others must have one."""
    simple = sum_of_rate(query)
    if simple is not None:
        selector, by = simple
        grouping = f" by ({', '.join(by)})" if by else ""
        return f"sum{grouping} (rate({selector}[{{{{window}}}}]))"
    if _WINDOW_PLACEHOLDER_RE.search(query):
        return _WINDOW_PLACEHOLDER_RE.sub("{{window}}", query.strip())
    return None


def indicator(counted: str, total: str, counts_bad: bool) -> tuple[dict[str, Any], str | None]:
    """Our indicator for a ratio of ``counted`` (good, or failed events) over ``total`` queries, or a reason
    it cannot be translated."""
    simple_counted, simple_total = sum_of_rate(counted), sum_of_rate(total)
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
    counted_template, total_template = _template(counted), _template(total)
    for query, template in ((counted, counted_template), (total, total_template)):
        if template is None:
            return {}, (f"{query.strip()!r} is neither a sum of rates of a selector nor a query with a {{{{.window}}}} "
                        "range: its range cannot follow the alert windows")
    return {"ratio": {"bad_query" if counts_bad else "numerator_query": counted_template,
                      "denominator_query": total_template}}, None


def _disable_tiers_that_cannot_fire(translation: Translation, file: str, node: Any, path: str,
                                    kpi: dict[str, Any], target: float, window: float) -> None:
    alerting = kpi.setdefault("alerting", {})
    for severity, windows in scaled_tiers(window).items():
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


def _sloth(translation: Translation, file: str, document: Any, window: float, window_text: str) -> None:
    kubernetes = document.get("kind") == SLOTH_KUBERNETES[1]
    body = document.get("spec") if kubernetes else document
    prefix = "spec." if kubernetes else ""
    if not isinstance(body, dict):
        translation.error(file, document, "spec", f"{prefix}spec", "expected a mapping")
        return
    for plugins in ("slo_plugins", "sloPlugins"):
        if plugins in body:
            translation.error(file, body, plugins, f"{prefix}{plugins}",
                              "SLO plugins are Sloth code: not translated; the SLOs are imported without them")
    raw_service = str(body.get("service") or "")
    if not raw_service:
        translation.error(file, body, "service", f"{prefix}service", "is required")
        return
    service = service_name(raw_service)
    if service != raw_service:
        translation.warn(file, body, "service", f"{prefix}service", f"{raw_service!r} becomes {service!r}")
    labels = _labels(translation, file, body, "labels", f"{prefix}labels")
    for path, slo in _mappings(translation, file, body, "slos", f"{prefix}slos"):
        kpi = _sloth_slo(translation, file, slo, path, window, window_text)
        if kpi is not None:
            translation.add(file, slo, service, labels, kpi)


def _sloth_slo(translation: Translation, file: str, slo: Any, path: str, window: float,
               window_text: str) -> dict[str, Any] | None:
    raw_name = str(slo.get("name") or "")
    name = kpi_name(raw_name)
    if raw_name and name != raw_name:
        translation.warn(file, slo, "name", f"{path}.name", f"{raw_name!r} becomes the KPI {name!r}")
    target = _percent(slo.get("objective"))
    if not raw_name or target is None or not 0 < Decimal(target[:-1]) < 100:
        translation.error(file, slo, "objective" if raw_name else "name", path,
                          "needs a name and an objective between 0 and 100 (percent)")
        return None
    if "plugins" in slo:
        translation.error(file, slo, "plugins", f"{path}.plugins", "SLO plugins are Sloth code: not translated")
    sli = slo.get("sli") if isinstance(slo.get("sli"), dict) else {}
    events = sli.get("events")
    if not isinstance(events, dict):
        kind = next((k for k in ("raw", "plugin") if k in sli), None)
        why = {"raw": "a raw error-ratio query cannot be split into good and total events",
               "plugin": "SLI plugins are Sloth code"}.get(kind or "", "no sli.events")
        translation.error(file, sli or slo, kind or "sli", f"{path}.sli{'.' + kind if kind else ''}",
                          f"not translated: {why}; write ratio.numerator and denominator by hand")
        return None
    error_query = _get(events, "error_query", "errorQuery")
    total_query = _get(events, "total_query", "totalQuery")
    if not isinstance(error_query, str) or not isinstance(total_query, str):
        translation.error(file, events, None, f"{path}.sli.events", "needs error_query and total_query")
        return None
    found, reason = indicator(error_query, total_query, counts_bad=True)
    if reason:
        translation.error(file, events, _key(events, "error_query", "errorQuery"), f"{path}.sli.events",
                          f"not translated: {reason}")
        return None
    kpi: dict[str, Any] = {"name": name}
    if slo.get("description"):
        kpi["description"] = str(slo["description"])
    kpi["window"] = window_text
    kpi["target"] = target
    kpi_labels = _labels(translation, file, slo, "labels", f"{path}.labels")
    if kpi_labels:
        kpi["labels"] = kpi_labels
    kpi.update(found)
    alerting = _sloth_alerting(translation, file, slo.get("alerting"), f"{path}.alerting")
    if alerting:
        kpi["alerting"] = alerting
    _disable_tiers_that_cannot_fire(translation, file, slo, path, kpi, float(Decimal(target[:-1]) / 100), window)
    return kpi


def _sloth_alerting(translation: Translation, file: str, node: Any, path: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {}
    alerting: dict[str, Any] = {}
    name = node.get("name")
    if name:
        if isinstance(name, str) and ALERT_NAME_RE.match(name):
            alerting["alert_name"] = name
        else:
            translation.warn(file, node, "name", f"{path}.name", f"{name!r} is not an alert name: left out")
    labels = _labels(translation, file, node, "labels", f"{path}.labels")
    if labels:
        alerting["labels"] = labels
    if _strings(node.get("annotations")):
        alerting["annotations"] = _strings(node.get("annotations"))
    for keys, severity in ((("page_alert", "pageAlert"), "page"), (("ticket_alert", "ticketAlert"), "ticket")):
        section = _get(node, *keys)
        if not isinstance(section, dict):
            continue
        key_path = f"{path}.{_key(node, *keys)}"
        if section.get("disable"):
            alerting[severity] = False
            continue
        tier: dict[str, Any] = {}
        if section.get("for"):
            tier["for"] = str(section["for"])
        tier_labels = _labels(translation, file, section, "labels", f"{key_path}.labels")
        if tier_labels:
            tier["labels"] = tier_labels
        if _strings(section.get("annotations")):
            tier["annotations"] = _strings(section.get("annotations"))
        if tier:
            alerting[severity] = tier
    return alerting


def _openslo_window(translation: Translation, file: str, spec: Any, path: str,
                    default: tuple[float, str]) -> tuple[float, str]:
    windows = _get(spec, "timeWindow", "timeWindows")
    key = _key(spec, "timeWindow", "timeWindows")
    if not isinstance(windows, list) or not windows or not isinstance(windows[0], dict):
        translation.warn(file, spec, None, f"{path}.timeWindow", f"no time window: using {default[1]}")
        return default
    window = windows[0]
    seconds: float | None = None
    if "duration" in window:
        match = _OPENSLO_DURATION_RE.match(str(window["duration"]))
        if match:
            seconds = int(match.group(1)) * _OPENSLO_DURATION_UNITS[match.group(2)]
    elif "count" in window and "unit" in window:
        unit = _OPENSLO_UNITS.get(str(window["unit"]).lower())
        if unit is not None and isinstance(window["count"], int):
            seconds = window["count"] * unit
    if seconds is None or seconds < 3600 or seconds % 300:
        translation.warn(file, window, None, f"{path}.{key}[0]", f"window not understood: using {default[1]}")
        return default
    if window.get("isRolling") is False or "calendar" in window:
        translation.warn(file, window, None, f"{path}.{key}[0]",
                         "calendar windows are not supported: translated as a rolling window of the same length")
    if str(window.get("unit", "")).lower() in ("month", "quarter", "year") or \
            str(window.get("duration", ""))[-1:] in ("M", "Q", "Y"):
        translation.warn(file, window, None, f"{path}.{key}[0]",
                         f"months, quarters and years are taken as 30, 90 and 365 days: "
                         f"{format_duration(seconds)}")
    return float(seconds), format_duration(seconds)


def _openslo_query(translation: Translation, file: str, node: Any, path: str) -> str | None:
    """The PromQL of a v1alpha ``{source, queryType, query}`` or v1 ``{metricSource: {type, spec}}``."""
    if not isinstance(node, dict):
        return None
    source: dict[str, Any] = node["metricSource"] if isinstance(node.get("metricSource"), dict) else node
    kind = str(source.get("type") or source.get("source") or "prometheus")
    spec: dict[str, Any] = source["spec"] if isinstance(source.get("spec"), dict) else source
    query = spec.get("query") or spec.get("promql")
    if kind.lower() != "prometheus" or not isinstance(query, str):
        translation.error(file, node, None, path, f"not translated: a {kind} metric source, only Prometheus "
                                                  "queries can be compiled to Prometheus rules")
        return None
    return query


def _openslo(translation: Translation, file: str, document: Any, slis: dict[str, Any],
             window_default: tuple[float, str]) -> None:
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    spec = document.get("spec")
    if not isinstance(spec, dict):
        translation.error(file, document, "spec", "spec", "expected a mapping")
        return
    raw_name = str(metadata.get("name") or "")
    raw_service = str(spec.get("service") or "")
    if not raw_name or not raw_service:
        translation.error(file, document, "metadata" if not raw_name else "spec", "metadata.name",
                          "an SLO needs metadata.name and spec.service")
        return
    service = service_name(raw_service)
    if service != raw_service:
        translation.warn(file, spec, "service", "spec.service", f"{raw_service!r} becomes {service!r}")
    window, window_text = _openslo_window(translation, file, spec, "spec", window_default)
    if str(spec.get("budgetingMethod", "Occurrences")) != "Occurrences":
        translation.warn(file, spec, "budgetingMethod", "spec.budgetingMethod",
                         f"{spec['budgetingMethod']} is translated as Occurrences: the ratio counts events, not "
                         "time slices")
    if spec.get("alertPolicies"):
        translation.warn(file, spec, "alertPolicies", "spec.alertPolicies",
                         "not translated: kpi-agent's multi-window burn-rate tiers (page, ticket) apply instead")
    labels = _labels(translation, file, metadata, "labels", "metadata.labels")
    indicator_spec = _openslo_indicator(translation, file, spec, slis)
    objectives = _mappings(translation, file, spec, "objectives", "spec.objectives")
    for index, (path, objective) in enumerate(objectives):
        suffix = ""
        if len(objectives) > 1:
            suffix = "_" + kpi_name(str(objective.get("displayName") or objective.get("name") or index))
        name = kpi_name(raw_name) + suffix
        if name != raw_name:
            translation.warn(file, metadata, "name", "metadata.name", f"{raw_name!r} becomes the KPI {name!r}")
        head: dict[str, Any] = {"name": name}
        if spec.get("description"):
            head["description"] = str(spec["description"])
        title = objective.get("displayName") or metadata.get("displayName")
        if title:
            head["objective"] = str(title)
        kpi = _openslo_objective(translation, file, objective, path, indicator_spec, head, window, window_text)
        if kpi is None:
            continue
        if labels:
            kpi["labels"] = labels
        translation.add(file, objective, service, {}, kpi)


def _openslo_indicator(translation: Translation, file: str, spec: Any, slis: dict[str, Any]) -> Any:
    """The SLO's ratio metric: v1 inline indicator or indicatorRef (an SLI document), or None (v1alpha)."""
    if isinstance(spec.get("indicator"), dict):
        return spec["indicator"].get("spec")
    reference = spec.get("indicatorRef")
    if reference:
        if reference not in slis:
            translation.error(file, spec, "indicatorRef", "spec.indicatorRef",
                              f"no SLI named {reference!r} in the files given")
        return slis.get(reference)
    return None


def _openslo_objective(translation: Translation, file: str, objective: Any, path: str, indicator_spec: Any,
                       head: dict[str, Any], window: float, window_text: str) -> dict[str, Any] | None:
    target_value = objective.get("target")
    if target_value is None and objective.get("targetPercent") is not None:
        target_value = Decimal(str(objective["targetPercent"])) / 100
    target = _percent(Decimal(str(target_value)) * 100) if target_value is not None else None
    if target is None or not 0 < Decimal(target[:-1]) < 100:
        translation.error(file, objective, "target", f"{path}.target", "needs a target between 0 and 1")
        return None
    ratio = objective.get("ratioMetrics")
    where, ratio_path = objective, f"{path}.ratioMetrics"
    if ratio is None and isinstance(indicator_spec, dict):
        ratio = indicator_spec.get("ratioMetric")
        where, ratio_path = indicator_spec, "spec.indicator.spec.ratioMetric"
        if ratio is None:
            kind = next((k for k in ("thresholdMetric",) if k in indicator_spec), "indicator")
            translation.error(file, indicator_spec, kind, f"spec.indicator.spec.{kind}",
                              "not translated: only ratio metrics (good or bad over total events) make a KPI ratio")
            return None
    if not isinstance(ratio, dict):
        translation.error(file, where, None, ratio_path, "not translated: no ratio metric")
        return None
    if "raw" in ratio:
        translation.error(file, ratio, "raw", f"{ratio_path}.raw",
                          "not translated: a raw ratio cannot be split into good and total events")
        return None
    counts_bad = "bad" in ratio and "good" not in ratio
    counted = _openslo_query(translation, file, ratio.get("bad" if counts_bad else "good"),
                             f"{ratio_path}.{'bad' if counts_bad else 'good'}")
    total = _openslo_query(translation, file, ratio.get("total"), f"{ratio_path}.total")
    if counted is None or total is None:
        return None
    found, reason = indicator(counted, total, counts_bad)
    if reason:
        translation.error(file, ratio, "good" if not counts_bad else "bad", ratio_path, f"not translated: {reason}")
        return None
    kpi: dict[str, Any] = {**head, "window": window_text, "target": target, **found}
    _disable_tiers_that_cannot_fire(translation, file, objective, path, kpi, float(Decimal(target[:-1]) / 100),
                                    window)
    return kpi


def import_files(source_format: str, files: list[Path], window: float) -> Translation:
    """Every SLO of ``files`` (``sloth`` or ``openslo``) as kpi-agent spec documents, one per service."""
    translation = Translation()
    window_text = format_duration(window)
    documents: list[tuple[str, Any]] = []
    for path in files:
        try:
            documents.extend((str(path), document) for document in load_file_documents(path))
        except ConfigError as exc:
            translation.problems.extend(exc.problems)
    if source_format == "openslo":
        slis = {document["metadata"]["name"]: document.get("spec")
                for _, document in documents if isinstance(document, dict) and document.get("kind") == "SLI"
                and isinstance(document.get("metadata"), dict) and document["metadata"].get("name")}
    for file, document in documents:
        if not isinstance(document, dict):
            translation.error(file, None, None, "", "expected a mapping")
            continue
        if source_format == "sloth":
            if document.get("version") == SLOTH_SPEC or (document.get("apiVersion"), document.get("kind")) == \
                    SLOTH_KUBERNETES:
                _sloth(translation, file, document, window, window_text)
            else:
                translation.error(file, document, None, "", f"not a Sloth spec: version {SLOTH_SPEC} or apiVersion "
                                                            f"{SLOTH_KUBERNETES[0]} kind {SLOTH_KUBERNETES[1]}")
        elif document.get("apiVersion") not in OPENSLO_VERSIONS:
            translation.error(file, document, "apiVersion", "apiVersion",
                              f"not an OpenSLO document ({' or '.join(OPENSLO_VERSIONS)})")
        elif document.get("kind") == "SLO":
            _openslo(translation, file, document, slis, (window, window_text))
        elif document.get("kind") not in ("SLI", "Service"):
            translation.warn(file, document, "kind", "kind",
                             f"{document.get('kind')} objects are not translated (only SLOs and the SLIs they use)")
    for service, spec in translation.specs.items():
        if not spec["labels"]:
            del spec["labels"]
        _check(translation, service, spec)
    return translation


def render(spec: dict[str, Any], sources: list[str], source_format: str) -> str:
    header = (f"# Imported by `kpi-agent rules import --from {source_format}` from {', '.join(sources)}.\n"
              "# Review it, then: kpi-agent rules check <dir> && kpi-agent rules test <dir>\n")
    return header + to_yaml(spec)


def _check(translation: Translation, service: str, spec: dict[str, Any]) -> None:
    """An imported spec must load: anything our validator rejects is reported against the output."""
    name = f"{service}.yaml (imported)"
    _, report = parse_spec(load_text(to_yaml(spec), name), name)
    translation.problems.extend(report.problems)
