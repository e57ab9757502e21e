"""CPU per probe of our dns, icmp, tcp and grpc sources against blackbox_exporter's probers of the same names,
same targets, same number of probes, in the same run (alternating rounds, medians).

Run: .venv/bin/python -m pytest tests/benchmarks/bench_probers.py -s  (-k dns, -k icmp, -k tcp, -k grpc for one)
Our probes run in this process (CPU = this process's CPU time during the run); blackbox_exporter runs in its own
(CPU from /proc), driven through /probe by a client here. Every target runs in a process of its own: the DNS
target is Debian's dnsmasq; the ICMP target is this machine's kernel answering on 127.0.0.1; the TCP target
sends an SSH banner and waits for the client to hang up; the gRPC target is grpcio's health server
(tests/sources/grpc_server.py). HTTP has its own benchmark (bench_http.py).

Three DNS cases. dnsmasq answering for its zone sends the same bytes to every query. A caching resolver's
answers differ in their TTLs, counting down (a server of ours in its own process does that), and here a
validate_answer_rrs regexp reads the records, TTLs included. Our prober parses an answer once and remembers the
verdict for answers equal to it but for the id and the TTLs, so in both it parses once. The third case is the
worst for us: a server whose every answer has another address, so every answer is parsed by dnspython.
"""

import asyncio
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import aiohttp

from agent.series.store import Store
from agent.sources.base import SourceContext
from tests.helpers import build_source, cpu_seconds, free_port
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


# The TCP target: a banner on connect (as sshd, SMTP or IMAP servers send one), then waits for the client to go.
BANNER_SERVER = """import asyncio, sys
async def serve(reader, writer):
    writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\\r\\n")
    await reader.read()
    writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=256)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def _serving(argv: list[str]) -> subprocess.Popen:
    # stdin stays open: the gRPC server reads status changes from it and stops at its end
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_tcp_probe_cost_against_blackbox(blackbox):  # noqa: F811
    port = free_port()
    server = _serving([sys.executable, "-c", BANNER_SERVER, str(port)])
    try:
        compare("tcp", f"127.0.0.1:{port}", {"preferred_ip_protocol": "ip4"}, blackbox, " (connect only)")
        compare("tcp", f"127.0.0.1:{port}", {"preferred_ip_protocol": "ip4",
                                             "query_response": [{"expect": "^SSH-2.0-"}]}, blackbox,
                " (the banner read and matched, as blackbox's ssh_banner module)")
    finally:
        server.kill()
        server.wait()


def test_grpc_probe_cost_against_blackbox(blackbox):  # noqa: F811
    port = free_port()
    server = _serving([sys.executable, "-m", "tests.sources.grpc_server", f"127.0.0.1:{port}"])
    try:
        compare("grpc", f"127.0.0.1:{port}", {"preferred_ip_protocol": "ip4"}, blackbox, " (health check)")
    finally:
        server.kill()
        server.wait()
