"""The series store, read through what /metrics renders: labels, merging, limits, and the checks at its edges
that make a duplicate or mislabelled series impossible."""

import subprocess
import sys
import threading

import pytest

from agent.series.family import SchemaError, counter, gauge, histogram
from agent.series.store import Group, Store
from tests.helpers import render_store


def test_counter_gauge_and_global_labels():
    store = Store({"site": "eu-1"})
    group = store.group("src")
    requests = group.counter(counter("http_requests_total", "Requests", ["method"]))
    requests.inc(("GET",))
    requests.inc(("GET",), 2)
    group.gauge(gauge("queue_depth", "Depth")).set((), 7)
    page = render_store(store)
    assert page.value("http_requests_total", method="GET", site="eu-1") == 3
    assert page.value("queue_depth", site="eu-1") == 7


def test_series_label_wins_over_global_label_and_group_labels_over_both():
    store = Store({"site": "eu-1", "team": "all"})
    store.group("src").gauge(gauge("up_ish", "x", ["site"])).set(("us-2",), 1)
    store.group("http/a", {"target": "a", "team": "shop"}, "target").gauge(gauge("g", "x")).set((), 2)
    page = render_store(store)
    assert page.find("up_ish")[0].labels == {"site": "us-2", "team": "all"}
    assert page.find("g")[0].labels == {"site": "eu-1", "team": "shop", "target": "a"}


def test_histogram_buckets_are_cumulative_and_le_inclusive():
    store = Store()
    hist = store.group("src").histogram(histogram("latency_seconds", "Latency", ["m"], [0.1, 1]))
    for value in (0.05, 0.1, 0.5, 3):
        hist.observe(("GET",), value)
    hist.merge(("GET",), [1, 0, 2], 10.0)
    page = render_store(store)
    assert page.by("latency_seconds_bucket", "le") == {"0.1": 3, "1.0": 4, "+Inf": 7}
    assert page.value("latency_seconds_count", m="GET") == 7
    assert abs(page.value("latency_seconds_sum", m="GET") - 13.65) < 1e-9


def test_cardinality_limit_refuses_and_counts_new_label_sets():
    store = Store()
    family = store.group("src").counter(counter("hits_total", "Hits", ["user"]), max_series=2)
    for user in ("a", "b", "c", "d", "a"):
        family.inc((user,))
    page = render_store(store)
    assert page.by("hits_total", "user") == {"a": 2, "b": 1}
    assert page.value("kpi_agent_series_dropped_total", metric="hits") == 2


def test_same_family_in_two_groups_is_merged_and_dropping_a_group_removes_its_series():
    store = Store()
    for target in ("a", "b"):
        store.group(f"http/{target}", {"target": target}, "target").gauge(gauge("probe_success", "ok")).set((), 1)
    page = render_store(store)
    assert page.text.count("# TYPE probe_success gauge") == 1
    store.swap(remove=["http/a"])
    assert [s.labels for s in render_store(store).find("probe_success")] == [{"target": "b"}]


def test_groups_with_different_static_labels_merge_with_the_right_labels(promtool):
    store = Store({"site": "eu-1"})
    shop = store.group("http/a", {"target": "a", "team": "shop"}, "target")
    plain = store.group("http/b", {"target": "b"}, "target")
    shop.gauge(gauge("probe_success", "ok")).set((), 1)
    plain.gauge(gauge("probe_success", "ok")).set((), 0)
    shop.histogram(histogram("probe_latency_seconds", "latency", [], [0.1])).observe((), 0.05)
    plain.histogram(histogram("probe_latency_seconds", "latency", [], [0.1])).observe((), 1)
    page = render_store(store)
    assert page.value("probe_success", target="a", team="shop", site="eu-1") == 1
    assert page.find("probe_success", target="b")[0].labels == {"site": "eu-1", "target": "b"}
    assert page.value("probe_latency_seconds_bucket", le="0.1", target="b") == 0
    assert page.value("probe_latency_seconds_count", target="a", team="shop") == 1
    checked = subprocess.run([promtool, "check", "metrics"], input=page.text, capture_output=True, text=True)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr


def test_a_label_set_of_the_wrong_length_is_a_bug_that_raises_where_it_enters():
    store = Store()
    family = store.group("src").gauge(gauge("g", "x", ["target"]))
    with pytest.raises(SchemaError):
        family.set(("web", "http"), 1)  # the shape of the shadowed-attribute bug: two values for one label
    with pytest.raises(SchemaError):
        family.set((), 1)
    assert render_store(store).find("g") == []


def test_label_values_that_are_not_text_are_repaired_not_fatal():
    store = Store({"site": "a\ud800"})
    family = store.group("src").counter(counter("c_total", "c", ["path"]))
    family.inc(("/x\udfff",))
    family.inc(("/x\udfff",))  # the same hostile value again: the same repaired series
    page = render_store(store)  # decodes the bytes strictly
    assert page.value("c_total", path="/x\ufffd", site="a\ufffd") == 2


def test_families_of_one_name_must_agree_and_groups_must_tell_their_series_apart():
    store = Store()
    store.group("logs/a", {"source": "a"}, "source").counter(counter("req_total", "r", ["method"]))
    b = store.group("logs/b", {"source": "b"}, "source")
    with pytest.raises(SchemaError, match="one name has one type"):
        b.gauge(gauge("req", "r", ["method"]))
    with pytest.raises(SchemaError, match="one name has one type"):
        b.counter(counter("req_total", "r", ["method", "status"]))
    b.counter(counter("req_total", "r", ["method"]))  # same schema, another identity: fine
    twin = store.group("logs/twin", {"source": "a"}, "source")
    with pytest.raises(SchemaError, match="same series"):
        twin.counter(counter("req_total", "r", ["method"]))
    other = store.group("logs/c", {"source": "c"}, "source")
    with pytest.raises(SchemaError, match="req_total would expose req_total, which the counter req_total exposes"):
        other.gauge(gauge("req_total", "r"))


def test_sample_names_never_collide_within_or_across_groups():
    group = Group("logs/a", {"source": "a"}, "source")
    group.histogram(histogram("h", "h"))
    with pytest.raises(SchemaError, match="h_count would expose h_count, which the histogram h exposes too"):
        group.gauge(gauge("h_count", "x"))
    with pytest.raises(SchemaError, match="also set on every series"):
        group.gauge(gauge("g", "x", ["source"]))
    store = Store(reserved=[gauge("process_open_fds", "fds")])
    with pytest.raises(SchemaError, match="exposes itself"):
        store.group("x", {"source": "x"}, "source").gauge(gauge("process_open_fds", "x"))


def test_swap_is_all_or_nothing():
    store = Store()
    old = store.group("logs/a", {"source": "a"}, "source")
    old.counter(counter("req_total", "r")).inc()
    good = Group("logs/a", {"source": "a"}, "source")
    good.counter(counter("req_total", "r")).ensure()
    bad = Group("logs/b", {"source": "b"}, "source")
    bad.gauge(gauge("req", "r"))  # clashes with req_total, a counter
    with pytest.raises(SchemaError):
        store.swap(remove=["logs/a"], add=[good, bad])
    assert store.groups["logs/a"] is old and "logs/b" not in store.groups
    assert render_store(store).value("req_total") == 1
    store.swap(remove=["logs/a"], add=[good])
    assert render_store(store).value("req_total") == 0


def test_a_render_in_another_thread_never_sees_a_family_half_written():
    """The agent writes /metrics on the event loop in slices, but a snapshot promises more (``Snapshot``): even a
    render in another thread, racing a writer, sees each family copied whole, a set of series replaced in one
    step before or after, never in between, and new label sets never break it."""
    store = Store()
    group = store.group("src")
    last = group.gauge(gauge("last_result", "Last result", ["result"]))
    hits = group.counter(counter("hits_total", "Hits", ["user"]))
    latency = group.histogram(histogram("latency_seconds", "Latency", [], [0.1]))
    last.replace({("timeout",): 1.0})  # the state before the writer starts: one series, as after each replace
    stop = threading.Event()

    def write() -> None:
        writes = 0
        while not stop.is_set():
            last.replace({("success" if writes % 2 else "timeout",): 1.0})
            hits.inc((f"user{writes % 500}",))
            latency.observe((), 0.05)
            writes += 1

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads far more often than the default 5 ms
    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(100):
            page = render_store(store)  # strict parse: a torn family would fail here or below
            assert len(page.find("last_result")) == 1
            assert page.value("latency_seconds_count") == page.value("latency_seconds_bucket", le="+Inf")
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(switch)
    assert render_store(store).value("hits_total", user="user1") >= 1


def test_openmetrics_and_promtool_accept_the_exposition(promtool):
    store = Store({"site": "eu-1"})
    group = store.group("src")
    group.counter(counter("http_requests_total", "Requests by method", ["method"])).inc(("GET",))
    group.histogram(histogram("latency_seconds", "Latency", [], [0.1, 1])).observe((), 0.2)
    group.gauge(gauge("kpi_agent_build_info", "Build", ["version"])).set(("1",), 1)
    openmetrics = render_store(store, openmetrics=True)
    assert openmetrics.text.endswith("# EOF\n")
    assert openmetrics.value("http_requests_total", method="GET") == 1
    text = render_store(store).text
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""
