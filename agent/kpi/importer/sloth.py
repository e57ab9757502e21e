"""Sloth specs into KPI specs: ``prometheus/v1`` files and ``sloth.slok.dev/v1`` PrometheusServiceLevel
objects. Sloth's period is a command-line flag, so the window comes from ``rules import --window``; its alert
windows come from Sloth's catalog for that period (the SRE Workbook's for 30d and 28d) or from
``AlertWindows`` documents among the files, as `sloth --slo-period-windows-path` loads them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agent.config import values
from agent.config.problems import Problem
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
    strings,
)
from agent.kpi.model import BurnWindow
from agent.kpi.spec.values import ALERT_NAME_RE
from agent.kpi.windows import scaled_tiers

SLOTH_SPEC = "prometheus/v1"
SLOTH_KUBERNETES = ("sloth.slok.dev/v1", "PrometheusServiceLevel")
ALERT_WINDOWS = ("sloth.slok.dev/v1", "AlertWindows")
# Sloth's built-in SLO period windows (its google-30d and google-28d, from the SRE Workbook): per severity, the
# quick and slow pairs as (error budget percent spent, short window, long window)
_WORKBOOK_PAIRS = {"page": ((2, 300, 3600), (5, 1800, 21600)), "ticket": ((10, 7200, 86400), (10, 21600, 259200))}
_BUILT_IN_PERIODS = (30 * 86400, 28 * 86400)
# sloth.dev/contrib/denominator_corrected_rules/v1 weighs failures by the window's traffic against the period's
# average, so that quiet hours do not page; our remedy for the same problem is a minimum of failed events
DENOMINATOR_CORRECTED = "sloth.dev/contrib/denominator_corrected_rules/v1"
CORRECTED_MIN_BAD_EVENTS = 10

Tiers = dict[str, tuple[BurnWindow, ...]]


def is_sloth(document: dict[str, Any]) -> bool:
    return document.get("version") == SLOTH_SPEC or \
        (document.get("apiVersion"), document.get("kind")) == SLOTH_KUBERNETES


def is_alert_windows(document: dict[str, Any]) -> bool:
    return (document.get("apiVersion"), document.get("kind")) == ALERT_WINDOWS


def _burn_windows(period: float, pairs: Any) -> tuple[BurnWindow, ...]:
    """Sloth's pairs as ours: the factor is the share of budget spent over the long window, times the periods
    that fit in it (2% of 30d in 1h: 14.4)."""
    return tuple(BurnWindow(float(long), float(short), float(round(Decimal(str(share)) / 100 * Decimal(period) /
                                                                   Decimal(long), 9)))
                 for share, short, long in pairs)


def window_catalog(translation: Translation, documents: list[tuple[str, Any]]) -> dict[float, Tiers]:
    """SLO period -> its tiers: Sloth's built-in 30d and 28d, then each AlertWindows document's (which win)."""
    catalog = {float(period): {severity: _burn_windows(period, pairs) for severity, pairs in _WORKBOOK_PAIRS.items()}
               for period in _BUILT_IN_PERIODS}
    for file, document in documents:
        if isinstance(document, dict) and is_alert_windows(document):
            found = _alert_windows(translation, file, document)
            if found:
                catalog[found[0]] = found[1]
    return catalog


def _duration(translation: Translation, file: str, node: Any, key: str, path: str) -> float | None:
    try:
        return values.duration(node.get(key) if isinstance(node, dict) else None)
    except ValueError as exc:
        translation.error(file, node, key, f"{path}.{key}", str(exc))
        return None


def _alert_windows(translation: Translation, file: str, document: Any) -> tuple[float, Tiers] | None:
    """An AlertWindows document: ``spec: {sloPeriod, page: {quick, slow}, ticket: {quick, slow}}``, each pair
    ``{errorBudgetPercent, shortWindow, longWindow}``."""
    spec = document.get("spec")
    period = _duration(translation, file, spec, "sloPeriod", "spec")
    tiers: Tiers = {}
    for severity in ("page", "ticket"):
        pairs = []
        for speed in ("quick", "slow"):
            where = f"spec.{severity}.{speed}"
            pair = first_of(first_of(spec, severity), speed)
            share = percent(first_of(pair, "errorBudgetPercent"))
            short = _duration(translation, file, pair, "shortWindow", where)
            long = _duration(translation, file, pair, "longWindow", where)
            if share is None or not 0 < percent_value(share) <= 100:
                translation.error(file, pair, "errorBudgetPercent", f"{where}.errorBudgetPercent",
                                  "needs a percentage of the error budget between 0 and 100")
            elif short and long:
                pairs.append((percent_value(share), short, long))
        if period and len(pairs) == 2:
            tiers[severity] = _burn_windows(period, pairs)
    return (period, tiers) if period and len(tiers) == 2 else None


def _is_ours(tiers: Tiers, window: float) -> bool:
    """Whether ``tiers`` are the ones a spec without ``windows`` gets anyway."""
    ours = scaled_tiers(window)
    return all(len(tiers[s]) == len(ours[s]) and all(
        (a.long, a.short) == (b.long, b.short) and abs(a.factor - b.factor) < 1e-9 for a, b in zip(tiers[s], ours[s],
                                                                                                  strict=True))
        for s in ours)


def policy_for(translation: Translation, catalog: dict[float, Tiers], window: float) -> Tiers | None:
    """The tiers of Sloth's catalog for ``window`` (None: ours apply as they are)."""
    tiers = catalog.get(window)
    if tiers is None:
        translation.problems.append(Problem(
            "--window", None, "", f"Sloth has no alert windows for a {format_duration(window)} period (its "
            "catalog holds 30d and 28d; an AlertWindows file among the files adds others): kpi-agent's tiers "
            "scaled to it apply", warning=True))
    return None if tiers is None or _is_ours(tiers, window) else tiers


def _plugins(translation: Translation, file: str, node: Any, key: str, path: str) -> bool:
    """Whether the plugin chain ``node[key]`` corrects for low traffic (denominator_corrected_rules); any other
    plugin is reported: Sloth code cannot be translated."""
    section = node.get(key)
    chain = section.get("chain") if isinstance(section, dict) else None
    ids = [str(item.get("id")) for item in chain if isinstance(item, dict)] if isinstance(chain, list) else []
    others = [plugin for plugin in ids if plugin != DENOMINATOR_CORRECTED]
    if others:
        translation.error(file, node, key, path, f"SLO plugins are Sloth code: not translated ({', '.join(others)}); "
                                                 "the SLOs are imported without them")
    if DENOMINATOR_CORRECTED in ids:
        translation.warn(file, node, key, path,
                         f"{DENOMINATOR_CORRECTED} (failures weighed by traffic, so quiet hours do not page) becomes "
                         f"min_bad_events: {CORRECTED_MIN_BAD_EVENTS}: a window pair fires only once that many events "
                         "failed in its long window; adjust it to your traffic")
        return True
    return False


def translate_sloth(translation: Translation, file: str, document: Any, window: float, window_text: str,
                    policy: Tiers | None) -> None:
    kubernetes = document.get("kind") == SLOTH_KUBERNETES[1]
    body = document.get("spec") if kubernetes else document
    prefix = "spec." if kubernetes else ""
    if not isinstance(body, dict):
        translation.error(file, document, "spec", f"{prefix}spec", "expected a mapping")
        return
    corrected = any(_plugins(translation, file, body, key, f"{prefix}{key}") for key in ("slo_plugins", "sloPlugins")
                    if key in body)
    raw_service = str(body.get("service") or "")
    if not raw_service:
        translation.error(file, body, "service", f"{prefix}service", "is required")
        return
    service = service_name(raw_service)
    if service != raw_service:
        translation.warn(file, body, "service", f"{prefix}service", f"{raw_service!r} becomes {service!r}")
    labels = read_labels(translation, file, body, "labels", f"{prefix}labels")
    for path, slo in mappings(translation, file, body, "slos", f"{prefix}slos"):
        kpi = _slo(translation, file, slo, path, (window, window_text), policy, corrected)
        if kpi is not None:
            translation.add(file, slo, service, labels, kpi)


def _events(translation: Translation, file: str, slo: Any, path: str) -> dict[str, Any] | None:
    """The indicator of ``sli.events``; what cannot be translated (raw, plugin SLIs) is reported."""
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
    return found


def _slo(translation: Translation, file: str, slo: Any, path: str, window: tuple[float, str], policy: Tiers | None,
         corrected: bool) -> dict[str, Any] | None:
    raw_name = str(slo.get("name") or "")
    name = kpi_name(raw_name)
    if raw_name and name != raw_name:
        translation.warn(file, slo, "name", f"{path}.name", f"{raw_name!r} becomes the KPI {name!r}")
    target = percent(slo.get("objective"))
    if not raw_name or target is None or not 0 < percent_value(target) < 100:
        translation.error(file, slo, "objective" if raw_name else "name", path,
                          "needs a name and an objective between 0 and 100 (percent)")
        return None
    if "plugins" in slo:
        corrected = _plugins(translation, file, slo, "plugins", f"{path}.plugins") or corrected
    found = _events(translation, file, slo, path)
    if found is None:
        return None
    kpi: dict[str, Any] = {"name": name}
    description = free_text(translation, file, slo, "description", f"{path}.description")
    if description:
        kpi["description"] = description
    kpi["window"], kpi["target"] = window[1], target
    kpi_labels = read_labels(translation, file, slo, "labels", f"{path}.labels")
    if kpi_labels:
        kpi["labels"] = kpi_labels
    kpi.update(found)
    alerting = _alerting(translation, file, slo.get("alerting"), f"{path}.alerting")
    if corrected:
        alerting["min_bad_events"] = CORRECTED_MIN_BAD_EVENTS
    if policy:
        for severity, windows in policy.items():
            if alerting.get(severity) is not False:
                tier = alerting.setdefault(severity, {})
                tier["windows"] = [{"long": format_duration(w.long), "short": format_duration(w.short),
                                    "factor": w.factor} for w in windows]
    if alerting:
        kpi["alerting"] = alerting
    disable_tiers_that_cannot_fire(translation, file, slo, path, kpi, float(percent_value(target) / 100), window[0],
                                   policy)
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
