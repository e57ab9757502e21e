"""Numbers in log fields, read back from the exposition: whatever shortcut reads them (int() for whole numbers,
remembered texts for values seen before), a sum, a histogram and the skipped counts are what reading each
record's value with float() gives, record by record (finite; for a counter, not negative)."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.series.store import Store
from agent.sources.logs import metrics as metrics_module
from agent.sources.logs.config import EXPIRED, SKIPPED
from agent.sources.logs.pipeline import Pipeline
from tests.helpers import examples, render_store
from tests.sources.logs.conftest import parse

BUCKETS = [0.0, 1.0, 10.0]
CONFIG = ("logs:\n  - name: n\n    paths: [/tmp/n.log]\n    format: regex\n"
          "    pattern: '(?P<k>[ab]) (?P<v>.*)'\n    metrics:\n"
          "      - {name: v_total, type: counter, value: v, labels: [k]}\n"
          f"      - {{name: v_seconds, type: histogram, value: v, labels: [k], buckets: {BUCKETS}}}\n")
# Texts whose numbers add up exactly in floats in any order (whole numbers below 2**40, halves and quarters), so
# the expected totals do not depend on how records are grouped; and texts that are no usable number, or that
# only float() reads, or that int() reads differently from what a reader might think.
EXACT = st.one_of(st.integers(-2**40, 2**40).map(str), st.integers(-2**20, 2**20).map(lambda n: f"{n / 4}"))
ODD = st.sampled_from(["", "x", "nan", "NaN", "inf", "-inf", "1e999", "9" * 400, "-" + "9" * 400, " 12 ", "1_000",
                       "\u0663", "+7", "-0", "007", "0x10", "1e3", "-2.5e1", "0.", ".5", "1__0", "\u22125",
                       "9007199254740993", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
                       "1" * 5000])
TEXTS = st.one_of(EXACT, EXACT, ODD)
# batches of records drawn from a few texts, so that later batches hold only texts seen before
BATCHES = st.lists(TEXTS, min_size=1, max_size=8).flatmap(lambda texts: st.lists(
    st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(texts)), max_size=30), min_size=1, max_size=6))


def expected(batches: list[list[tuple[str, str]]]) -> dict:
    """The exposition's figures, reading each record's value with float(), adding a batch's values per label
    set in record order and then to the total."""
    sums: dict[str, float] = {}
    observed: dict[str, list[float]] = {}
    totals: dict[str, float] = {}
    skipped: Counter[tuple[str, str]] = Counter()
    for batch in batches:
        batch_sums: dict[str, list[float]] = {}
        batch_observed: dict[str, list[float]] = {}
        for key, text in batch:
            try:
                value = float(text)
            except ValueError:
                skipped.update({("v_total", "not_a_number"): 1, ("v_seconds", "not_a_number"): 1})
                continue
            if not math.isfinite(value):
                skipped.update({("v_total", "not_finite"): 1, ("v_seconds", "not_finite"): 1})
                continue
            batch_observed.setdefault(key, []).append(value)
            if value < 0:
                skipped[("v_total", "negative")] += 1
            else:
                batch_sums.setdefault(key, []).append(value)
        for key, values in batch_sums.items():
            sums[key] = sums.get(key, 0.0) + sum(values)
        for key, values in batch_observed.items():
            totals[key] = totals.get(key, 0.0) + sum(values)
            observed.setdefault(key, []).extend(values)
    figures: dict = {("v_total", key): total for key, total in sums.items()}
    for key, values in observed.items():
        figures[("v_seconds_sum", key)] = totals[key]
        figures[("v_seconds_count", key)] = len(values)
        for bound in BUCKETS:
            figures[("v_seconds_bucket", key, bound)] = sum(value <= bound for value in values)
    return nonzero(figures, skipped)


def read(store: Store) -> dict:
    page = render_store(store)
    figures: dict = {}
    for series in page.series:
        if series.name == "v_total":
            figures[("v_total", series.labels["k"])] = series.value
        elif series.name in ("v_seconds_sum", "v_seconds_count"):
            figures[(series.name, series.labels["k"])] = series.value
        elif series.name == "v_seconds_bucket" and series.labels["le"] != "+Inf":
            figures[(series.name, series.labels["k"], float(series.labels["le"]))] = series.value
    return nonzero(figures, {(s.labels["metric"], s.labels["reason"]): s.value
                             for s in page.find("kpi_agent_log_lines_skipped_total")})


def nonzero(figures: dict, skipped: dict) -> dict:
    """The figures that are not 0 (series born at 0 are no reading), and the skipped counts."""
    return {**{key: value for key, value in figures.items() if value}, "skipped": {
        reason: count for reason, count in skipped.items() if count}}


def pipeline() -> tuple[Store, Pipeline]:
    config = parse(CONFIG).of_kind("logs")[0]
    store = Store()
    group, own = store.group("logs/n", {"source": "n"}, "source"), store.group("self", {"source": "n"}, "source")
    return store, Pipeline(config.metrics, group, own.counter(SKIPPED), own.counter(EXPIRED), fmt=config.format,
                           pattern=config.pattern, max_series=config.max_series_per_metric)


@settings(max_examples=examples(), deadline=None, suppress_health_check=list(HealthCheck))
@example([[("a", "9007199254740993"), ("a", "1")], [("b", "-1"), ("b", "2")]])  # 2**53 + 1 is no float
@given(st.one_of(BATCHES, st.lists(st.lists(st.tuples(st.sampled_from("ab"), TEXTS), max_size=30), max_size=6)))
def test_numbers_read_at_once_are_what_float_reads_record_by_record(batches):
    """Several batches, so that texts seen before are read from what the metric remembers."""
    store, chunked = pipeline()
    lines_store, by_line = pipeline()
    for batch in batches:
        chunked.process_text("".join(f"{key} {text}\n" for key, text in batch))
        by_line.process([f"{key} {text}" for key, text in batch])
    want = expected(batches)
    assert read(store) == want
    assert read(lines_store) == want


def test_numbers_stay_exact_past_the_texts_a_metric_remembers(monkeypatch):
    """More distinct value texts than a metric remembers: it stops remembering, and reads on correctly."""
    monkeypatch.setattr(metrics_module, "KNOWN_LIMIT", 50)
    store, chunked = pipeline()
    batches = [[("a", str(n)), ("b", f"{n}.5"), ("a", "3")] for n in range(20)] * 2 + \
              [[("a", str(n)), ("b", f"{n}.25")] for n in range(100, 200)] + [[("a", "3"), ("b", "-1"), ("a", "x")]]
    for batch in batches:
        chunked.process_text("".join(f"{key} {text}\n" for key, text in batch))
    assert all(metric.known is None for metric in chunked._metrics if hasattr(metric, "known"))
    assert read(store) == expected(batches)
