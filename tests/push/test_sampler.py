"""Rounds read the store as /metrics does: the same series, values and labels (plus external ones), sorted,
with stale markers for the series that left."""

from __future__ import annotations

import math

from agent.discovery.relabel import RelabelRule
from agent.push.sampler import Sampler
from agent.series.exposition import render
from agent.series.family import counter, gauge, histogram
from agent.series.store import Store
from tests.helpers import Exposition
from tests.push.prompb import Pushed, decode

NOW = 1_700_000_000_000


async def pushed(sampler: Sampler, store: Store, timestamp_ms: int = NOW) -> list[Pushed]:
    out = []
    async for batch in sampler.round(store.snapshot(), timestamp_ms):
        out += decode(batch.body, compressed=False)
        assert batch.samples == len(decode(batch.body, compressed=False))
    return out


def _store() -> Store:
    store = Store({"site": "eu-1", "code": "global-loses"})
    shop = store.group("http/shop", {"target": "shop", "team": "web"}, identity="target")
    shop.gauge(gauge("probe_success", "ok")).set((), 1)
    requests = shop.counter(counter("requests_total", "requests", ["code", "method"]))
    requests.inc(("200", "GET"), 7)
    requests.inc(("500", ""), 2)  # an empty label value is no label
    latency = shop.histogram(histogram("latency_seconds", "latency", ["method"], (0.1, 1.0)))
    for value in (0.05, 0.5, 0.5, 3):
        latency.observe(("GET",), value)
    return store


async def test_a_round_is_what_metrics_shows_with_external_labels_and_sorted_labels():
    store = _store()
    samples = await pushed(Sampler({"cluster": "c1", "site": "external-loses"}, process=False), store)
    page = Exposition(render(store.snapshot(), process=False))
    # an empty label value is no label, to Prometheus as to the spec
    exposed = {(s.name, frozenset({**{k: v for k, v in s.labels.items() if v}, "cluster": "c1"}.items())): s.value
               for s in page.series}
    sent = {}
    for sample in samples:
        names = [name for name, _ in sample.labels]
        assert names == sorted(names), names
        assert all(value for _, value in sample.labels)
        assert sample.timestamp_ms == NOW
        labels = sample.label_dict()
        sent[(labels.pop("__name__"), frozenset(labels.items()))] = sample.value
    assert sent == exposed
    assert sent[("requests_total", frozenset({"code": "500", "site": "eu-1", "target": "shop", "team": "web",
                                              "cluster": "c1"}.items()))] == 2
    bucket = {"method": "GET", "site": "eu-1", "target": "shop", "team": "web", "cluster": "c1", "code": "global-loses"}
    assert sent[("latency_seconds_bucket", frozenset({**bucket, "le": "1.0"}.items()))] == 3
    assert sent[("latency_seconds_bucket", frozenset({**bucket, "le": "+Inf"}.items()))] == 4
    assert sent[("latency_seconds_sum", frozenset(bucket.items()))] == 4.05


async def test_series_that_leave_get_one_stale_marker_each():
    store = _store()
    sampler = Sampler({}, process=False)
    first = await pushed(sampler, store, NOW)
    assert not any(s.stale for s in first)
    shop = store.groups["http/shop"]
    shop.families["requests"].remove(("500", ""))  # an expired label set
    store.group("logs/nginx", {"source": "nginx"}, identity="source").counter(
        counter("lines_total", "lines")).inc((), 3)
    second = await pushed(sampler, store, NOW + 15_000)
    stale = [s for s in second if s.stale]
    assert [s.label_dict() for s in stale] == [{"__name__": "requests_total", "code": "500", "site": "eu-1",
                                                "target": "shop", "team": "web"}]
    assert stale[0].timestamp_ms == NOW + 15_000
    store.swap(remove=["http/shop"])  # a removed source: every sample name of every series
    third = await pushed(sampler, store, NOW + 30_000)
    gone = sorted(s.name for s in third if s.stale)
    assert gone == sorted(["probe_success", "requests_total", *["latency_seconds_bucket"] * 3,
                           "latency_seconds_count", "latency_seconds_sum"])
    assert [s.name for s in third if not s.stale] == ["lines_total"]
    fourth = await pushed(sampler, store, NOW + 45_000)
    assert not any(s.stale for s in fourth)


async def test_changed_global_labels_make_the_old_series_stale_and_keep_the_same_ones():
    store = _store()
    sampler = Sampler({}, process=False)
    await pushed(sampler, store, NOW)
    store.const_labels = {"site": "eu-2", "code": "global-loses"}
    second = await pushed(sampler, store, NOW + 15_000)
    stale = {s.label_dict()["site"] for s in second if s.stale}
    fresh = {s.label_dict()["site"] for s in second if not s.stale}
    assert stale == {"eu-1"} and fresh == {"eu-2"}
    assert len([s for s in second if s.stale]) == len([s for s in second if not s.stale])


async def test_write_relabel_configs_drop_and_rewrite_and_are_counted():
    import re

    store = _store()
    rules = [RelabelRule(action="drop", source_labels=("__name__",), regex=re.compile("latency_.*")),
             RelabelRule(action="replace", source_labels=("team",), target_label="owner")]
    from agent.push.sampler import RoundStats

    sampler = Sampler({}, rules, process=False)
    stats = RoundStats()
    out = []
    async for batch in sampler.round(store.snapshot(), NOW, stats):
        out += decode(batch.body, compressed=False)
    assert sorted(s.name for s in out) == ["probe_success", "requests_total", "requests_total"]
    assert all(s.label_dict()["owner"] == "web" for s in out)
    assert stats.dropped_by_relabel == 5  # three buckets, count and sum


async def test_batches_hold_at_most_max_samples_per_send_and_the_process_families():
    store = Store()
    family = store.group("g", {"source": "g"}, identity="source").gauge(gauge("g", "g", ["i"]))
    for i in range(25):
        family.set((str(i),), i)
    sampler = Sampler({}, max_samples_per_send=10)
    sizes, names = [], set()
    async for batch in sampler.round(store.snapshot(), NOW):
        sizes.append(batch.samples)
        names |= {s.name for s in decode(batch.body, compressed=False)}
    assert max(sizes) == 10 and sum(sizes) == 25 + 6
    assert "process_resident_memory_bytes" in names and "g" in names


def test_stale_marker_is_the_specs_nan():
    from agent.push import wire

    assert math.isnan(wire.STALE_NAN)
    sample = decode(wire.Samples(NOW).stale(wire.labels({"__name__": "x"})), compressed=False)[0]
    assert sample.stale
