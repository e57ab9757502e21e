"""Scrape and update cost: our store + snapshot + render vs prometheus_client's own metric objects.

Run: .venv/bin/python -m pytest tests/benchmarks/bench_exposition.py -s
The anchor is what client_python's make_aiohttp_handler does: generate_latest over labelled metrics, on the
event loop. We report total render time, time the event loop is blocked, and per-update cost.
"""

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from agent.series.exposition import render, render_cooperatively
from agent.series.family import counter
from agent.series.store import Store

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
    ours_render = best_of(3, lambda: render(store.snapshot()))
    served, longest_stall = asyncio.run(served_page(store))

    keys = [(targets[i % len(targets)], str(i % 10)) for i in range(UPDATES)]
    ours_update = best_of(1, lambda: [ours.inc(k) for k in keys]) / UPDATES
    anchor_update = best_of(1, lambda: [anchor.labels(*k, "bench").inc() for k in keys]) / UPDATES
    gauge = Gauge("bench_depth", "Depth", registry=registry)
    anchor_unlabelled = best_of(1, lambda: [gauge.inc() for _ in range(UPDATES)]) / UPDATES

    print(f"\n{SERIES} series, best of 3")
    print(f"  render  anchor generate_latest (on the loop): {anchor_render * 1000:8.1f} ms")
    print(f"  render  ours in one go:                       {ours_render * 1000:8.1f} ms "
          f"(ratio anchor/ours {anchor_render / ours_render:.2f}x)")
    print(f"  render  ours as served (on the loop, in slices): {served * 1000:5.1f} ms; the loop's longest stall "
          f"{longest_stall * 1000:.1f} ms (snapshot {snapshot_only * 1e6:.1f} us) against the anchor's "
          f"{anchor_render * 1000:.1f} ms ({anchor_render / longest_stall:.0f}x less)")
    print(f"  update  anchor labels().inc(): {anchor_update * 1e9:6.0f} ns, unlabelled inc(): "
          f"{anchor_unlabelled * 1e9:.0f} ns, ours Family.inc(): {ours_update * 1e9:.0f} ns "
          f"(ratio {anchor_update / ours_update:.1f}x)")
    assert ours.values[("0", "0")] > 1


async def served_page(store: Store) -> tuple[float, float]:
    """Time to write the page the way /metrics does, and the longest the event loop went without a turn."""
    loop = asyncio.get_running_loop()
    stalls = [0.0]

    async def ticker() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(0)
            stalls.append(loop.time() - before)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    await render_cooperatively(store.snapshot())
    served = time.perf_counter() - started
    tick.cancel()
    return served, max(stalls)
