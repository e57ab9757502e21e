"""Runs the discoverers of one source and keeps, per origin (the static groups, each target file, each
endpoint), its last good target groups and how its last look went: a file that stops parsing or an endpoint
that stops answering changes no target, and says so (``kpi_agent_sd_refresh_failures_total``, a warning when
it starts failing and an info line when it recovers, the status page and ``/api/v1/sources``).

A look that changes an origin's targets is counted in ``kpi_agent_sd_refreshes_total`` only once the targets it
gave are in place (``counted``): a scrape that sees the count go up sees them in ``kpi_agent_sd_targets`` too."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.config.problems import ConfigError, Problem
from agent.discovery.config import DiscoveryConfig
from agent.discovery.discoverer import Discoverer, StaticDiscoverer, Update
from agent.discovery.file import FileDiscoverer, problems_text, target_files
from agent.discovery.http import HttpDiscoverer
from agent.discovery.targetgroup import TargetGroup, read_target_file
from agent.discovery.targets import STATES, Resolution, TargetRules, resolve
from agent.runtime.shard import UNSHARDED, Shard
from agent.series.family import counter, gauge
from agent.series.store import Group

log = logging.getLogger(__name__)

MECHANISMS = ("static", "file", "http")
SD_TARGETS = gauge("kpi_agent_sd_targets", "Targets of a discovering source by state: probed here, probed by another "
                   "shard, dropped by relabel_configs, refused (cannot be probed, duplicate)", ["state"])
SD_REFRESHES = counter("kpi_agent_sd_refreshes_total", "Reads of target files and requests to HTTP SD endpoints",
                       ["mechanism"])
SD_REFRESH_FAILURES = counter("kpi_agent_sd_refresh_failures_total", "Reads and requests that failed; the last good "
                              "targets of that file or endpoint stay", ["mechanism"])
SD_FAMILIES = (SD_TARGETS, SD_REFRESHES, SD_REFRESH_FAILURES)
FAILURES_SHOWN = 20


@dataclass
class OriginState:
    groups: list[TargetGroup]
    last_refresh: float | None = None  # Unix time of the last look
    error: str | None = None  # why the last look failed; None when it worked
    failing_since: float | None = None


def discoverers(config: DiscoveryConfig) -> list[Discoverer]:
    found: list[Discoverer] = [StaticDiscoverer(config.static)] if config.static else []
    found += [FileDiscoverer(sd) for sd in config.files]
    found += [HttpDiscoverer(sd) for sd in config.http]
    return found


class SourceDiscovery:
    """The discovery of one source: run its discoverers, merge their updates, count them, say how it goes."""

    def __init__(self, name: str, config: DiscoveryConfig, own: Group, on_change: Callable[[], None]):
        self.name = name
        self.config = config
        self.on_change = on_change
        self.origins: dict[tuple[str, str], OriginState] = {}
        self._uncounted: list[tuple[str, bool]] = []  # looks whose targets are not in place yet, oldest first:
        # (mechanism, whether the look changed its origin's groups)
        self._resolving = 0  # how many of them the resolution under way includes
        self.states = own.gauge(SD_TARGETS)
        for state in STATES:
            self.states.set((state,), 0)
        self.refreshes = own.counter(SD_REFRESHES)
        self.failures = own.counter(SD_REFRESH_FAILURES)
        for mechanism in config.mechanisms:
            self.refreshes.ensure((mechanism,))
            self.failures.ensure((mechanism,))

    def groups(self) -> list[TargetGroup]:
        """Every origin's last good groups, to resolve; ``counted`` is then told what they resolved to."""
        self._resolving = len(self._uncounted)
        return [group for state in self.origins.values() for group in state.groups]

    def tasks(self) -> list[asyncio.Task[None]]:
        """One task per discoverer (the caller cancels them)."""
        return [asyncio.create_task(d.run(self.update), name=f"discovery {d.mechanism} of {self.name}")
                for d in discoverers(self.config)]

    def update(self, update: Update) -> None:
        key = (update.mechanism, update.origin)
        state = self.origins.get(key)
        if update.groups is None and update.error is None:  # the origin is gone
            if self.origins.pop(key, None) is not None:
                self.on_change()
            return
        now = time.time()
        if state is None:
            state = self.origins[key] = OriginState([])
        state.last_refresh = now
        where = {update.mechanism: update.origin} if update.origin else {}
        if update.error is not None:
            self.refreshes.inc((update.mechanism,))
            self.failures.inc((update.mechanism,))
            if state.error is None:
                state.failing_since = now
                log.warning("target discovery failed; keeping the last good targets",
                            extra={"source": self.name, **where, "error": update.error})
            state.error = update.error
            return
        if state.error is not None:
            log.info("target discovery recovered", extra={"source": self.name, **where})
        state.error, state.failing_since = None, None
        if state.groups != update.groups:
            state.groups = update.groups or []
            self._uncounted.append((update.mechanism, True))
            self.on_change()
        elif self._uncounted:  # after an earlier look still being resolved, not before it
            self._uncounted.append((update.mechanism, False))
        else:
            self.refreshes.inc((update.mechanism,))

    def counted(self, result: Resolution) -> None:
        """The targets of the last ``groups()`` are in place: their states, and the looks that gave them."""
        for state, count in result.counts.items():
            self.states.set((state,), count)
        done = self._resolving
        while done < len(self._uncounted) and not self._uncounted[done][1]:
            done += 1  # a look since then that changed nothing: its targets are these too
        for mechanism, _ in self._uncounted[:done]:
            self.refreshes.inc((mechanism,))
        del self._uncounted[:done]
        self._resolving = 0

    def failing(self) -> list[dict[str, Any]]:
        """The origins whose last look failed, for the status page and /api/v1/sources."""
        return [{"mechanism": mechanism, "origin": origin, "error": state.error, "since": state.failing_since,
                 "last_refresh": state.last_refresh}
                for (mechanism, origin), state in self.origins.items() if state.error is not None][:FAILURES_SHOWN]


def check_discovery(config: DiscoveryConfig, rules: TargetRules, shard: Shard = UNSHARDED
                    ) -> tuple[list[Problem], Resolution]:
    """What ``kpi-agent check`` reads now: the problems of the target files the patterns match (errors), and what
    they give. HTTP SD endpoints are not asked: a check does not depend on the network."""
    problems: list[Problem] = []
    groups = list(config.static)
    for path in sorted(target_files(tuple(p for sd in config.files for p in sd.files))):
        try:
            groups += read_target_file(path)
        except ConfigError as exc:
            problems += exc.problems
    return problems, resolve(rules, groups, shard)


__all__ = ["SD_FAMILIES", "SourceDiscovery", "check_discovery", "problems_text"]
