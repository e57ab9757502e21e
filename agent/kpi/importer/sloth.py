"""Sloth specs into KPI specs: ``prometheus/v1`` files and ``sloth.slok.dev/v1`` PrometheusServiceLevel
objects. Sloth's period is a command-line flag, so the window comes from ``rules import --window``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agent.kpi.importer.translation import (
    Translation,
    disable_tiers_that_cannot_fire,
    first_of,
    indicator,
    key_of,
    kpi_name,
    mappings,
    percent,
    read_labels,
    service_name,
    strings,
)
from agent.kpi.spec.values import ALERT_NAME_RE

SLOTH_SPEC = "prometheus/v1"
SLOTH_KUBERNETES = ("sloth.slok.dev/v1", "PrometheusServiceLevel")


def is_sloth(document: dict[str, Any]) -> bool:
    return document.get("version") == SLOTH_SPEC or \
        (document.get("apiVersion"), document.get("kind")) == SLOTH_KUBERNETES


def translate_sloth(translation: Translation, file: str, document: Any, window: float, window_text: str) -> None:
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
    labels = read_labels(translation, file, body, "labels", f"{prefix}labels")
    for path, slo in mappings(translation, file, body, "slos", f"{prefix}slos"):
        kpi = _slo(translation, file, slo, path, window, window_text)
        if kpi is not None:
            translation.add(file, slo, service, labels, kpi)


def _slo(translation: Translation, file: str, slo: Any, path: str, window: float,
               window_text: str) -> dict[str, Any] | None:
    raw_name = str(slo.get("name") or "")
    name = kpi_name(raw_name)
    if raw_name and name != raw_name:
        translation.warn(file, slo, "name", f"{path}.name", f"{raw_name!r} becomes the KPI {name!r}")
    target = percent(slo.get("objective"))
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
    error_query = first_of(events, "error_query", "errorQuery")
    total_query = first_of(events, "total_query", "totalQuery")
    if not isinstance(error_query, str) or not isinstance(total_query, str):
        translation.error(file, events, None, f"{path}.sli.events", "needs error_query and total_query")
        return None
    found, reason = indicator(error_query, total_query, counts_bad=True)
    if reason:
        translation.error(file, events, key_of(events, "error_query", "errorQuery"), f"{path}.sli.events",
                          f"not translated: {reason}")
        return None
    kpi: dict[str, Any] = {"name": name}
    if slo.get("description"):
        kpi["description"] = str(slo["description"])
    kpi["window"] = window_text
    kpi["target"] = target
    kpi_labels = read_labels(translation, file, slo, "labels", f"{path}.labels")
    if kpi_labels:
        kpi["labels"] = kpi_labels
    kpi.update(found)
    alerting = _alerting(translation, file, slo.get("alerting"), f"{path}.alerting")
    if alerting:
        kpi["alerting"] = alerting
    disable_tiers_that_cannot_fire(translation, file, slo, path, kpi, float(Decimal(target[:-1]) / 100), window)
    return kpi


def _alerting(translation: Translation, file: str, node: Any, path: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {}
    alerting: dict[str, Any] = {}
    name = node.get("name")
    if name:
        if isinstance(name, str) and ALERT_NAME_RE.match(name):
            alerting["alert_name"] = name
        else:
            translation.warn(file, node, "name", f"{path}.name", f"{name!r} is not an alert name: left out")
    labels = read_labels(translation, file, node, "labels", f"{path}.labels")
    if labels:
        alerting["labels"] = labels
    if strings(node.get("annotations")):
        alerting["annotations"] = strings(node.get("annotations"))
    for keys, severity in ((("page_alert", "pageAlert"), "page"), (("ticket_alert", "ticketAlert"), "ticket")):
        section = first_of(node, *keys)
        if not isinstance(section, dict):
            continue
        key_path = f"{path}.{key_of(node, *keys)}"
        if section.get("disable"):
            alerting[severity] = False
            continue
        tier: dict[str, Any] = {}
        if section.get("for"):
            tier["for"] = str(section["for"])
        tier_labels = read_labels(translation, file, section, "labels", f"{key_path}.labels")
        if tier_labels:
            tier["labels"] = tier_labels
        if strings(section.get("annotations")):
            tier["annotations"] = strings(section.get("annotations"))
        if tier:
            alerting[severity] = tier
    return alerting
