"""CPU per probe of our dns and icmp sources against blackbox_exporter's dns and icmp probers, same targets, same
number of probes, in the same run (alternating rounds, medians).

Run: .venv/bin/python -m pytest tests/benchmarks/bench_probers.py -s  (-k dns or -k icmp for one)
Our probes run in this process (CPU = this process's CPU time during the run); blackbox_exporter runs in its own
(CPU from /proc), driven through /probe by a client here. The DNS target is Debian's dnsmasq in its own process;
the ICMP target is this machine's kernel answering on 127.0.0.1.

Three DNS cases. dnsmasq answering for its zone sends the same bytes to every query. A caching resolver's
answers differ in their TTLs, counting down (a server of ours in its own process does that), and here a
validate_answer_rrs regexp reads the records, TTLs included. Our prober parses an answer once and remembers the
verdict for answers equal to it but for the id and the TTLs, so in both it parses once. The third case is the
worst for us: a server whose every answer has another address, so every answer is parsed by dnspython.
"""

import asyncio
import statistics
import time
import urllib.parse
from pathlib import Path

import aiohttp

from agent.series.store import Store
from agent.sources.base import SourceContext
from tests.helpers import build_source, cpu_seconds
from tests.sources.blackbox import blackbox  # noqa: F401 - the fixture
from tests.sources.dns_servers import changing_dns, dnsmasq, ticking_dns  # noqa: F401 - the fixtures
from tests.sources.probers import blackbox_module, source_config

PROBES = 2000
CONCURRENCY = 20
ROUNDS = 5


async def run_ours(kind: str, target: str, module: dict) -> float:
    """CPU seconds our sources spent on PROBES probes."""
    context = SourceContext()
    store = Store()
    sources = [build_source(store, context, source_config(kind, f"bench-{i}", target, module), kind)
               for i in range(CONCURRENCY)]
    await sources[0].probe()  # the first probe opens shared sockets and loads the library: not what we measure
    cpu = time.process_time()

    async def worker(source) -> None:  # noqa: ANN001
        for _ in range(PROBES // CONCURRENCY):
            assert await source.probe() == "success", source.prober.last_error

    await asyncio.gather(*(worker(s) for s in sources))
    spent = time.process_time() - cpu
    await context.close()
    return spent


async def run_blackbox(probe_url: str, pid: int) -> float:
    """CPU seconds blackbox_exporter spent on PROBES probes through /probe."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        cpu = cpu_seconds(pid)

        async def worker() -> None:
            for _ in range(PROBES // CONCURRENCY):
                async with session.get(probe_url) as response:
                    assert "probe_success 1" in await response.text()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return cpu_seconds(pid) - cpu


def compare(kind: str, target: str, module: dict, blackbox, case: str = "") -> None:  # noqa: ANN001, F811
    exporter = blackbox(blackbox_module("bench", kind, module))
    probe_url = f"{exporter.base}/probe?" + urllib.parse.urlencode({"module": "bench", "target": target})
    ours, theirs = [], []
    for _ in range(ROUNDS):  # alternating, so both see the same load on a shared machine
        ours.append(asyncio.run(run_ours(kind, target, module)))
        theirs.append(asyncio.run(run_blackbox(probe_url, exporter.process.pid)))
    ours_cpu, bb_cpu = statistics.median(ours), statistics.median(theirs)
    print(f"\n{kind}{case}: {PROBES} probes of {target}, {CONCURRENCY} at a time; median of {ROUNDS} alternating "
          f"rounds; load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(f"  blackbox_exporter: {bb_cpu / PROBES * 1e6:6.0f} us CPU per probe "
          f"(rounds: {[round(c / PROBES * 1e6) for c in theirs]})")
    print(f"  kpi-agent:         {ours_cpu / PROBES * 1e6:6.0f} us CPU per probe "
          f"(rounds: {[round(c / PROBES * 1e6) for c in ours]})")
    print(f"  ratio: {bb_cpu / ours_cpu:.2f}x blackbox's CPU per probe (above 1 = we use less; the goal is 2)")


def test_dns_probe_cost_against_blackbox(dnsmasq, blackbox):  # noqa: F811
    compare("dns", f"127.0.0.1:{dnsmasq}", {"query_name": "www.example.test", "query_type": "A",
                                             "preferred_ip_protocol": "ip4"}, blackbox)


def test_dns_probe_cost_when_ttls_count_down(ticking_dns, blackbox):  # noqa: F811
    compare("dns", f"127.0.0.1:{ticking_dns}", {
        "query_name": "www.example.test", "query_type": "A", "preferred_ip_protocol": "ip4",
        "validate_answer_rrs": {"fail_if_not_matches_regexp": ["\\tIN\\tA\\t192\\.0\\.2\\.10$"]}}, blackbox,
        " (TTLs counting down, a regexp reads the records)")


def test_dns_probe_cost_when_every_answer_is_new(changing_dns, blackbox):  # noqa: F811
    compare("dns", f"127.0.0.1:{changing_dns}", {"query_name": "www.example.test", "query_type": "A",
                                                 "preferred_ip_protocol": "ip4"}, blackbox,
            " (every answer new: every one parsed)")


def test_icmp_probe_cost_against_blackbox(blackbox):  # noqa: F811
    compare("icmp", "127.0.0.1", {"preferred_ip_protocol": "ip4"}, blackbox)
