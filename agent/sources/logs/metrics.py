"""What a batch of records adds to one log metric, one class per metric shape (as mtail keeps one datum kind per
metric type): ``CountMetric`` (a counter of records), ``SumMetric`` (a counter of a value), ``GaugeMetric`` (the
last value) and ``HistogramMetric`` (observations into buckets).

Records arrive as columns: one list per field the metrics read, one entry per record. Each shape works on whole
columns with building blocks that run in C (``Counter``, ``map``, ``zip``, ``compress``, ``sort``), so Python
code runs once per distinct value, not once per record:

- the filters of ``match`` are judged once per distinct tuple of their fields;
- label values become text and are rewritten (``rewrite``) once per distinct tuple, cached across batches;
- numbers come from ``float()`` mapped over the column; only a batch holding a value that is not a usable
  number takes the slower path that finds out, per distinct value, why (``kpi_agent_log_lines_skipped_total``);
- sums and histograms split their values by label set with ``compress()`` (a few label sets) or one dict pass
  (many), then sort each group once: a histogram's buckets cost one bisection per bound, not one per value;
- a gauge's last value per label set is ``dict(zip(labels, values))``.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from itertools import compress, repeat
from typing import Any

from agent.series.family import Family, HistogramFamily
from agent.series.store import Group
from agent.sources.logs.config import LogMetric, Rewrite
from agent.sources.logs.fields import label_text, parse_value

MANY_LABEL_SETS = 8  # above this many in a batch, values are grouped by one dict pass, not compress() per set
CACHE_LIMIT = 100_000  # cached label translations and filter verdicts per metric; cleared when reached
KNOWN_LIMIT = 4096  # distinct value texts whose numbers a metric remembers (about 130 bytes each)
WHOLE_LIMIT = 2**53  # whole numbers read by int() add up to at most this: floats hold every sum on the way

# the translation tables of _partition: _ONE_OF[position] maps the byte ``position`` to 1, every other to 0
_ONE_OF = [bytes(int(code == position) for code in range(256)) for position in range(MANY_LABEL_SETS)]

# A batch's record positions by label set, shared by the metrics of the batch whose labels read the same
# columns of every record: {label columns: {key: mask}}, a mask holding one byte per record, 1 where the record
# has the key (itertools.compress() reads it)
Partitions = dict[tuple[int, ...], dict[Any, bytes]]


class LogMetricShape:
    """What every shape shares: the columns it reads, labels from field values (rewritten, cached), the
    ``match`` filters, and expiry of label sets."""

    family: Family | HistogramFamily

    def __init__(self, metric: LogMetric, columns: dict[str, int]):
        self.metric = metric
        self.name = metric.name
        self.label_columns = tuple(columns[name] for name in metric.fields)
        self.filter_columns = tuple(columns[name] for name in metric.match)
        self.filters = tuple(regex.fullmatch for regex in metric.match.values())
        # per label position with rewrite rules: the rules, and the rewritten text of each value seen
        self.rewrites: dict[int, list[Rewrite]] = {metric.labels.index(rule.label): [] for rule in metric.rewrite}
        for rule in metric.rewrite:
            self.rewrites[metric.labels.index(rule.label)].append(rule)
        self.rewritten: dict[int, dict[Any, str]] = {index: {} for index in self.rewrites}
        self.label_cache: dict[Any, tuple[str, ...]] = {}
        self.verdicts: dict[Any, bool] = {}
        self.touched: dict[tuple[str, ...], float] | None = {} if metric.expire_after else None

    def update(self, columns: Sequence[Sequence], count: int, file_labels: tuple[str, ...],
               skipped: Counter[tuple[str, str]], now: float, partitions: Partitions) -> None:
        """Add one batch of ``count`` records."""
        raise NotImplementedError

    def labels_of(self, key: Any) -> tuple[str, ...]:
        """The metric's own label values for a key (a field's value, or a tuple of them)."""
        labels = self.label_cache.get(key)
        if labels is None:
            if len(self.label_cache) >= CACHE_LIMIT:
                self.label_cache.clear()
            raw = (key,) if len(self.label_columns) == 1 else key
            labels = self.label_cache[key] = tuple(map(label_text, raw))
        return labels

    def label_texts(self, columns: Sequence[Sequence]) -> list[Sequence]:
        """The columns of the metric's labels, rewritten where it has rules."""
        return [self._rewrite(index, columns[i]) if index in self.rewrites else columns[i]
                for index, i in enumerate(self.label_columns)]

    def _rewrite(self, index: int, column: Sequence) -> list[str]:
        """A label's column rewritten, each distinct value once: many raw values (paths with ids) become few,
        and the records are counted by the few."""
        done = self.rewritten[index]
        new = dict.fromkeys(column).keys() - done.keys()
        if len(done) + len(new) > CACHE_LIMIT:
            done.clear()
            new = set(column)
        for value in new:
            text = label_text(value)
            for rule in self.rewrites[index]:
                text = rule.regex.sub(rule.template, text)
            done[value] = sys.intern(text)  # many raw values, few texts: one copy of each, not one per value
        return list(map(done.__getitem__, column))

    def kept(self, columns: Sequence[Sequence]) -> list[bool] | None:
        """Which records pass the filters; None when all do."""
        keys = columns[self.filter_columns[0]] if len(self.filter_columns) == 1 else \
            list(zip(*(columns[i] for i in self.filter_columns), strict=True))
        verdicts = self.verdicts
        for key in dict.fromkeys(keys):
            if key not in verdicts:
                values = (key,) if len(self.filter_columns) == 1 else key
                if len(verdicts) >= CACHE_LIMIT:
                    verdicts.clear()
                verdicts[key] = all(value is not None and fullmatch(label_text(value)) is not None
                                    for value, fullmatch in zip(values, self.filters, strict=True))
        kept = list(map(verdicts.__getitem__, keys))
        return None if all(kept) else kept

    def touch(self, updated: Iterable[tuple[str, ...]], now: float) -> None:
        if self.touched is not None:
            for labels in updated:
                self.touched[labels] = now

    def expire(self, now: float) -> int:
        """Remove the label sets not updated for expire_after; returns how many."""
        if self.touched is None or self.metric.expire_after is None:
            return 0
        oldest = now - self.metric.expire_after
        stale = [labels for labels, last in self.touched.items() if last <= oldest]
        for labels in stale:
            self.family.remove(labels)
            del self.touched[labels]
        return len(stale)


class CountMetric(LogMetricShape):
    """A counter of records, by label set."""

    def __init__(self, metric: LogMetric, family: Family, columns: dict[str, int]):
        super().__init__(metric, columns)
        self.family: Family = family

    def update(self, columns: Sequence[Sequence], count: int, file_labels: tuple[str, ...],
               skipped: Counter[tuple[str, str]], now: float, partitions: Partitions) -> None:
        if not count:
            return
        texts = self.label_texts(columns)
        kept = None
        if self.filters:
            kept = self.kept(columns)
            if kept is not None:
                texts = [list(compress(column, kept)) for column in texts]
                count = kept.count(True)
                if not count:
                    return
        shared = None
        if len(texts) == 2 and 0 not in self.rewrites and not (self.filters and kept is not None):
            shared = partitions.setdefault(self.label_columns[:1], {})
        counts = _counts(texts, count, shared)
        totals: dict[tuple[str, ...], int] = {}
        for key, times in counts.items():
            labels = self.labels_of(key) + file_labels
            totals[labels] = totals.get(labels, 0) + times
        for labels, total in totals.items():
            self.family.inc(labels, total)
        self.touch(totals, now)


class _ValueShape(LogMetricShape):
    """A shape that reads a number from each record's value field; a record without a usable one is skipped by
    this metric alone and counted in ``skipped`` by reason."""

    def __init__(self, metric: LogMetric, columns: dict[str, int]):
        super().__init__(metric, columns)
        assert metric.value is not None
        self.value_column = columns[metric.value]
        self.words = metric.values
        self.rejects_negative = metric.type == "counter"
        # The number of each value text that float() read, while there are few (latencies in milliseconds: a dict
        # lookup costs a quarter of float()); None once a metric's values take more than KNOWN_LIMIT texts. A gauge
        # reads each value anew: its last value is shown as read (-0.0 is not 0).
        self.known: dict[Any, float] | None = None if metric.type == "gauge" else {}
        self.whole_numbers = metric.type != "gauge"

    def selected(self, columns: Sequence[Sequence], count: int,
                 skipped: Counter[tuple[str, str]]) -> tuple[Sequence | None, list[float], bool]:
        """The keys (None: the metric has no labels of its own) and numbers of the records counted, and whether
        they are every record of the batch with keys straight from the columns (``Partitions`` then apply)."""
        texts = self.label_texts(columns)
        keys: Sequence | None = (texts[0] if len(texts) == 1 else list(zip(*texts, strict=True))) if texts else None
        raw: Sequence = columns[self.value_column]
        every_record = not self.rewrites
        if self.filters and count:
            kept = self.kept(columns)
            if kept is not None:
                every_record = False
                keys = list(compress(keys, kept)) if keys is not None else None
                raw = list(compress(raw, kept))
        if not raw:
            return keys, [], every_record
        numbers, usable = self._numbers(raw, skipped)
        if usable is not None:
            every_record = False
            keys = list(compress(keys, usable)) if keys is not None else None
        return keys, numbers, every_record

    def _numbers(self, raw: Sequence, skipped: Counter[tuple[str, str]]) -> tuple[list[float], list[bool] | None]:
        """The usable numbers of the value column, and which records had one (None: all did)."""
        text = raw[0].__class__ is str  # else numbers already (JSON): nothing to remember, no int() to try
        known = self.known if text else None
        if known:  # empty for a metric whose values are whole numbers: int() reads them, nothing is remembered
            try:
                return list(map(known.__getitem__, raw)), None
            except KeyError:
                pass
        numbers = self._all_usable(raw, text)
        if numbers is not None:
            if known is not None and numbers[0].__class__ is float:  # int() is fast enough not to remember
                known.update(zip(raw, numbers, strict=True))
                if len(known) > KNOWN_LIMIT:
                    self.known = None
            return numbers, None
        judged = {value: self._judge(value) for value in dict.fromkeys(raw)}
        results = list(map(judged.__getitem__, raw))
        usable = [result.__class__ is float for result in results]
        for reason, count in Counter(result for result in results if result.__class__ is str).items():
            skipped[(self.name, reason)] += count
        return [result for result in results if isinstance(result, float)], usable

    def _all_usable(self, raw: Sequence, text: bool) -> list[float] | None:
        """The number of every value, or None when one is not usable (its reason is then worked out per value).
        Whole numbers written in text are read by int(), twice as fast as float(), when the metric adds them up
        (a sum or a histogram) and they are not negative: while their total stays within WHOLE_LIMIT, every sum
        on the way is a float exactly, so they add up and compare with bounds as float() would read them."""
        words = self.words
        if self.whole_numbers and text:
            try:
                whole = list(map(int, map(words.get, raw, raw) if words else raw, repeat(10)))  # text only
                negative = "-" in "".join(raw)  # int() reads no other minus sign
            except (TypeError, ValueError):
                pass
            else:
                if not negative and sum(whole) <= WHOLE_LIMIT:
                    return whole  # type: ignore[return-value]  # ints add and compare as the floats they are
        try:
            numbers = list(map(float, map(words.get, raw, raw) if words else raw))
            total = sum(numbers)
        except (TypeError, ValueError, OverflowError):
            return None
        if math.isfinite(total) and not (self.rejects_negative and min(numbers) < 0):
            return numbers
        return None

    def _judge(self, raw: object) -> float | str:
        word = self.words.get(raw) if self.words and raw.__class__ is str else None
        value = parse_value(word if word is not None else raw)
        if isinstance(value, float) and self.rejects_negative and value < 0:
            return "negative"
        return value

    def grouped(self, keys: Sequence | None, numbers: list[float], every_record: bool,
                partitions: Partitions) -> dict[Any, Iterable[float]]:
        return _groups(keys, numbers, partitions.setdefault(self.label_columns, {}) if every_record else None)


class SumMetric(_ValueShape):
    """A counter that adds each record's value, by label set."""

    def __init__(self, metric: LogMetric, family: Family, columns: dict[str, int]):
        super().__init__(metric, columns)
        self.family: Family = family

    def update(self, columns: Sequence[Sequence], count: int, file_labels: tuple[str, ...],
               skipped: Counter[tuple[str, str]], now: float, partitions: Partitions) -> None:
        keys, numbers, every_record = self.selected(columns, count, skipped)
        if not numbers:
            return
        sums: dict[tuple[str, ...], float] = {}
        for key, values in self.grouped(keys, numbers, every_record, partitions).items():
            labels = self.labels_of(key) + file_labels
            sums[labels] = sums.get(labels, 0.0) + sum(values)
        for labels, total in sums.items():
            self.family.inc(labels, total)
        self.touch(sums, now)


class GaugeMetric(_ValueShape):
    """The last value seen, by label set."""

    def __init__(self, metric: LogMetric, family: Family, columns: dict[str, int]):
        super().__init__(metric, columns)
        self.family: Family = family

    def update(self, columns: Sequence[Sequence], count: int, file_labels: tuple[str, ...],
               skipped: Counter[tuple[str, str]], now: float, partitions: Partitions) -> None:
        keys, numbers, _ = self.selected(columns, count, skipped)
        if not numbers:
            return
        if keys is None:
            last = {file_labels: numbers[-1]}
        else:
            translated = {key: self.labels_of(key) + file_labels for key in dict.fromkeys(keys)}
            last = dict(zip(map(translated.__getitem__, keys), numbers, strict=True))  # the last one wins
        for labels, value in last.items():
            self.family.set(labels, value)
        self.touch(last, now)


class HistogramMetric(_ValueShape):
    """Each record's value observed into the family's buckets, by label set."""

    def __init__(self, metric: LogMetric, family: HistogramFamily, columns: dict[str, int]):
        super().__init__(metric, columns)
        self.family: HistogramFamily = family
        self.bounds = family.spec.bounds

    def update(self, columns: Sequence[Sequence], count: int, file_labels: tuple[str, ...],
               skipped: Counter[tuple[str, str]], now: float, partitions: Partitions) -> None:
        keys, numbers, every_record = self.selected(columns, count, skipped)
        if not numbers:
            return
        bounds = self.bounds
        states: dict[tuple[str, ...], list[float]] = {}  # per-bucket counts (the last +Inf), then the sum
        for key, values in self.grouped(keys, numbers, every_record, partitions).items():
            labels = self.labels_of(key) + file_labels
            state = states.get(labels)
            if state is None:
                state = states[labels] = [0.0] * (len(bounds) + 2)
            values = list(values)
            state[-1] += sum(values)  # in record order, as one record at a time adds them
            values.sort()
            below = 0
            for index, bound in enumerate(bounds):
                upto = bisect_right(values, bound)
                state[index] += upto - below
                below = upto
            state[-2] += len(values) - below
        for labels, state in states.items():
            self.family.merge(labels, state[:-1], state[-1])
        self.touch(states, now)


def shape_of(metric: LogMetric, group: Group, file_labels: tuple[str, ...], max_series: int,
             columns: dict[str, int]) -> LogMetricShape:
    """The metric's family registered in ``group`` and the shape that updates it."""
    spec = metric.spec(file_labels)
    if metric.type == "histogram":
        return HistogramMetric(metric, group.histogram(spec, max_series), columns)
    if metric.type == "gauge":
        return GaugeMetric(metric, group.gauge(spec, max_series), columns)
    family = group.counter(spec, max_series)
    return SumMetric(metric, family, columns) if metric.value else CountMetric(metric, family, columns)


def _partition(keys: Sequence, shared: dict[Any, bytes] | None,
               distinct: dict[Any, None] | None = None) -> dict[Any, bytes] | None:
    """Which records hold each key, when the keys take at most MANY_LABEL_SETS values (None when more):
    {key: mask} (``Partitions``). ``shared``, when given, holds (or receives) it for the other metrics of the
    batch whose keys are the same column; ``distinct``: the keys, when the caller has them. Each record's key
    is looked up once, as the byte of its position among the distinct keys, and each key's mask is then
    translated from those bytes in C: one comparison per record, not one per record and key."""
    if shared:
        return shared
    if distinct is None:
        distinct = dict.fromkeys(keys)
    if len(distinct) > MANY_LABEL_SETS or not all(key == key for key in distinct):  # a NaN equals nothing
        return None
    index = {key: position for position, key in enumerate(distinct)}
    codes = bytes(map(index.__getitem__, keys))
    found = {key: codes.translate(_ONE_OF[position]) for key, position in index.items()}
    if shared is not None:
        shared.update(found)
    return found


def _counts(texts: Sequence[Sequence], count: int, shared: dict[Any, bytes] | None) -> dict[Any, int]:
    """How many records hold each key (a label column, or a tuple of several). With two columns and few values
    in the first, records are split by it and the second counted per part: counting strings costs half of
    counting pairs of them."""
    if not texts:
        return {(): count}
    if len(texts) == 1:
        return Counter(texts[0])
    parts = _partition(texts[0], shared) if len(texts) == 2 else None
    if parts is None:
        return Counter(zip(*texts, strict=True))
    counts: dict[Any, int] = {}
    for first, records in parts.items():
        for second, times in Counter(compress(texts[1], records)).items():
            counts[(first, second)] = times
    return counts


def _groups(keys: Sequence | None, numbers: list[float],
            partition: dict[Any, bytes] | None) -> dict[Any, Iterable[float]]:
    """The numbers of each key, in record order (each read once). ``partition``, when given, holds (or
    receives) which records have each key, for other metrics of the batch with the same keys."""
    if keys is None:
        return {(): numbers}
    distinct = None
    if not partition:
        distinct = dict.fromkeys(keys)
        if len(distinct) == 1:
            return {keys[0]: numbers}
    found = _partition(keys, partition, distinct)
    if found is not None:
        return {key: compress(numbers, records) for key, records in found.items()}
    by_key: defaultdict[Any, list[float]] = defaultdict(list)
    for key, number in zip(keys, numbers, strict=True):
        by_key[key].append(number)
    return dict(by_key)
