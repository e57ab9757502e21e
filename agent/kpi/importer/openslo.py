"""OpenSLO SLOs into KPI specs: ``v1alpha`` (ratioMetrics on the objective) and ``v1`` (an inline
``indicator`` or an ``indicatorRef`` to an SLI document of the files given)."""

from __future__ import annotations

import re
from typing import Any

from agent.formatting import format_duration
from agent.kpi.importer.translation import (
    Translation,
    disable_tiers_that_cannot_fire,
    first_of,
    free_text,
    indicator,
    key_of,
    kpi_name,
    mappings,
    percent,
    percent_value,
    read_labels,
    service_name,
)

OPENSLO_VERSIONS = ("openslo/v1alpha", "openslo/v1")
_OPENSLO_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400,
                  "quarter": 90 * 86400, "year": 365 * 86400}
_OPENSLO_DURATION_RE = re.compile(r"^(\d+)([smhdwMQY])$")
_OPENSLO_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "M": 30 * 86400,
                           "Q": 90 * 86400, "Y": 365 * 86400}


def sli_documents(documents: list[tuple[str, Any]]) -> dict[str, Any]:
    """name -> spec of every SLI document, for SLOs that refer to one (indicatorRef)."""
    return {document["metadata"]["name"]: document.get("spec")
            for _, document in documents if isinstance(document, dict) and document.get("kind") == "SLI"
            and isinstance(document.get("metadata"), dict) and document["metadata"].get("name")}


def _time_window(translation: Translation, file: str, spec: Any, path: str,
                 default: tuple[float, str]) -> tuple[float, str]:
    windows = first_of(spec, "timeWindow", "timeWindows")
    key = key_of(spec, "timeWindow", "timeWindows")
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


def _query(translation: Translation, file: str, node: Any, path: str) -> str | None:
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


def translate_openslo(translation: Translation, file: str, document: Any, slis: dict[str, Any],
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
    window, window_text = _time_window(translation, file, spec, "spec", window_default)
    if str(spec.get("budgetingMethod", "Occurrences")) != "Occurrences":
        translation.warn(file, spec, "budgetingMethod", "spec.budgetingMethod",
                         f"{spec['budgetingMethod']} is translated as Occurrences: the ratio counts events, not "
                         "time slices")
    if spec.get("alertPolicies"):
        translation.warn(file, spec, "alertPolicies", "spec.alertPolicies",
                         "not translated: kpi-agent's multi-window burn-rate tiers (page, ticket) apply instead")
    labels = read_labels(translation, file, metadata, "labels", "metadata.labels")
    indicator_spec = _indicator_of(translation, file, spec, slis)
    objectives = mappings(translation, file, spec, "objectives", "spec.objectives")
    for index, (path, objective) in enumerate(objectives):
        suffix = ""
        if len(objectives) > 1:
            suffix = "_" + kpi_name(str(objective.get("displayName") or objective.get("name") or index))
        name = kpi_name(raw_name) + suffix
        if name != raw_name:
            translation.warn(file, metadata, "name", "metadata.name", f"{raw_name!r} becomes the KPI {name!r}")
        head: dict[str, Any] = {"name": name}
        description = free_text(translation, file, spec, "description", "spec.description")
        if description:
            head["description"] = description
        title = free_text(translation, file, objective, "displayName", f"{path}.displayName") or \
            free_text(translation, file, metadata, "displayName", "metadata.displayName")
        if title:
            head["objective"] = title
        kpi = _objective(translation, file, objective, path, indicator_spec, head, window, window_text)
        if kpi is None:
            continue
        if labels:
            kpi["labels"] = labels
        translation.add(file, objective, service, {}, kpi)


def _indicator_of(translation: Translation, file: str, spec: Any, slis: dict[str, Any]) -> Any:
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


def _objective(translation: Translation, file: str, objective: Any, path: str, indicator_spec: Any,
               head: dict[str, Any], window: float, window_text: str) -> dict[str, Any] | None:
    if objective.get("target") is None and objective.get("targetPercent") is not None:
        target = percent(objective["targetPercent"])
    else:
        target = percent(objective.get("target"), per=100)
    if target is None or not 0 < percent_value(target) < 100:
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
    counted = _query(translation, file, ratio.get("bad" if counts_bad else "good"),
                     f"{ratio_path}.{'bad' if counts_bad else 'good'}")
    total = _query(translation, file, ratio.get("total"), f"{ratio_path}.total")
    if counted is None or total is None:
        return None
    counter = ratio.get("counter") is True
    found, reason = indicator(counted, total, counts_bad, counter)
    if reason and not counter and indicator(counted, total, counts_bad, counter=True)[1] is None:
        reason += " (with ratioMetric.counter: true, a sum of counters is read as one)"
    if reason:
        translation.error(file, ratio, "good" if not counts_bad else "bad", ratio_path, f"not translated: {reason}")
        return None
    kpi: dict[str, Any] = {**head, "window": window_text, "target": target, **found}
    disable_tiers_that_cannot_fire(translation, file, objective, path, kpi, float(percent_value(target) / 100),
                                   window)
    return kpi
