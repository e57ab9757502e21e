"""Tables (agent.series.table): the series of many probed targets, one row per target, read through what
/metrics renders and what remote write pushes. The store's guarantees hold for rows as for groups: no series
exposed twice, a reload's swap all or nothing, labels checked where they enter; and a target costs a few
hundred bytes of series, not kilobytes."""

from __future__ import annotations

import bisect
import subprocess

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.push.sampler import Sampler
from agent.series.exposition import render
from agent.series.family import SchemaError, counter, gauge, histogram
from agent.series.group import Group
from agent.series.store import Store, series_count
from agent.series.table import Declared, RowSchema, Table, TableRow
from tests.helpers import Exposition, examples, render_store
from tests.push.prompb import decode

SUCCESS = gauge("probe_success", "ok")
PROBES = counter("probes_total", "probes", ["result"])
PHASES = gauge("probe_phase_seconds", "phases", ["phase"])
VERSION = gauge("probe_version_info", "version", ["version"])
LATENCY = histogram("probe_latency_seconds", "latency", [], (0.1, 1.0))
RESULTS = (("success",), ("timeout",))
SCHEMA = RowSchema("test targets", (
    Declared(SUCCESS, ((),)),
    Declared(PROBES, RESULTS, RESULTS),  # born at 0
    Declared(PHASES, (("connect",), ("transfer",))),
    Declared(VERSION),  # label values not known in advance: a dict per row
    Declared(LATENCY, ((),), ((),)),
))


def fleet(store: Store, name: str = "fleet") -> Table:
    table = Table(f"http/{name}", SCHEMA, {"source": name}, "source")
    store.swap(add=[table])
    return table


def probed(table: Table, slot: int, ok: bool = True) -> None:
    families = table.families
    families["probe_success"].set(slot, (), 1.0 if ok else 0.0)  # type: ignore[union-attr]
    families["probes"].inc(slot, ("success",) if ok else ("timeout",))  # type: ignore[union-attr]
    families["probe_phase_seconds"].replace(slot, {("connect",): 0.01, ("transfer",): 0.02})  # type: ignore[union-attr]
    if "probe_version_info" in families:  # a layout may go without it
        families["probe_version_info"].replace(slot, {("TLS 1.3",): 1.0})  # type: ignore[union-attr]
    families["probe_latency_seconds"].observe(slot, (), 0.5)  # type: ignore[union-attr]


def test_rows_render_with_the_tables_labels_and_their_own():
    store = Store({"site": "eu-1"})
    table = fleet(store)
    web = table.add({"target": "web-1", "team": "shop"})
    db = table.add({"target": "db-1"})
    probed(table, web)
    page = render_store(store)
    assert page.value("probe_success", source="fleet", target="web-1", team="shop", site="eu-1") == 1
    assert page.by("probes_total", "result", target="web-1") == {"success": 1, "timeout": 0}
    assert page.by("probes_total", "result", target="db-1") == {"success": 0, "timeout": 0}  # born at zero
    assert page.find("probe_success", target="db-1") == []  # written by a probe, not born
    assert page.by("probe_phase_seconds", "phase", target="web-1") == {"connect": 0.01, "transfer": 0.02}
    assert page.value("probe_version_info", target="web-1", version="TLS 1.3") == 1
    assert page.by("probe_latency_seconds_bucket", "le", target="web-1") == {"0.1": 0, "1.0": 1, "+Inf": 1}
    assert page.value("probe_latency_seconds_count", target="db-1") == 0
    lines = [s for s in page.series if s.labels.get("source") == "fleet"]
    assert len(lines) == series_count(table) + 2 * 4  # a histogram series counts once, on the page it is 5 lines
    assert db != web


def test_a_row_that_leaves_takes_its_series_and_its_slot_comes_back_clean():
    store = Store()
    table = fleet(store)
    old = table.add({"target": "old"})
    probed(table, old)
    table.remove(old)
    page = render_store(store)
    assert page.find("probes_total", target="old") == []
    new = table.add({"target": "new"})
    assert new == old  # the slot is reused ...
    page = render_store(store)
    assert page.by("probes_total", "result", target="new") == {"success": 0, "timeout": 0}  # ... from zero
    assert [s for s in page.series if s.labels.get("target") == "new" and s.name.startswith("probe_")
            and not s.name.startswith("probe_latency")] == []


def test_a_series_is_never_exposed_twice():
    store = Store()
    table = fleet(store)
    table.add({"target": "a"})
    with pytest.raises(SchemaError, match="two rows"):
        table.add({"target": "a"})
    with pytest.raises(SchemaError, match="phase"):  # a row's own label may not be a family's
        table.add({"target": "b", "phase": "x"})
    # a group whose series would be row a's, with the same identity labels
    twin = store.group("http/twin", {"source": "fleet", "target": "a"}, ("source", "target"))
    with pytest.raises(SchemaError, match="would expose the same series"):
        twin.gauge(SUCCESS)
    # and the other way round: a row that would be an attached group's
    store.group("http/c", {"source": "fleet", "target": "c"}, ("source", "target")).gauge(SUCCESS)
    with pytest.raises(SchemaError, match="would expose the same series"):
        table.add({"target": "c"})
    # a one-target source (target="a", no source label) exposes other series: both live
    store.swap(add=[TableRow("http/a", SCHEMA, {"target": "a"})])
    page = render_store(store)
    assert {tuple(sorted(s.labels.items())) for s in page.find("probes_total", result="success")} == {
        (("result", "success"), ("source", "fleet"), ("target", "a")), (("result", "success"), ("target", "a"))}


def test_one_target_sources_share_a_table_and_a_reload_swaps_their_rows_all_or_nothing():
    store = Store()
    store.swap(add=[TableRow("http/a", SCHEMA, {"target": "a"}), TableRow("http/b", SCHEMA, {"target": "b"})])
    a, b = store.rows["http/a"], store.rows["http/b"]
    assert a.table is b.table and len(store.tables) == 1
    assert a.table is not None
    probed(a.table, a.slot)
    # a reload that changes a and adds a clash: refused, and a keeps its counters
    clash = TableRow("http/c", SCHEMA, {"target": "b"})
    with pytest.raises(SchemaError):
        store.swap(remove=["http/a"], add=[TableRow("http/a", SCHEMA, {"target": "a", "team": "x"}), clash])
    assert store.rows["http/a"] is a and render_store(store).value("probes_total", target="a", result="success") == 1
    store.swap(remove=["http/a"], add=[TableRow("http/a", SCHEMA, {"target": "a", "team": "x"})])
    page = render_store(store)
    assert page.value("probes_total", target="a", result="success", team="x") == 0  # a changed source: anew
    assert a.table is None and store.rows["http/a"] is not a
    # the table goes with its last row, so its family names are free again
    store.swap(remove=["http/a", "http/b"])
    assert store.tables == {}
    store.group("logs/x", {"source": "x"}, "source").counter(counter("probe_success_total", "now a counter"))


def test_families_are_listed_in_the_order_their_holders_were_attached():
    """As when every target had a group of its own: /metrics lists a family where it first meets it, holder by
    holder in the order of attachment, so a one-target source's families sit between the groups attached
    before and after its row (the example's page keeps its order), and rows show in the order they came."""
    lines = counter("lines", "log lines")
    collections = counter("kpi_agent_collections", "collections")
    logs, one_stats, two_stats = (Group(owner, {"source": name}, "source")
                                  for owner, name in (("logs/a", "a"), ("http/one (self)", "one"),
                                                      ("http/two (self)", "two")))
    logs.counter(lines)
    one_stats.counter(collections)
    two_stats.counter(collections)
    store = Store()
    store.swap(add=[logs, TableRow("http/one", SCHEMA, {"target": "one"}), one_stats,
                    TableRow("http/two", SCHEMA, {"target": "two"}), two_stats])
    page = render_store(store).text
    names = [line.split()[2] for line in page.splitlines() if line.startswith("# TYPE")]
    assert names[:7] == ["lines_total", "probe_success", "probes_total", "probe_phase_seconds", "probe_version_info",
                         "probe_latency_seconds", "kpi_agent_collections_total"]
    targets = [line for line in page.splitlines() if line.startswith("probes_total{")]
    assert [line.split('target="')[1].split('"')[0] for line in targets] == ["one", "one", "two", "two"]


def test_label_sets_not_known_in_advance_are_limited_per_row_and_counted():
    store = Store()
    table = Table("http/fleet", SCHEMA, {"source": "fleet"}, "source", max_series=2)
    store.swap(add=[table])
    slot = table.add({"target": "a"})
    versions = table.families["probe_version_info"]
    for version in ("1", "2", "3", "\ud800"):
        versions.set(slot, (version,), 1.0)  # type: ignore[union-attr]
    page = render_store(store)
    assert page.by("probe_version_info", "version") == {"1": 1, "2": 1}
    assert page.value("kpi_agent_series_dropped_total", metric="probe_version_info") == 2
    with pytest.raises(SchemaError):
        versions.set(slot, ("1", "extra"), 1.0)  # type: ignore[union-attr]  # a bug where it enters


def test_tables_pass_promtool_and_openmetrics(promtool):
    store = Store({"site": "eu-1"})
    table = fleet(store)
    for name in ("a", "b", 'quote"d'):
        probed(table, table.add({"target": name}))
    store.swap(add=[TableRow("http/one", SCHEMA, {"target": "one"})])
    text = render(store.snapshot()).decode()
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    page = Exposition(render(store.snapshot(), openmetrics=True), openmetrics=True)
    assert page.value("probes_total", target='quote"d', result="success") == 1


async def test_remote_write_sends_the_rows_and_a_stale_marker_for_each_series_that_left():
    store = Store({"site": "eu-1"})
    table = fleet(store)
    a, b = table.add({"target": "a"}), table.add({"target": "b"})
    probed(table, a)
    probed(table, b)
    sampler = Sampler({"cluster": "c1"}, process=False)

    async def pushed(now: int) -> list:
        out = []
        async for batch in sampler.round(store.snapshot(), now):
            out += decode(batch.body, compressed=False)
        return out

    first = await pushed(1000)
    page = Exposition(render(store.snapshot(), process=False))
    sent = {(s.name, frozenset(s.label_dict().items() - {("__name__", s.name)})): s.value for s in first}
    assert sent == {(s.name, frozenset({**s.labels, "cluster": "c1"}.items())): s.value for s in page.series}
    table.families["probe_version_info"].clear(a)  # type: ignore[union-attr]  # no TLS this time
    table.remove(b)
    second = await pushed(2000)
    stale = sorted((s.name, s.label_dict()["target"]) for s in second if s.stale)
    assert stale == sorted([("probe_version_info", "a"), ("probe_success", "b"), ("probes_total", "b"),
                            ("probes_total", "b"), ("probe_phase_seconds", "b"), ("probe_phase_seconds", "b"),
                            ("probe_version_info", "b"), *[("probe_latency_seconds_bucket", "b")] * 3,
                            ("probe_latency_seconds_count", "b"), ("probe_latency_seconds_sum", "b")])
    store.swap(remove=["http/fleet"])  # the source goes: every series of a
    third = await pushed(3000)
    assert {s.label_dict()["target"] for s in third if s.stale} == {"a"}
    assert not any(s.stale for s in await pushed(4000))


async def test_a_series_that_moves_gets_no_stale_marker_beside_its_value():
    """A reloaded one-target source (same labels: a new row, maybe in another table), a discovered target that
    came back at another slot: their series go on, so remote write sends them with a value and no stale marker
    in the same round (the receiver would refuse two samples of one series at one timestamp)."""
    store = Store()
    store.swap(add=[TableRow("http/a", SCHEMA, {"target": "a"}), TableRow("http/b", SCHEMA, {"target": "b"})])
    table = fleet(store)
    probed(table, table.add({"target": "x"}))
    for owner in ("http/a", "http/b"):
        row = store.rows[owner]
        assert row.table is not None
        probed(row.table, row.slot)
    sampler = Sampler({}, process=False)

    async def pushed(now: int) -> list:
        out = []
        async for batch in sampler.round(store.snapshot(), now):
            out += decode(batch.body, compressed=False)
        return out

    await pushed(1000)
    # a: reloaded, same labels; b: reloaded into a layout without probe_version_info; x: left, then came back
    fewer = RowSchema("fewer", tuple(declared for declared in SCHEMA.families if declared.spec is not VERSION))
    store.swap(remove=["http/a", "http/b"], add=[TableRow("http/a", SCHEMA, {"target": "a"}),
                                                 TableRow("http/b", fewer, {"target": "b"})])
    table.remove(table.slot("x"))  # type: ignore[arg-type]
    table.add({"target": "y"})
    probed(table, table.add({"target": "x"}))
    for owner in ("http/a", "http/b"):
        row = store.rows[owner]
        assert row.table is not None
        probed(row.table, row.slot)
    second = await pushed(2000)
    stale = sorted((s.name, s.label_dict()["target"]) for s in second if s.stale)
    assert stale == [("probe_version_info", "b")]  # the one series that went
    sent = [(s.name, tuple(sorted(s.label_dict().items()))) for s in second]
    assert len(sent) == len(set(sent))
    page = Exposition(render(store.snapshot(), process=False))
    assert {(s.name, tuple(sorted({**s.labels, "__name__": s.name}.items()))) for s in page.series} == \
        {key for key, s in zip(sent, second, strict=True) if not s.stale}


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)) | st.sampled_from('{}{0}"\\\n'), max_size=8)


@settings(max_examples=examples(1 / 2), deadline=None)
@given(_TEXT, _TEXT, st.lists(st.tuples(_TEXT, st.none() | _TEXT, st.sampled_from([(), ("connect",),
                                                                                  ("connect", "transfer")])),
                              min_size=1, max_size=6, unique_by=lambda row: row[0]),
       st.lists(st.sampled_from([0.0, 0.05, 0.1, 0.5, 1.0, 3.0]) | st.floats(0, 1e6), max_size=8))
@example("{0}", "}{", [("t{1}", None, ()), ("u", "z}", ("connect",))], [0.05, 0.5, 0.5])
@example("s", "t", [(str(i), None, ("connect", "transfer") if i == 3 else ()) for i in range(6)], [])
def test_every_rows_labels_and_histogram_counts_read_back(site, team, rows, observations):
    """Row texts are templates filled per row (braces in any value are text), rows of one table may have
    different label names, a family's cells are written whether most rows have them or few do, and a
    histogram's buckets are the plain cumulative counts of what was observed."""
    store = Store({"site": site, "zone": "global"})
    table = Table("http/fleet", SCHEMA, {"source": "fleet", "team": team}, "source")
    store.swap(add=[table])
    for target, zone, phases in rows:
        slot = table.add({"target": target} if zone is None else {"target": target, "zone": zone})
        table.families["probe_success"].set(slot, (), 1.0)  # type: ignore[union-attr]
        for number, phase in enumerate(phases, 1):
            table.families["probe_phase_seconds"].set(slot, (phase,), number / 100)  # type: ignore[union-attr]
        for value in observations:
            table.families["probe_latency_seconds"].observe(slot, (), value)  # type: ignore[union-attr]
    for openmetrics in (False, True):
        page = Exposition(render(store.snapshot(), openmetrics=openmetrics, process=False), openmetrics)
        for target, zone, phases in rows:
            labels = {"site": site, "source": "fleet", "team": team, "target": target,
                      "zone": "global" if zone is None else zone}
            assert [s.labels for s in page.find("probe_success", target=target)] == [labels]
            assert page.by("probe_phase_seconds", "phase", target=target) == {
                phase: number / 100 for number, phase in enumerate(phases, 1)}
            buckets = page.by("probe_latency_seconds_bucket", "le", target=target)
            assert buckets == {"0.1": float(bisect.bisect_right(sorted(observations), 0.1)),
                               "1.0": float(bisect.bisect_right(sorted(observations), 1.0)),
                               "+Inf": float(len(observations))}
            assert page.value("probe_latency_seconds_count", target=target) == len(observations)
            assert page.value("probe_latency_seconds_sum", target=target) == sum(observations)
