"""Shared test utilities: free ports, waiting, and reading /metrics the way Prometheus does.

Tests assert on the exposition text a scrape returns, parsed strictly: invalid UTF-8, a family declared twice
or a series exposed twice fails the test (Prometheus would silently keep one of two duplicate samples).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp
from aiohttp import web
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

T = TypeVar("T")

# Examples per property test (hypothesis): few in the quick loop, 150 in CI (scripts/test.sh), thousands for a
# long campaign: KPI_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_fuzz.py
FUZZ_EXAMPLES = int(os.environ.get("KPI_FUZZ_EXAMPLES", "50"))


def examples(share: float = 1.0) -> int:
    """How many examples a property test tries: ``share`` of KPI_FUZZ_EXAMPLES (more for a cheap example, less for
    a costly one), never under 10."""
    return max(10, round(FUZZ_EXAMPLES * share))

OPENMETRICS = "application/openmetrics-text;version=1.0.0"


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0,
                ssl_context=None) -> tuple[web.AppRunner, int]:  # noqa: ANN001 - ssl.SSLContext or None
    """Serve ``app`` on a real socket (port 0: any free one): the runner, to clean up, and the port. A clean-up
    cancels the requests still being answered (a hanging target's) instead of waiting for them."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.05)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    return runner, runner.addresses[0][1]


# A process that answers 200 "ok" to any GET on the port given as its argument: a target whose CPU is not ours.
OK_TARGET = textwrap.dedent("""
    import sys
    from aiohttp import web
    async def ok(request):
        return web.Response(text="ok")
    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
""")


def stop_processes(processes: list[subprocess.Popen], timeout: float = 10) -> None:
    """SIGTERM to all at once (they stop in parallel), then wait for each; kill what does not stop in time."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


REFERENCE_ROUND = 100e-6  # CPU seconds one _round of work takes on the 2-core machine the margins were set on


def _round() -> int:
    total = 0
    for i in range(2000):
        total += i * i % 7
    return total


@dataclass
class Pace:
    """How many times longer work takes on this machine right now than on a quiet reference machine (never less
    than 1), measured, so that a timing test's margins follow the machine instead of being guessed on a quiet one.

    Two things make a test's work slower: a slower CPU (the CPU time of a fixed piece of work) and other work on
    the machine (the share of a core a busy thread gets: about 1 when the machine is idle, 0.1 when ten busy
    processes share two cores). Use: ``pace = Pace.measure()`` before the timed part (while the test's own
    threads are idle: they share the GIL with the measurement), then ``pace.check(elapsed, quiet=...)``.
    Lower bounds (a timeout fires no earlier than set) need no pace: load only makes things later.
    """

    slowdown: float
    share: float
    cpu_speed: float  # reference CPU seconds per CPU second here (below 1: a slower CPU)

    @classmethod
    def measure(cls, cpu: float = 0.02, wall: float = 0.1) -> Pace:
        """Busy-loop until ``cpu`` seconds of this thread's CPU time or ``wall`` seconds have passed."""
        rounds, started, started_cpu = 0, time.perf_counter(), time.thread_time()
        while True:
            _round()
            rounds += 1
            elapsed, used = time.perf_counter() - started, time.thread_time() - started_cpu
            if used >= cpu or elapsed >= wall:
                break
        used = max(used, 1e-6)
        share, cpu_speed = min(1.0, used / elapsed), rounds * REFERENCE_ROUND / used
        return cls(max(1.0, 1 / (share * min(cpu_speed, 1.0))), share, cpu_speed)

    def seconds(self, quiet: float) -> float:
        """A limit of ``quiet`` seconds on a quiet reference machine, stretched to this machine now."""
        return quiet * self.slowdown

    def check(self, elapsed: float, quiet: float, what: str = "it") -> None:
        """Assert that ``elapsed`` seconds is within ``quiet`` seconds stretched by the slowdown. On a miss the
        pace is measured again and the worse of the two kept: load that came during the test counts too."""
        if elapsed >= self.seconds(quiet):
            again = Pace.measure()
            if again.slowdown > self.slowdown:
                self.slowdown, self.share, self.cpu_speed = again.slowdown, again.share, again.cpu_speed
        assert elapsed < self.seconds(quiet), (
            f"{what} took {elapsed:.3f} s, more than {quiet} s on a quiet machine x {self.slowdown:.1f} here now "
            f"(a busy thread gets {self.share:.0%} of a core; CPU speed {self.cpu_speed:.2f} of the reference)")


def cpu_time_of(work: Callable[[], object], repeat: int = 3) -> float:
    """The least CPU time of this thread that ``work()`` took over ``repeat`` runs: what the work costs, not how
    long the machine's other work kept it waiting (for tests that compare two costs measured alike)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.thread_time()
        work()
        best = min(best, time.thread_time() - started)
    return best


class LoopWatch:
    """``async with LoopWatch() as watch:`` watches the running event loop from a task that wakes every
    ``tick`` seconds; ``watch.longest`` is the most CPU time the process spent between two of its turns: how long
    some code held the loop (or a worker thread the GIL) without letting other tasks run. CPU time, not wall
    time: when the machine is busy the whole process waits for a core, which says nothing about how the code
    shares the loop; an idle loop spends none."""

    def __init__(self, tick: float = 0.005):
        self.tick = tick
        self.longest = 0.0
        self.turns = 0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        last = time.process_time()
        while True:
            await asyncio.sleep(self.tick)
            now = time.process_time()
            self.longest, self.turns, last = max(self.longest, now - last), self.turns + 1, now

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._watch())
        await asyncio.sleep(0)  # its first turn: the clock starts now
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



@dataclass
class ImportTimedAgent:
    """A `kpi-agent run` under ``python -X importtime`` (its stderr, the import log, in a file)."""

    process: subprocess.Popen
    port: int
    config: Path
    stderr: Path

    def imported(self) -> set[str]:
        """The modules it has imported so far, but for those imported by name (importlib.import_module: a kind's
        package, a command), which importtime does not list."""
        return {line.rpartition("|")[2].strip() for line in self.stderr.read_text().splitlines()
                if line.startswith("import time:")}


def start_log_agent_import_timed(directory: Path, lines: int) -> ImportTimedAgent:
    """A log-only agent (one regex source counting the ``lines`` lines "GET 200" of app.log from the start into
    lines_total{status}) started under -X importtime; the caller stops it."""
    log = directory / "app.log"
    log.write_text("GET 200\n" * lines)
    config = directory / "agent.yaml"
    config.write_text(f"logs:\n  - {{name: app, paths: ['{log}'], start_at: beginning,\n"
                      "     pattern: '^(?P<method>[A-Z]+) (?P<status>\\d+)',\n"
                      "     metrics: [{name: lines_total, type: counter, labels: [status]}]}\n")
    port = free_port()
    stderr = directory / "stderr"
    with stderr.open("w") as errors:
        process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "agent", "run", "--config.file",
                                    str(config), "--web.listen-address", f"127.0.0.1:{port}"], stderr=errors)
    return ImportTimedAgent(process, port, config, stderr)


def wait_until(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.1, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - the service may not be up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last error: {last_error}")


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 30.0, interval: float = 0.05,
                what: str = "condition") -> T:
    """Poll an async check until it returns something truthy (an agent on the test's own event loop). The
    timeout only bounds a failing test: a passing one returns as soon as the check holds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def fetch(url: str, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass(frozen=True)
class Series:
    name: str
    labels: dict[str, str]
    value: float


class Exposition:
    """One /metrics page, parsed strictly. ``ours=False`` for pages of other programs (Prometheus's own), whose
    families may share a name once the parser strips _total (go_memstats_alloc_bytes and ..._bytes_total)."""

    def __init__(self, body: bytes, openmetrics: bool = False, ours: bool = True):
        self.text = body.decode("utf-8")  # strict: a label value that is not UTF-8 fails here
        parse = parse_openmetrics if openmetrics else parse_text
        self.series: list[Series] = []
        families: set[str] = set()
        seen: set[tuple[str, frozenset]] = set()
        for family in parse(self.text):
            assert not ours or family.name not in families, f"family {family.name} is declared twice"
            families.add(family.name)
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                assert key not in seen, f"duplicate series {sample.name}{sample.labels}"
                seen.add(key)
                self.series.append(Series(sample.name, dict(sample.labels), sample.value))
        self.families = families

    def find(self, name: str, **labels: str) -> list[Series]:
        return [s for s in self.series if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one series of ``name`` carrying ``labels`` (others allowed), None if there is none."""
        found = self.find(name, **labels)
        assert len(found) <= 1, f"{len(found)} series of {name} match {labels}: {[s.labels for s in found]}"
        return found[0].value if found else None

    def total(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.find(name, **labels))

    def by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """Values of ``name`` keyed by one label (e.g. a counter by status)."""
        result: dict[str, float] = {}
        for series in self.find(name, **labels):
            key = series.labels.get(label, "")
            assert key not in result, f"{name}: several series with {label}={key!r}"
            result[key] = series.value
        return result


def scrape(url: str, openmetrics: bool = False, timeout: float = 5.0, ours: bool = True) -> Exposition:
    """GET a /metrics URL from a synchronous test (an agent in another process)."""
    request = urllib.request.Request(url, headers={"Accept": OPENMETRICS} if openmetrics else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        assert response.status == 200, response.status
        return Exposition(response.read(), openmetrics, ours)


async def ascrape(url: str, openmetrics: bool = False, headers: dict[str, str] | None = None,
                  ssl_context=None) -> Exposition:  # noqa: ANN001 - ssl.SSLContext or None
    """GET a /metrics URL from an async test (an agent on the test's own event loop)."""
    headers = {**(headers or {}), **({"Accept": OPENMETRICS} if openmetrics else {})}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers, ssl=ssl_context) as response:
        assert response.status == 200, response.status
        return Exposition(await response.read(), openmetrics)


def render_store(store, openmetrics: bool = False) -> Exposition:  # noqa: ANN001 - agent.series.store.Store
    """What /metrics would return for ``store`` (the same writer, in one go and without HTTP)."""
    from agent.series.exposition import render

    return Exposition(render(store.snapshot(), openmetrics), openmetrics)


def build_source(store, context, config, kind_name: str):  # noqa: ANN001, ANN201 - agent types
    """A source built the way the runtime builds one (its groups attached to ``store``), not yet running."""
    from agent.sources.kinds import KINDS

    kind = KINDS[kind_name]
    owner = f"{kind.name}/{config.name}"
    data, stats = kind.data_group(config, owner), kind.source_stats(config, f"{owner}/self")
    source = kind.build(config, data, stats, context)
    store.swap(add=[data, stats.member])
    return source


def use_positions(context, path: str):  # noqa: ANN001, ANN201 - agent types
    """Give the sources built in ``context`` from now on a positions file at ``path`` (as a new agent process
    would read it); returns the Positions."""
    from agent.sources.logs.positions import Positions, SharedPositions

    positions = Positions(path)
    context.resources["positions"] = SharedPositions(positions=positions)
    return positions
