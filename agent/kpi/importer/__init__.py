"""Translates Sloth and OpenSLO SLO specs into kpi-agent KPI specs (``kpi-agent rules import``).

Sloth ``prometheus/v1`` files and its Kubernetes ``PrometheusServiceLevel`` objects (``sloth``), and OpenSLO
``v1alpha`` and ``v1`` SLOs with ratio metrics (``openslo``), keep their names (made valid KPI names),
objectives, windows, alert names, labels and annotations. Queries that are sums of rates of a selector become
selectors (cheaper rules, series checks, the missing-numerator guard); histogram bucket over count becomes the
latency shorthand; other queries keep their PromQL with ``{{window}}``. What cannot be translated (plugins,
raw SLIs, threshold metrics, non-Prometheus sources) is reported with its file and line, never dropped
silently. Every imported spec is validated as `rules check` would (agent.kpi.spec).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config.problems import ConfigError
from agent.config.yaml import load_file_documents, load_text
from agent.formatting import format_duration
from agent.kpi.importer.openslo import OPENSLO_VERSIONS, sli_documents, translate_openslo
from agent.kpi.importer.sloth import (
    SLOTH_KUBERNETES,
    SLOTH_SPEC,
    Tiers,
    is_alert_windows,
    is_sloth,
    policy_for,
    translate_sloth,
    window_catalog,
)
from agent.kpi.importer.translation import Translation
from agent.kpi.render import to_yaml
from agent.kpi.spec.document import parse_spec

MAX_VALUE = 65536  # characters of any value of an imported file: longer ones are not SLO specs


def import_files(source_format: str, files: list[Path], window: float) -> Translation:
    """Every SLO of ``files`` (``sloth`` or ``openslo``) as kpi-agent spec documents, one per service."""
    translation = Translation()
    window_text = format_duration(window)
    documents = _documents(translation, files)
    if source_format == "sloth":
        policy = policy_for(translation, window_catalog(translation, documents), window)
    slis = sli_documents(documents) if source_format == "openslo" else {}
    for file, document in documents:
        if not isinstance(document, dict):
            translation.error(file, None, None, "", "expected a mapping")
        elif source_format == "sloth":
            _sloth_document(translation, file, document, (window, window_text), policy)
        else:
            _openslo_document(translation, file, document, slis, window, window_text)
    for service, spec in translation.specs.items():
        if not spec["labels"]:
            del spec["labels"]
        _check(translation, service, spec)
    return translation


def _documents(translation: Translation, files: list[Path]) -> list[tuple[str, Any]]:
    """(file, document) for every YAML document of ``files``, and every item of a document that is a list of
    objects (as `oslo` reads them); files that do not load, and values too long to be real, are problems."""
    documents: list[tuple[str, Any]] = []
    for path in files:
        try:
            loaded = load_file_documents(path)
        except ConfigError as exc:
            translation.problems.extend(exc.problems)
            continue
        for document in loaded:
            items = document if isinstance(document, list) else [document]
            for item in items:
                if _within_limits(translation, str(path), item, ""):
                    documents.append((str(path), item))
    return documents


def _within_limits(translation: Translation, file: str, node: Any, path: str) -> bool:
    """False (reported with its line) when a string value of ``node`` is longer than MAX_VALUE characters."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in children:
        where = f"{path}.{key}" if isinstance(node, dict) else f"{path}[{key}]"
        if isinstance(value, str) and len(value) > MAX_VALUE:
            translation.error(file, node, str(key) if isinstance(node, dict) else None, where.lstrip("."),
                              f"{len(value)} characters, more than {MAX_VALUE}: the document is not imported")
            return False
        if isinstance(value, (dict, list)) and not _within_limits(translation, file, value, where):
            return False
    return True


def _sloth_document(translation: Translation, file: str, document: dict[str, Any], window: tuple[float, str],
                    policy: Tiers | None) -> None:
    if is_sloth(document):
        translate_sloth(translation, file, document, window[0], window[1], policy)
    elif not is_alert_windows(document):
        translation.error(file, document, None, "", f"not a Sloth spec: version {SLOTH_SPEC} or apiVersion "
                                                    f"{SLOTH_KUBERNETES[0]} kind {SLOTH_KUBERNETES[1]} "
                                                    "(or AlertWindows)")


def _openslo_document(translation: Translation, file: str, document: dict[str, Any], slis: dict[str, Any],
                      window: float, window_text: str) -> None:
    if document.get("apiVersion") not in OPENSLO_VERSIONS:
        translation.error(file, document, "apiVersion", "apiVersion",
                          f"not an OpenSLO document ({' or '.join(OPENSLO_VERSIONS)})")
    elif document.get("kind") == "SLO":
        translate_openslo(translation, file, document, slis, (window, window_text))
    elif document.get("kind") not in ("SLI", "Service"):
        translation.warn(file, document, "kind", "kind",
                         f"{document.get('kind')} objects are not translated (only SLOs and the SLIs they use)")


def render(spec: dict[str, Any], sources: list[str], source_format: str) -> str:
    header = (f"# Imported by `kpi-agent rules import --from {source_format}` from {', '.join(sources)}.\n"
              "# Review it, then: kpi-agent rules check <dir> && kpi-agent rules test <dir>\n")
    return header + to_yaml(spec)


def _check(translation: Translation, service: str, spec: dict[str, Any]) -> None:
    """An imported spec must load: anything our validator rejects is reported against the output."""
    name = f"{service}.yaml (imported)"
    _, report = parse_spec(load_text(to_yaml(spec), name), name)
    translation.problems.extend(report.problems)
