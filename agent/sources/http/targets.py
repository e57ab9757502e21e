"""A source that discovers its targets: watches its target files and HTTP SD endpoints, and keeps one prober
per target running, so targets appear and disappear without a reload.

Every origin (the static groups, each target file, each endpoint) keeps its last good target groups: a file
that stops parsing or an endpoint that stops answering is counted in ``kpi_agent_sd_refresh_failures_total``
and changes nothing. After any change the targets are resolved again (relabelling, checks, sharding: a pure
function, run in a worker thread) and the difference applied: a target whose URL and labels did not change
keeps its prober, its place in the schedule and its counters; a vanished one leaves the schedule and its
series leave /metrics with its store group; new ones are attached in batches, so ten thousand new targets
never block the event loop for long.
Target files are polled (a stat per file per second, re-read when they change and every ``refresh_interval``),
endpoints asked every ``refresh_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import aiohttp

from agent import heap
from agent.sources.base import IDENTITY_LABEL as SOURCE_LABEL
from agent.sources.base import Source, SourceContext, SourceStats
from agent.sources.http.client import read_body, tls_options
from agent.sources.http.config import (
    IDENTITY_LABEL,
    MAX_REDIRECTS,
    SD_MECHANISMS,
    SD_REFRESH_FAILURES,
    SD_REFRESHES,
    SD_STATES,
    SD_TARGETS,
    FileSdConfig,
    HttpSdConfig,
    HttpSourceConfig,
    TargetGroup,
)
from agent.sources.http.discovery import (
    Resolution,
    Target,
    parse_target_groups,
    read_target_file,
    resolve,
    target_files,
)
from agent.sources.http.source import Module, Prober, credentials
from agent.store import Group, SchemaError
from agent.yamlsrc import ConfigError

log = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0  # seconds between two looks at a source's target files
ATTACH_BATCH = 100  # targets attached to the store between two turns of the event loop (about 10 ms of work)
MAX_SD_RESPONSE = 32 * 1024 * 1024

Origin = tuple[str, str]  # (mechanism, file path or URL)


FAILING_SHOWN = 20  # the status page lists this many failing targets and refusals


class DiscoveringHttpSource(Source[HttpSourceConfig]):
    kind = "http"

    def __init__(self, config: HttpSourceConfig, group: Group, stats: SourceStats, context: SourceContext):
        super().__init__(config, group, stats, context)
        assert config.discovery is not None and context.store is not None
        self.discovery = config.discovery
        self.store = context.store
        self.module = Module(config, stats, context)
        self._states = stats.group.gauge(SD_TARGETS)
        for state in SD_STATES:
            self._states.set((state,), 0)
        self._refreshes = stats.group.counter(SD_REFRESHES)
        self._failures = stats.group.counter(SD_REFRESH_FAILURES)
        used = {"static": self.discovery.static, "file": self.discovery.files, "http": self.discovery.http}
        for mechanism in SD_MECHANISMS:
            if used[mechanism]:
                self._refreshes.ensure((mechanism,))
                self._failures.ensure((mechanism,))
        self._origins: dict[Origin, list[TargetGroup]] = {("static", ""): list(self.discovery.static)}
        self._failing: set[Origin] = set()
        self._probers: dict[str, tuple[Target, Prober]] = {}
        self._changed = asyncio.Event()
        self._crash: BaseException | None = None
        self._refusals: list[str] = []
        if self.discovery.static:
            self._refreshes.inc(("static",))

    def attached_groups(self) -> list[str]:
        return [prober.group.owner for _, prober in self._probers.values()]

    def details(self) -> dict[str, Any]:
        """The targets by state, and the first failing ones with their error: the per-target debug view."""
        probers = [prober for _, prober in self._probers.values()]
        failing = sorted((prober for prober in probers if prober.last_result not in (None, "success")),
                         key=lambda prober: prober.name)
        return {
            "targets": {state: int(self._states.values.get((state,), 0)) for state in SD_STATES},
            "failing_targets": [{"target": prober.name, "url": str(prober.url.with_user(None)),
                                 "result": prober.last_result, "error": prober.last_error}
                                for prober in failing[:FAILING_SHOWN]],
            "failing_targets_total": len(failing),
            "refusals": self._refusals[:FAILING_SHOWN],
            "series": sum(len(family.values) for prober in probers for family in prober.group.families.values()),
        }

    async def run(self) -> None:
        watchers = [asyncio.create_task(self._watch_files(sd)) for sd in self.discovery.files]
        watchers += [asyncio.create_task(self._poll_http(sd)) for sd in self.discovery.http]
        for watcher in watchers:
            watcher.add_done_callback(self._watcher_done)
        for _, prober in self._probers.values():  # after a restart: the targets are still attached
            self.context.probes.add(prober, self._crashed)
        self._changed.set()
        try:
            while True:
                await self._changed.wait()
                self._changed.clear()
                if self._crash is not None:
                    crash, self._crash = self._crash, None
                    raise crash
                await self._update()
        finally:
            for _, prober in self._probers.values():
                self.context.probes.remove(prober)
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    def _watcher_done(self, task: asyncio.Task[None]) -> None:
        crash = None if task.cancelled() else task.exception()
        if crash is not None:
            self._crashed(crash)

    def _crashed(self, exc: BaseException) -> None:
        if self._crash is None:
            self._crash = exc  # a bug: the runtime logs it, counts it and restarts the source
            self._changed.set()

    async def _update(self) -> None:
        groups = [group for groups in self._origins.values() for group in groups]
        result = await asyncio.to_thread(resolve, self.config, groups, self.context.shard)
        wanted = result.targets
        stale = [name for name, (target, _) in self._probers.items() if wanted.get(name) != target]
        if stale:
            self.store.swap(remove=[self._probers[name][1].group.owner for name in stale])
            for name in stale:
                self.context.probes.remove(self._probers.pop(name)[1])
        new = [target for name, target in wanted.items() if name not in self._probers]
        with heap.building_long_lived():
            for start in range(0, len(new), ATTACH_BATCH):
                self._attach(new[start:start + ATTACH_BATCH], result)
                await asyncio.sleep(0)
        for state, count in result.counts.items():
            self._states.set((state,), count)
        if result.refusals != self._refusals:
            self._refusals = result.refusals
            if result.refusals:
                log.warning("discovered targets refused", extra={
                    "source": self.name, "refused": result.counts["refused"], "first": "; ".join(result.refusals[:3])})
        log.info("targets updated", extra={"source": self.name, "probed": len(self._probers), "added": len(new),
                                           "removed": len(stale)})

    def _attach(self, targets: list[Target], result: Resolution) -> None:
        built = [(target, self._build(target)) for target in targets]
        try:
            self.store.swap(add=[prober.group for _, prober in built])
            accepted = built
        except SchemaError:  # one of them clashes with another source's series: find it, keep the rest
            accepted = []
            for target, prober in built:
                try:
                    self.store.swap(add=[prober.group])
                    accepted.append((target, prober))
                except SchemaError as exc:
                    result.counts["probed"] -= 1
                    result.refuse(f"{target.name!r}: {exc}")
        for target, prober in accepted:
            self._probers[target.name] = (target, prober)
            self.context.probes.add(prober, self._crashed)

    def _build(self, target: Target) -> Prober:
        labels = {SOURCE_LABEL: self.name, IDENTITY_LABEL: target.name, **dict(target.labels)}
        group = Group(f"http target {target.name!r} of {self.name!r}", labels, (SOURCE_LABEL, IDENTITY_LABEL))
        return Prober(self.module, target.url, group, target.name, f"{self.name}/{target.name}")

    def _replace(self, origin: Origin, groups: list[TargetGroup] | None) -> None:
        """New groups for one origin (None: it is gone); wakes the resolver if anything changed."""
        if groups is None:
            changed = self._origins.pop(origin, None) is not None
        else:
            changed = self._origins.get(origin) != groups
            self._origins[origin] = groups
        if changed:
            self._changed.set()

    def _refreshed(self, origin: Origin, error: str | None) -> None:
        """Count one read of an origin; log when it starts or stops failing, not at every refresh."""
        mechanism = origin[0]
        self._refreshes.inc((mechanism,))
        if error is None:
            if origin in self._failing:
                self._failing.discard(origin)
                log.info("target discovery recovered", extra={"source": self.name, mechanism: origin[1]})
            return
        self._failures.inc((mechanism,))
        if origin not in self._failing:
            self._failing.add(origin)
            log.warning("target discovery failed; keeping the last good targets",
                        extra={"source": self.name, mechanism: origin[1], "error": error})

    async def _watch_files(self, sd: FileSdConfig) -> None:
        loop = asyncio.get_running_loop()
        stamps: dict[str, Any] = {}
        last_full = -math.inf
        while True:
            found = await asyncio.to_thread(target_files, sd.files)
            full = loop.time() - last_full >= sd.refresh_interval
            if full:
                last_full = loop.time()
            for path in stamps.keys() - found.keys():
                del stamps[path]
                self._replace(("file", path), None)
            for path, stamp in found.items():
                if full or stamps.get(path) != stamp:
                    stamps[path] = stamp  # a bad file is read again when it changes, not every second
                    await self._read_file(path)
            await asyncio.sleep(WATCH_INTERVAL)

    async def _read_file(self, path: str) -> None:
        origin = ("file", path)
        try:
            groups = await asyncio.to_thread(read_target_file, path)
        except ConfigError as exc:
            self._refreshed(origin, "; ".join(str(p) for p in exc.problems[:3]))
            return
        self._refreshed(origin, None)
        self._replace(origin, groups)

    async def _poll_http(self, sd: HttpSdConfig) -> None:
        ssl_context = self.context.tls.get(sd.tls)
        while True:
            origin = ("http", sd.url)
            try:
                groups = await self._fetch(sd, ssl_context)
            except (ConfigError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                problems = exc.problems[:3] if isinstance(exc, ConfigError) else [f"{type(exc).__name__}: {exc}"]
                self._refreshed(origin, "; ".join(map(str, problems))[:500])
            else:
                self._refreshed(origin, None)
                self._replace(origin, groups)
            await asyncio.sleep(sd.refresh_interval)

    async def _fetch(self, sd: HttpSdConfig, ssl_context: Any) -> list[TargetGroup]:
        """Prometheus's HTTP SD: a GET answered 200 with a JSON list of target groups."""
        headers = {"Accept": "application/json", **credentials(sd.basic_auth, sd.bearer_token_file)}
        async with asyncio.timeout(sd.refresh_interval):
            async with self.context.session.get(sd.url, headers=headers, max_redirects=MAX_REDIRECTS,
                                                **tls_options(sd.tls, ssl_context)) as response:
                if response.status != 200:
                    raise ValueError(f"status {response.status}, not 200")
                if response.content_type != "application/json":
                    raise ValueError(f"content type {response.content_type!r}, not 'application/json'")
                body = await read_body(response, MAX_SD_RESPONSE)
        if body is None:
            raise ValueError(f"response longer than {MAX_SD_RESPONSE} bytes")
        return await asyncio.to_thread(_parse_body, body, sd.url)


def _parse_body(body: bytes, url: str) -> list[TargetGroup]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the response is not UTF-8: {exc}") from None
    return parse_target_groups(text, url, {"__meta_url": url})
