"""Rounds of samples from store snapshots: what a scrape of /metrics would read, with a timestamp, plus a stale
marker for every series that was in the previous round and is gone (a vanished target, an expired log label
set, a removed source).

A round reads the store the way ``/metrics`` does (``Snapshot``: each family copied whole as it is reached, on
the event loop in slices of about 5 ms), so the hot paths (log lines, probes) never wait for a push. Every
sample of a round carries the round's timestamp, taken when it starts.

A series' labels are the ones /metrics shows (its family's, the global labels it does not have, its source's
constant labels), then the ``external_labels`` and the labels a scrape would add (``job``, ``instance``)
wherever the series has no label of that name, then ``write_relabel_configs``. Without relabelling, the labels
every series of a family shares are encoded once per family and source (``Template``); only the family's own
label values are encoded per series.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from agent.discovery.relabel import RelabelRule, apply
from agent.push import wire
from agent.push.tables import TableSamples
from agent.push.template import Encode, Template, le_values
from agent.series.exposition import process_samples
from agent.series.family import AnyFamily, Family, FamilySpec, HistogramFamily, LabelValues
from agent.series.store import SERIES_DROPPED, Group, Snapshot

SLICE_SECONDS = 0.005


@dataclass
class Batch:
    """One request's worth of series, serialized but not compressed."""

    body: bytes
    samples: int
    timestamp_ms: int


@dataclass
class RoundStats:
    samples: int = 0
    stale: int = 0
    dropped_by_relabel: int = 0


_NO_LABELS: AbstractSet[LabelValues] = frozenset({()})  # the keys of a family without labels: one shared object


class _Seen:
    """One family as the previous rounds sent it: its labels around the series, and the label values it had in
    the last round, to send stale markers for those that go."""

    __slots__ = ("group", "global_key", "spec", "templates", "keys", "round")

    def __init__(self, group: Group, global_key: tuple, spec: FamilySpec, templates: tuple[Template, ...]):
        self.group = group
        self.global_key = global_key
        self.spec = spec
        self.templates = templates  # one per sample name (a histogram's: buckets, count, sum)
        self.keys: AbstractSet[LabelValues] = frozenset()
        self.round = 0  # the last round that saw the family

    def encoded(self, labels: LabelValues, encode: Encode) -> Iterator[bytes]:
        """The encoded label sets of every sample of one series (a histogram's buckets, count and sum)."""
        if self.spec.kind == "histogram":
            bucket = self.templates[0]
            for le in le_values(self.spec.bounds):
                encoded = encode(bucket, (*labels, le))
                if encoded is not None:
                    yield encoded
            templates: tuple[Template, ...] = self.templates[1:]
        else:
            templates = self.templates
        for template in templates:
            encoded = encode(template, labels)
            if encoded is not None:
                yield encoded


class Sampler:
    """Turns snapshots into rounds of batches for one endpoint (its external labels and relabelling)."""

    def __init__(self, extra_labels: dict[str, str], rules: Iterable[RelabelRule] = (),
                 max_samples_per_send: int = 2000, process: bool = True):
        self.extra_labels = dict(extra_labels)  # external_labels, then job and instance: series labels win
        self.rules = tuple(rules)
        self.max_samples_per_send = max_samples_per_send
        self.process = process
        self._seen: dict[AnyFamily, _Seen] = {}
        self._round = 0
        self._global_key: tuple = ()
        self._consts: dict[tuple[Group, tuple[str, ...]], dict[str, str]] = {}
        self._consts_global: tuple | None = None
        self._relabelled: dict[tuple[Template, LabelValues], bytes | None] = {}
        self._own = Group("\0process")  # the families /metrics writes besides the store's groups
        self._tables = TableSamples(self.extra_labels)

    async def round(self, snap: Snapshot, timestamp_ms: int, stats: RoundStats | None = None,
                    ) -> AsyncIterator[Batch]:
        """The batches of one round: every series of ``snap``, then the stale markers."""
        stats = stats if stats is not None else RoundStats()
        self._round += 1
        this_round = self._round
        samples = wire.Samples(timestamp_ms)
        out = _Batches(self.max_samples_per_send, timestamp_ms)
        parts = out.parts
        global_key = tuple(sorted(snap.const_labels.items()))
        if global_key == self._global_key:
            global_key = self._global_key  # the same object: entries compare it by identity
        self._global_key = global_key
        relabelled: dict[tuple[Template, LabelValues], bytes | None] = {}
        encode = self._encoder(relabelled, stats)
        prefix, tail, double = samples.prefix, samples.tail, wire.double

        def emit(label_bytes: bytes, value: float | None) -> None:
            if value is None:
                parts.append(samples.stale(label_bytes))
                stats.stale += 1
            else:
                parts.append(prefix(label_bytes) + double(value) + tail)

        deadline = time.perf_counter() + SLICE_SECONDS
        for _ in itertools.chain(self._groups(snap, global_key, this_round, encode, samples, stats, parts),
                                 self._tables.write(snap.tables, snap.const_labels, global_key, this_round, encode,
                                                    emit)):
            if len(parts) >= out.limit:
                for batch in out.full():
                    yield batch
            if time.perf_counter() >= deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + SLICE_SECONDS
        self._relabelled = relabelled
        for batch in out.rest():
            yield batch
        stats.samples += out.total

    def _groups(self, snap: Snapshot, global_key: tuple, this_round: int, encode: Encode, samples: wire.Samples,
                stats: RoundStats, parts: list[bytes]) -> Iterator[None]:
        """The groups' part of a round, yielding after each family: every series, and a stale marker for each
        one gone since the last round."""
        seen = self._seen
        replaced: list[_Seen] = []  # entries whose labels changed (a reload changed the global labels)
        relabelling = bool(self.rules)
        prefix, tail, double = samples.prefix, samples.tail, wire.double
        for group, family in self._families(snap):
            # entries are kept per family object (alive while its group is attached, so never reused), and
            # reused round after round: no allocation per family and round but the copy of its series
            entry = seen.get(family)
            if entry is None or entry.global_key is not global_key:
                if entry is not None:
                    replaced.append(entry)
                entry = seen[family] = self._entry(group, family.spec, snap.const_labels, global_key)
            previous = entry.keys
            entry.round = this_round
            if isinstance(family, HistogramFamily):
                states = family.snapshot()
                entry.keys = _NO_LABELS if len(states) == 1 and () in states else set(states)
                self._histogram(states, entry, encode, samples, parts)
            else:
                values = family.snapshot()
                # keeps the copy (keys and floats) until the next round compares; most families hold one series
                # without labels, and share one object for it
                entry.keys = _NO_LABELS if len(values) == 1 and () in values else values.keys()
                template = entry.templates[0]
                if template.constant is not None and not relabelling:  # the common case, made short
                    head = prefix(template.constant)
                    parts.extend([head + double(value) + tail for value in values.values()])
                else:
                    for labels, value in values.items():
                        label_bytes = encode(template, labels)
                        if label_bytes is not None:
                            parts.append(prefix(label_bytes) + double(value) + tail)
            if not previous <= entry.keys:  # label sets that left: an expired log label set, a lost target
                self._stale(entry, previous - entry.keys, set(), encode, samples, stats, parts)
            yield
        gone = [family for family, entry in seen.items() if entry.round != this_round]
        if gone or replaced:  # removed sources and targets, reloads: their series end, unless they live on
            current = {(entry.group.owner, entry.spec.name): entry for entry in seen.values()
                       if entry.round == this_round}
            for entry in [*replaced, *(seen.pop(family) for family in gone)]:
                other = current.get((entry.group.owner, entry.spec.name))
                still = set() if other is None else {
                    encoded for labels in other.keys for encoded in other.encoded(labels, encode)}
                self._stale(entry, entry.keys, still, encode, samples, stats, parts)
            live = {entry.group for entry in seen.values()}
            self._consts = {key: const for key, const in self._consts.items() if key[0] in live}
            yield

    def _families(self, snap: Snapshot) -> Iterable[tuple[Group, AnyFamily]]:
        """Every family /metrics writes: the groups', then the series-limit drops and the process families."""
        dropped: dict[str, float] = {}
        for group in snap.groups:
            for family in list(group.families.values()):
                if family.dropped:
                    dropped[family.spec.name] = dropped.get(family.spec.name, 0.0) + family.dropped
                yield group, family
        for table in snap.tables:
            for cells in table.ordered:
                if cells.dropped:
                    dropped[cells.spec.name] = dropped.get(cells.spec.name, 0.0) + cells.dropped
        own = self._own
        if dropped:
            family = own.counter(SERIES_DROPPED)
            family.replace({(name,): count for name, count in dropped.items()})
            yield own, family
        if self.process:
            for spec, value in process_samples():
                scalar = own.register(spec)
                assert isinstance(scalar, Family)
                scalar.set((), value)
                yield own, scalar

    def _entry(self, group: Group, spec: FamilySpec, global_labels: dict[str, str], global_key: tuple) -> _Seen:
        const = self._const_labels(group, spec.labelnames, global_labels, global_key)
        templates = []
        for sample_name in spec.sample_names:
            bucket = spec.kind == "histogram" and sample_name.endswith("_bucket")
            templates.append(Template(spec.labelnames + ("le",) if bucket else spec.labelnames, const, sample_name))
        return _Seen(group, global_key, spec, tuple(templates))

    def _const_labels(self, group: Group, labelnames: tuple[str, ...], global_labels: dict[str, str],
                      global_key: tuple) -> dict[str, str]:
        """The labels every series of a family of ``group`` has besides its own, one dict shared by the
        group's families with the same label names (global labels yield to family labels, the group's own win,
        external labels and job/instance fill in)."""
        key = (group, labelnames)
        const = self._consts.get(key)
        if const is None or self._consts_global is not global_key:
            if self._consts_global is not global_key:
                self._consts.clear()
                self._consts_global = global_key
            const = {name: value for name, value in global_labels.items() if name not in labelnames}
            const.update(group.const_labels)
            for name, value in self.extra_labels.items():
                if name not in const and name not in labelnames:
                    const[name] = value
            self._consts[key] = const
        return const

    def _encoder(self, cache: dict[tuple[Template, LabelValues], bytes | None], stats: RoundStats) -> Encode:
        """How a series' labels are encoded: by its template, or through write_relabel_configs (cached per
        series across rounds: a label set relabels the same way every time)."""
        rules, previous = self.rules, self._relabelled
        if not rules:
            return Template.encode

        def relabel(template: Template, values: LabelValues) -> bytes | None:
            key = (template, values)  # the template in the key keeps it alive as long as its entries
            if key in cache:
                encoded = cache[key]
            elif key in previous:
                encoded = cache[key] = previous[key]
            else:
                result = apply(rules, template.as_dict(values))
                encoded = cache[key] = wire.labels(result) if result else None
            if encoded is None:
                stats.dropped_by_relabel += 1
            return encoded

        return relabel

    @staticmethod
    def _histogram(values: dict[LabelValues, list[float]], entry: _Seen, encode: Encode, samples: wire.Samples,
                   parts: list[bytes]) -> None:
        bucket_template, count_template, sum_template = entry.templates
        les = le_values(entry.spec.bounds)
        prefix, tail, double = samples.prefix, samples.tail, wire.double
        for labels, state in values.items():
            cumulative = 0.0
            for le, count in zip(les, state[:-1], strict=True):
                cumulative += count
                encoded = encode(bucket_template, (*labels, le))
                if encoded is not None:
                    parts.append(prefix(encoded) + double(cumulative) + tail)
            for template, value in ((count_template, cumulative), (sum_template, state[-1])):
                encoded = encode(template, labels)
                if encoded is not None:
                    parts.append(prefix(encoded) + double(value) + tail)

    @staticmethod
    def _stale(entry: _Seen, gone: Iterable[LabelValues], still: set[bytes], encode: Encode, samples: wire.Samples,
               stats: RoundStats, parts: list[bytes]) -> None:
        """A stale marker for every sample of the series ``gone`` of ``entry``, but those in ``still``."""
        for labels in gone:
            for encoded in entry.encoded(labels, encode):
                if encoded not in still:
                    parts.append(samples.stale(encoded))
                    stats.stale += 1


class _Batches:
    """Encoded series (``parts``, appended to directly), cut into batches of at most ``limit`` samples."""

    __slots__ = ("limit", "timestamp_ms", "parts", "total")

    def __init__(self, limit: int, timestamp_ms: int):
        self.limit = limit
        self.timestamp_ms = timestamp_ms
        self.parts: list[bytes] = []
        self.total = 0

    def _batch(self, parts: list[bytes]) -> Batch:
        self.total += len(parts)
        return Batch(b"".join(parts), len(parts), self.timestamp_ms)

    def full(self) -> list[Batch]:
        """The full batches collected so far; the rest stays (the same list object, for appenders)."""
        parts, limit = self.parts, self.limit
        count = len(parts) // limit * limit
        batches = [self._batch(parts[start:start + limit]) for start in range(0, count, limit)]
        del parts[:count]
        return batches

    def rest(self) -> list[Batch]:
        batches = self.full()
        if self.parts:
            batches.append(self._batch(self.parts[:]))
            self.parts.clear()
        return batches
