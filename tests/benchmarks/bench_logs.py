"""Log pipeline vs mtail on the same 1,000,000-line nginx access log, in one run.

Run: .venv/bin/python -m pytest tests/benchmarks/bench_logs.py -s
Both count requests by method+status, bytes by method and an 11-bucket latency histogram by method. Each
runs in its own process, so lines/s and peak RSS are measured the same way for both. A second part appends
100,000 lines/s for 5 s to a file the real LogSource follows and reports the lag.
"""

import json
import random
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.tools import require_tool

LINES = 1_000_000
PATTERN = (r'^(?P<ip>\S+) \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) '
           r'(?P<bytes>\d+) .* (?P<rt>[0-9.]+)$')
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

MTAIL_PROGRAM = f"""\
counter http_requests_total by method, status
counter http_response_bytes_total by method
histogram http_request_duration_seconds by method buckets {", ".join(map(str, BUCKETS))}

/{PATTERN}/ {{
  http_requests_total[$method][$status]++
  http_response_bytes_total[$method] += $bytes
  http_request_duration_seconds[$method] = float($rt)
}}
"""

OURS = textwrap.dedent("""
    import resource, sys, time
    from agent import yamlsrc
    from agent.config import parse_config
    from agent.sources.logs.pipeline import Pipeline
    from agent.sources.logs.tailer import FileTail
    from agent.store import Store

    config_text, path = sys.argv[1], sys.argv[2]
    config, _ = parse_config(yamlsrc.load_text(config_text, "bench.yaml"), "bench.yaml")
    store = Store()
    pipeline = Pipeline(config.logs[0], store.group("bench"))
    started = time.perf_counter()
    tail, _ = FileTail.open(path, None, start_at_end=False)
    lines = 0
    while True:
        data = tail.read(256 * 1024)
        if not data:
            break
        batch = data.decode("utf-8").split("\\n")
        batch.pop()
        lines += pipeline.process(batch).lines
    elapsed = time.perf_counter() - started
    total = sum(store.groups["bench"].families["http_requests"].values.values())
    print(lines, total, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")

PEAK_OF_CHILD = "import resource, subprocess, sys; " \
                "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); " \
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"


def write_access_log(path: Path, lines: int) -> None:
    rng = random.Random(7)
    methods = ["GET"] * 8 + ["POST", "PUT"]
    statuses = ["200"] * 90 + ["404"] * 5 + ["500", "502", "503", "301", "304"]
    with path.open("w") as handle:
        for i in range(lines):
            handle.write(f'10.0.{i % 256}.{rng.randrange(256)} - - [24/Nov/2026:10:00:00 +0000] '
                         f'"{rng.choice(methods)} /api/item/{rng.randrange(1000)} HTTP/1.1" {rng.choice(statuses)} '
                         f'{rng.randrange(100, 20000)} "-" "bench/1.0" {rng.random() * 2:.3f}\n')


def config_text(path: Path) -> str:
    return json.dumps({"logs": [{
        "name": "bench", "paths": [str(path)], "start_at": "beginning", "pattern": PATTERN,
        "metrics": [
            {"name": "http_requests_total", "type": "counter", "labels": ["method", "status"]},
            {"name": "http_response_bytes_total", "type": "counter", "value": "bytes", "labels": ["method"]},
            {"name": "http_request_duration_seconds", "type": "histogram", "value": "rt", "labels": ["method"],
             "buckets": BUCKETS}]}]})


def test_log_throughput_against_mtail(tmp_path):
    mtail = require_tool("mtail")
    log = tmp_path / "access.log"
    write_access_log(log, LINES)
    progs = tmp_path / "progs"
    progs.mkdir()
    (progs / "nginx.mtail").write_text(MTAIL_PROGRAM)

    started = time.perf_counter()
    result = subprocess.run([mtail, "--one_shot", "--one_shot_format", "prometheus", "--progs", str(progs),
                             "--logs", str(log)], capture_output=True, text=True, timeout=600)
    mtail_seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    mtail_total = sum(float(v) for v in re.findall(r"^http_requests_total\{[^}]*\} (\S+)$", result.stdout, re.M))
    mtail_rss = int(subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, mtail, "--one_shot", "--one_shot_format",
                                    "prometheus", "--progs", str(progs), "--logs", str(log)],
                                   capture_output=True, text=True, timeout=600).stdout.strip())

    ours = subprocess.run([sys.executable, "-c", OURS, config_text(log), str(log)], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).parents[2])
    assert ours.returncode == 0, ours.stderr[-2000:]
    lines, total, seconds, our_rss = ours.stdout.split()
    assert int(lines) == LINES and float(total) == LINES == mtail_total

    ours_rate, mtail_rate = LINES / float(seconds), LINES / mtail_seconds
    print(f"\n{LINES} nginx lines, counter by method+status, bytes counter, 11-bucket histogram")
    print(f"  mtail one-shot: {mtail_rate:10,.0f} lines/s  peak RSS {mtail_rss / 1024:6.1f} MiB")
    print(f"  kpi-agent:      {ours_rate:10,.0f} lines/s  peak RSS {int(our_rss) / 1024:6.1f} MiB")
    print(f"  ratio: {ours_rate / mtail_rate:.2f}x mtail's lines/s, {int(our_rss) / mtail_rss:.2f}x its memory")


FOLLOWER = textwrap.dedent("""
    import asyncio, sys, time, aiohttp
    from agent import yamlsrc
    from agent.config import parse_config
    from agent.sources.base import SourceContext
    from agent.sources.logs import LogSource
    from agent.sources.logs.positions import Positions
    from agent.store import Store

    async def main():
        config, _ = parse_config(yamlsrc.load_text(sys.argv[1], "b.yaml"), "b.yaml")
        store = Store()
        async with aiohttp.ClientSession() as session:
            source = LogSource(config.logs[0], store.group("b"), SourceContext(session, asyncio.Semaphore(1),
                                                                              Positions(None)))
            task = asyncio.create_task(source.run())
            print("ready", flush=True)
            lines = store.groups["b"].families["kpi_agent_log_lines"].values
            worst, late = 0, 0.0
            expected = int(sys.argv[2])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                tick = time.monotonic()
                await asyncio.sleep(0.1)
                late = max(late, time.monotonic() - tick - 0.1)
                worst = max(worst, source.tails and sum(t.lag() for t in source.tails.values()) or 0)
                if lines.get(("bench",), 0) >= expected:
                    break
            task.cancel()
            print(int(lines.get(("bench",), 0)), worst, late)

    asyncio.run(main())
""")

WRITER = textwrap.dedent("""
    import sys, time
    path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    line = '10.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 200 512 "-" "w/1" 0.042\\n'
    block = line * (rate // 100)
    with open(path, "a") as handle:
        start = time.monotonic()
        for i in range(int(seconds * 100)):
            handle.write(block)
            handle.flush()
            pause = start + (i + 1) / 100 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    print(time.monotonic() - start)
""")


@pytest.mark.parametrize("rate", [100_000])
def test_follow_keeps_up_with_a_fast_writer(tmp_path, rate):
    log = tmp_path / "live.log"
    log.write_text("")
    seconds = 5.0
    follower = subprocess.Popen([sys.executable, "-c", FOLLOWER, config_text(log), str(int(rate * seconds))],
                                stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    assert follower.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    written = subprocess.run([sys.executable, "-c", WRITER, str(log), str(rate), str(seconds)], capture_output=True,
                             text=True, timeout=120)
    out, _ = follower.communicate(timeout=120)
    lines, worst_lag, late = out.split()
    print(f"\nwriter: {rate:,} lines/s for {float(written.stdout):.1f} s; follower read {int(lines):,} lines, "
          f"max lag {int(worst_lag) / 1024:.0f} KiB (~{int(worst_lag) / 85 / rate * 1000:.0f} ms of writing), "
          f"event loop at most {float(late) * 1000:.0f} ms late")
    assert int(lines) == int(rate * seconds)
