import subprocess

from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from agent.store import SnapshotCollector, Store


def exposition(store: Store) -> str:
    return generate_latest(SnapshotCollector(store.snapshot())).decode()


def samples(store: Store) -> dict[tuple, float]:
    result = {}
    for family in text_string_to_metric_families(exposition(store)):
        for s in family.samples:
            result[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return result


def test_counter_gauge_and_global_labels():
    store = Store({"site": "eu-1"})
    group = store.group("src")
    requests = group.counter("http_requests", "Requests", ["method"])
    requests.inc(("GET",))
    requests.inc(("GET",), 2)
    group.gauge("queue_depth", "Depth").set((), 7)
    got = samples(store)
    assert got[("http_requests_total", (("method", "GET"), ("site", "eu-1")))] == 3
    assert got[("queue_depth", (("site", "eu-1"),))] == 7


def test_series_label_wins_over_global_label():
    store = Store({"site": "eu-1"})
    store.group("src").gauge("up_ish", "x", ["site"]).set(("us-2",), 1)
    assert samples(store) == {("up_ish", (("site", "us-2"),)): 1}


def test_histogram_buckets_are_cumulative_and_le_inclusive():
    store = Store()
    hist = store.group("src").histogram("latency_seconds", "Latency", ["m"], [0.1, 1])
    for value in (0.05, 0.1, 0.5, 3):
        hist.observe(("GET",), value)
    hist.merge_histogram(("GET",), [1, 0, 2], 10.0)
    got = samples(store)
    le = lambda b: ("latency_seconds_bucket", (("le", b), ("m", "GET")))  # noqa: E731
    assert got[le("0.1")] == 3
    assert got[le("1.0")] == 4
    assert got[le("+Inf")] == 7
    assert got[("latency_seconds_count", (("m", "GET"),))] == 7
    assert abs(got[("latency_seconds_sum", (("m", "GET"),))] - 13.65) < 1e-9


def test_cardinality_limit_refuses_and_counts_new_label_sets():
    store = Store()
    family = store.group("src").counter("hits", "Hits", ["user"], max_series=2)
    for user in ("a", "b", "c", "d", "a"):
        family.inc((user,))
    assert len(family.values) == 2
    got = samples(store)
    assert got[("hits_total", (("user", "a"),))] == 2
    assert got[("kpi_agent_series_dropped_total", (("metric", "hits"),))] == 2


def test_same_family_in_two_groups_is_merged_and_dropping_a_group_removes_its_series():
    store = Store()
    for target in ("a", "b"):
        store.group(f"http/{target}").gauge("probe_success", "ok", ["target"]).set((target,), 1)
    text = exposition(store)
    assert text.count("# TYPE probe_success gauge") == 1
    store.drop_group("http/a")
    assert samples(store) == {("probe_success", (("target", "b"),)): 1}


def test_families_with_different_label_names_merge_with_the_right_labels(promtool):
    store = Store({"site": "eu-1"})
    store.group("http/a").gauge("probe_success", "ok", ["target", "team"]).set(("a", "shop"), 1)
    store.group("http/b").gauge("probe_success", "ok", ["target"]).set(("b",), 0)
    hist_a = store.group("http/a").histogram("probe_latency_seconds", "latency", ["target", "team"], [0.1])
    hist_a.observe(("a", "shop"), 0.05)
    store.group("http/b").histogram("probe_latency_seconds", "latency", ["target"], [0.1]).observe(("b",), 1)
    got = samples(store)
    assert got[("probe_success", (("site", "eu-1"), ("target", "a"), ("team", "shop")))] == 1
    assert got[("probe_success", (("site", "eu-1"), ("target", "b")))] == 0
    assert got[("probe_latency_seconds_bucket", (("le", "0.1"), ("site", "eu-1"), ("target", "b")))] == 0
    assert got[("probe_latency_seconds_count", (("site", "eu-1"), ("target", "a"), ("team", "shop")))] == 1
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition(store), capture_output=True, text=True)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr


def test_snapshot_is_isolated_from_later_writes():
    store = Store()
    counter = store.group("src").counter("c", "c")
    counter.inc()
    snap = store.snapshot()
    counter.inc(amount=5)
    text = generate_latest(SnapshotCollector(snap)).decode()
    assert "c_total 1.0" in text


def test_openmetrics_and_promtool_accept_the_exposition(promtool):
    store = Store({"site": "eu-1"})
    group = store.group("src")
    group.counter("http_requests", "Requests by method", ["method"]).inc(("GET",))
    group.histogram("latency_seconds", "Latency", [], [0.1, 1]).observe((), 0.2)
    group.gauge("kpi_agent_build_info", "Build", ["version"]).set(("1",), 1)
    openmetrics = generate_openmetrics(SnapshotCollector(store.snapshot())).decode()
    assert openmetrics.endswith("# EOF\n")
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition(store), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""
