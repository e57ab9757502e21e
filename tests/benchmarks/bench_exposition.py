"""Scrape and update cost: our store + snapshot + render vs prometheus_client's own metric objects.

Run: .venv/bin/python -m pytest tests/benchmarks/bench_exposition.py -s
The anchor is what client_python's make_aiohttp_handler does: generate_latest over labelled metrics, on the
event loop. We report total render time, time the event loop is blocked, and per-update cost.
"""

import time

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from agent.store import Store, counter
from agent.web import render

SERIES = 100_000
UPDATES = 1_000_000


def best_of(runs: int, func) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - started)
    return best


def test_exposition_and_update_cost():
    targets = [str(i) for i in range(SERIES // 10)]
    store = Store({"site": "bench"})
    ours = store.group("bench").counter(counter("bench_requests_total", "Requests", ["target", "code"]),
                                        max_series=SERIES)
    registry = CollectorRegistry()
    anchor = Counter("bench_requests", "Requests", ["target", "code", "site"], registry=registry)
    for target in targets:
        for code in range(10):
            ours.inc((target, str(code)))
            anchor.labels(target, str(code), "bench").inc()

    anchor_render = best_of(3, lambda: generate_latest(registry))
    snapshot_only = best_of(3, store.snapshot)
    ours_render = best_of(3, lambda: render(store.snapshot(), "", ""))

    keys = [(targets[i % len(targets)], str(i % 10)) for i in range(UPDATES)]
    ours_update = best_of(1, lambda: [ours.inc(k) for k in keys]) / UPDATES
    anchor_update = best_of(1, lambda: [anchor.labels(*k, "bench").inc() for k in keys]) / UPDATES
    gauge = Gauge("bench_depth", "Depth", registry=registry)
    anchor_unlabelled = best_of(1, lambda: [gauge.inc() for _ in range(UPDATES)]) / UPDATES

    print(f"\n{SERIES} series, best of 3")
    print(f"  render  anchor generate_latest (on the loop): {anchor_render * 1000:8.1f} ms")
    print(f"  render  ours snapshot+render (worker thread): {ours_render * 1000:8.1f} ms "
          f"(ratio anchor/ours {anchor_render / ours_render:.2f}x)")
    print(f"  loop blocked: anchor {anchor_render * 1000:.1f} ms, ours {snapshot_only * 1e6:.1f} us (the snapshot "
          f"lists the groups; each family is copied as the worker thread renders it, which shares the GIL)")
    print(f"  update  anchor labels().inc(): {anchor_update * 1e9:6.0f} ns, unlabelled inc(): "
          f"{anchor_unlabelled * 1e9:.0f} ns, ours Family.inc(): {ours_update * 1e9:.0f} ns "
          f"(ratio {anchor_update / ours_update:.1f}x)")
    assert ours.values[("0", "0")] > 1
