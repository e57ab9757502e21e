"""Rule files as text: Prometheus rule files and prometheus-operator PrometheusRule objects, with the header
that says they are generated (and lets `rules generate` tell its own files from a person's)."""

from __future__ import annotations

from typing import Any

import yaml

from agent.kpi.compiler import compile_groups
from agent.kpi.conventions import SERVICE_LABEL
from agent.kpi.model import ServiceSpec
from agent.kpi.output import header_line


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # shared label dicts must not become &id001 anchors
        return True


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(document: Any) -> str:
    """YAML as people read it: keys in the given order, multi-line strings as blocks, no anchors."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1_000_000, allow_unicode=True,
                     default_flow_style=False)


def header(source: str) -> str:
    """The first line of a generated rule file: `rules generate` knows its own files by it."""
    return f"# {header_line('rules generate', source)}\n"


def render_prometheus(spec: ServiceSpec, source_name: str, interval: str | None = None) -> str:
    return header(source_name) + to_yaml({"groups": compile_groups(spec, interval)})


def render_operator(spec: ServiceSpec, source_name: str, namespace: str | None = None,
                    interval: str | None = None) -> str:
    metadata: dict[str, Any] = {"name": f"kpi-{spec.service}".lower().replace("_", "-").replace(".", "-")}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = {"app.kubernetes.io/name": "kpi-agent", "app.kubernetes.io/component": "kpi-rules",
                          SERVICE_LABEL: spec.service}
    document = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": metadata,
                "spec": {"groups": compile_groups(spec, interval)}}
    return header(source_name) + to_yaml(document)
