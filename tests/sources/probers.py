"""Shared by the prober kinds' tests: one source built from its module keys, probed once and rendered as
/metrics renders it, and the same module written for blackbox_exporter."""

from __future__ import annotations

from typing import Any

import yaml

from agent.config.agent import parse_config
from agent.config.yaml import load_text
from agent.series.store import Store
from tests.helpers import Exposition, build_source, render_store

# Our keys blackbox_exporter does not know (they are left out of its module)
OURS_ONLY_KEYS = frozenset({"packets", "packet_interval", "retries", "labels", "omit_series"})


def source_config(kind: str, name: str, target: str, module: dict[str, Any], timeout: str = "2s",
                  interval: str = "15s") -> Any:
    """The parsed config of one ``kind`` source probing ``target`` (an http source's ``url``) with these module
    keys."""
    from agent.sources.kinds import KINDS

    item = {"name": name, KINDS[kind].target_key: target, "interval": interval, "timeout": timeout, **module}
    text = yaml.safe_dump({kind: [item]}, sort_keys=False)
    config, _ = parse_config(load_text(text, "agent.yaml"), "agent.yaml")
    (source,) = config.of_kind(kind)
    return source


class Probed:
    """One source in a store of its own: probe it, read its page."""

    def __init__(self, context: Any, kind: str, target: str, module: dict[str, Any], timeout: str = "2s",
                 name: str = "probe"):
        self.store = Store()
        self.source = build_source(self.store, context, source_config(kind, name, target, module, timeout), kind)

    async def probe(self) -> str | None:
        return await self.source.probe()

    def page(self) -> Exposition:
        return render_store(self.store)

    @property
    def reason(self) -> str | None:
        """The failure reason the status page shows for the target."""
        return self.source.prober.last_error


def blackbox_module(name: str, prober: str, module: dict[str, Any], timeout: str = "2s") -> str:
    """A ``modules:`` entry for blackbox_exporter with the same settings (our extra keys left out)."""
    settings = {key: value for key, value in module.items() if key not in OURS_ONLY_KEYS}
    return yaml.safe_dump({name: {"prober": prober, "timeout": timeout, prober: settings}}, sort_keys=False)


def one_target(page: Exposition, target: str) -> Exposition:
    """The series of one target of a page (``target="..."``), as blackbox's page of that probe would hold them."""
    label = f'target="{target}"'
    return Exposition("\n".join(line for line in page.text.splitlines()
                                 if line.startswith("#") or label in line).encode() + b"\n")


def assert_retried(page: Exposition, kind: str, failed: str, probes: int = 1) -> None:
    """What ``probes`` probes with ``retries: 1``, each failing once (``failed``) then succeeding, show on
    /metrics: every result of the kind from the start; the probes succeeded, but every failed attempt is counted,
    and the last probe needed a retry."""
    from agent.sources.kinds import KINDS

    results = KINDS[kind].result_labels  # type: ignore[attr-defined]
    assert page.by("probes_total", "result") == {result: float(probes) if result == "success" else 0.0
                                                 for result in results}
    assert page.by("probe_attempts_total", "result") == {
        result: float(probes) if result in ("success", failed) else 0.0 for result in results}
    assert page.value("probe_retries") == 1 and page.value("probe_success") == 1
    assert page.value("probe_latency_seconds_count") == probes
