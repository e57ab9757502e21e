"""The exposition writer held to the reference: prometheus_client's encoders write the same series for the same
families, its parsers read back every label value and number we write (hypothesis), and promtool agrees."""

import math
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from agent.series.exposition import escape_label_value, go_float, render, render_cooperatively, wants_openmetrics
from agent.series.family import counter, gauge, histogram
from agent.series.store import Store
from tests.helpers import LoopWatch, cpu_time_of, examples


def _store() -> Store:
    store = Store({"site": "eu-1", "team": "all"})
    logs = store.group("logs/a", {"source": "a", "team": "shop"}, "source")
    requests = logs.counter(counter("http_requests_total", 'Requests "by" method\\status\nand code', ["method"]))
    requests.inc(("GET",), 3)
    requests.inc(('we"ird\\va\nlue',), 1)
    logs.gauge(gauge("queue_depth", "Depth")).set((), 1234567.0)
    latency = logs.histogram(histogram("took_seconds", "Took", ["method"], [0.1, 1, 2.5]))
    for value in (0.05, 0.5, 3.0, 0.1):
        latency.observe(("GET",), value)
    http = store.group("http/b", {"target": "b"}, "target")
    http.gauge(gauge("queue_depth", "Depth")).set((), -math.inf)
    http.counter(counter("http_requests_total", 'Requests "by" method\\status\nand code', ["method"])).ensure(("PUT",))
    return store


class _Reference(Collector):
    """The same snapshot as prometheus_client metric families, for its encoders to write."""

    def __init__(self, store: Store):
        self.snap = store.snapshot()

    def collect(self):
        merged: dict[str, Metric] = {}
        for group_labels, family in self.snap.families():
            spec, values = family.spec, family.snapshot()
            metric = merged.setdefault(spec.name, Metric(spec.name, spec.documentation, spec.kind))
            constant = {k: v for k, v in self.snap.const_labels.items() if k not in spec.labelnames}
            constant.update(group_labels)
            for labels, value in values.items():
                base = {**dict(zip(spec.labelnames, labels, strict=True)), **constant}
                if spec.kind == "histogram":
                    total = 0.0
                    for bound, count in zip((*spec.bounds, math.inf), value[:-1], strict=True):
                        total += count
                        metric.samples.append(Sample(f"{spec.name}_bucket", {**base, "le": go_float(bound)}, total))
                    metric.samples += [Sample(f"{spec.name}_count", base, total), Sample(f"{spec.name}_sum", base,
                                                                                         value[-1])]
                else:
                    metric.samples.append(Sample(spec.sample_names[0], base, value))
        yield from merged.values()


def _series(text: str, parser) -> set:
    return {(s.name, frozenset(s.labels.items()), repr(s.value)) for f in parser(text) for s in f.samples}


def test_the_same_series_as_prometheus_clients_encoders_in_both_formats(promtool):
    store = _store()
    ours_text = render(store.snapshot(), process=False).decode()
    ours_openmetrics = render(store.snapshot(), openmetrics=True, process=False).decode()
    reference_text = generate_latest(_Reference(store)).decode()
    reference_openmetrics = generate_openmetrics(_Reference(store)).decode()
    assert _series(ours_text, parse_text) == _series(reference_text, parse_text)
    assert _series(ours_openmetrics, parse_openmetrics) == _series(reference_openmetrics, parse_openmetrics)
    assert ours_openmetrics.endswith("# EOF\n") and "# TYPE http_requests counter" in ours_openmetrics
    assert "# TYPE http_requests_total counter" in ours_text and "# TYPE took_seconds histogram" in ours_text
    assert 'queue_depth{site="eu-1",source="a",team="shop"} 1.234567e+06' in ours_text
    checked = subprocess.run([promtool, "check", "metrics"], input=render(store.snapshot()).decode(),
                             capture_output=True, text=True)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked.stdout


def test_process_families_and_negotiation():
    page = render(Store().snapshot()).decode()
    values = {s.name: s.value for f in parse_text(page) for s in f.samples}
    assert values["process_resident_memory_bytes"] > 10 * 1024**2 and values["process_open_fds"] >= 3
    assert values["process_start_time_seconds"] > 1.7e9 and values["process_cpu_seconds_total"] > 0
    assert wants_openmetrics("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert not wants_openmetrics("text/plain;version=0.0.4;q=0.5,*/*;q=0.1") and not wants_openmetrics("")


@settings(max_examples=examples(4 / 3), deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.floats(allow_nan=False)), min_size=1, max_size=10))
def test_every_label_value_and_number_reads_back(pairs):
    store = Store()
    family = store.group("g", {"source": "s"}, "source").gauge(gauge("values", "v", ["label"]))
    for label, value in pairs:
        family.set((label,), value)
    expected = {label: value for (label,), value in family.values.items()}  # as stored (surrogates repaired)
    for openmetrics, parser in ((False, parse_text), (True, parse_openmetrics)):
        text = render(store.snapshot(), openmetrics=openmetrics, process=False).decode()
        assert {s.labels["label"]: s.value for f in parser(text) for s in f.samples} == expected


async def test_the_served_page_is_the_same_page_written_in_slices_that_leave_the_loop_free():
    """/metrics writes the page on the event loop in slices: byte for byte the page written in one go, and no
    task waits much longer than a slice (a worker thread would hold the GIL for the whole render)."""
    store = Store({"site": "eu-1"})
    for source in range(300):
        group = store.group(f"s{source}", {"source": f"s{source}"}, "source")
        hits = group.counter(counter("hits_total", "Hits", ["path"]))
        for path in range(400):  # 120,000 series: a page of many slices (about 40 ms here)
            hits.inc((f"/p/{path}",))
        group.histogram(histogram("latency_seconds", "Latency", [], [0.1, 1])).observe((), 0.5)
    whole = cpu_time_of(lambda: render(store.snapshot(), process=False), repeat=1)
    async with LoopWatch(tick=0) as loop:
        served = await render_cooperatively(store.snapshot(), process=False)
    assert served == render(store.snapshot(), process=False)
    assert loop.turns > 5  # the loop ran other tasks while the page was written
    assert loop.longest < whole / 4, f"a slice held the loop for {loop.longest * 1000:.1f} ms of CPU, the whole " \
        f"page takes {whole * 1000:.1f} ms"


def _plain_go_float(value: float) -> str:
    """Go's shortest formatting of a float ('g', -1) as the exposition writes it, said the plain way: the
    reference the fast paths of ``go_float`` (looked-up whole numbers, no exponent search) are held to."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


@settings(max_examples=examples(20), deadline=None)
@given(st.one_of(st.floats(), st.integers(-300, 300).map(float), st.integers(-(2**60), 2**60),
                 st.sampled_from([0.0, -0.0, 1e6, 999999.0, 1234567.0, -1e6, 255.0, 256.0, -1.0, -2.0, 1e16, 1e-5])))
def test_go_float_writes_what_the_plain_formatting_writes(value):
    assert go_float(value) == _plain_go_float(value)


@settings(max_examples=examples(20), deadline=None)
@given(st.text(alphabet=st.sampled_from('ab\\"\n{}=,é') | st.characters(), max_size=30))
def test_label_values_are_escaped_as_the_plain_replacements_do(value):
    assert escape_label_value(value) == value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
