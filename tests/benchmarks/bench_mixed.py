"""5,000 mixed targets on one agent (issue 20's goal): 2,000 http, 1,000 tcp, 1,000 dns and 1,000 icmp, every 15 s.
Every target must be probed every interval, none skipped, and probes must start less than 100 ms late at the
99th percentile.

Run: .venv/bin/python -m pytest tests/benchmarks/bench_mixed.py -s -m slow   (KPI_BENCH_MIXED=1000 for a shorter run)

One real `kpi-agent run` process. The targets are on loopback: an HTTP server, a TCP port and a DNS server
(dnspython answering every A query) in one helper process, bound to every 127.x.y.z address, and the kernel
answering pings; each target has its own 127.x.y.z address, so each is its own series. What is measured comes
from the agent's own /metrics, read at the start and end of three whole intervals: `probes_total` of every
target (each must have grown by exactly three), `kpi_agent_probes_skipped_total` (zero) and the
`kpi_agent_probe_start_delay_seconds` histogram (how late each probe started after it was due: its share at or
below 0.1 s must be at least 99%). The machine's load average is printed with the figures.
"""

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import fetch, free_port, stop_processes, wait_until

INTERVAL = 15.0
TOTAL = int(os.environ.get("KPI_BENCH_MIXED", "5000"))
SHARE = {"http": 0.4, "tcp": 0.2, "dns": 0.2, "icmp": 0.2}

SERVERS = textwrap.dedent("""
    import asyncio, sys
    import dns.message, dns.rrset

    class Http(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buffer = transport, b""
        def data_received(self, data):
            self.buffer += data
            if b"\\r\\n\\r\\n" in self.buffer:
                self.transport.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
                self.transport.close()

    class Tcp(asyncio.Protocol):
        def connection_made(self, transport):
            transport.close()

    class Dns(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport
        def datagram_received(self, data, address):
            query = dns.message.from_wire(data)
            answer = dns.message.make_response(query)
            answer.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.1"))
            self.transport.sendto(answer.to_wire(), address)

    async def main():
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        loop = asyncio.get_running_loop()
        http, tcp, dns_port = map(int, sys.argv[1:4])
        servers = [await loop.create_server(Http, "0.0.0.0", http, backlog=4096),
                   await loop.create_server(Tcp, "0.0.0.0", tcp, backlog=4096)]
        # one socket per DNS target address: an answer from a socket bound to 0.0.0.0 leaves from 127.0.0.1,
        # not from the address asked, and the client rightly ignores it
        for address in sys.argv[4].split(","):
            await loop.create_datagram_endpoint(Dns, local_addr=(address, dns_port))
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


def address(index: int) -> str:
    """127.<1..>.<0..249>.<1..250>: a loopback address of its own per target."""
    return f"127.{1 + index // 62500}.{index // 250 % 250}.{index % 250 + 1}"


def config(counts: dict[str, int], http: int, tcp: int, dns_port: int) -> str:
    def targets(kind: str, start: int, render) -> str:  # noqa: ANN001 - a formatter
        return ", ".join(f"'{render(address(start + i))}'" for i in range(counts[kind]))

    starts, offset = {}, 0
    for kind in SHARE:
        starts[kind], offset = offset, offset + counts[kind]
    return (
        f"global: {{interval: {INTERVAL:g}s, timeout: 5s, max_concurrent_probes: 256}}\n"
        f"http:\n  - name: web\n"
        f"    static_configs: [{{targets: [{targets('http', starts['http'], lambda a: f'http://{a}:{http}/')}]}}]\n"
        f"tcp:\n  - name: ports\n"
        f"    static_configs: [{{targets: [{targets('tcp', starts['tcp'], lambda a: f'{a}:{tcp}')}]}}]\n"
        f"dns:\n  - name: resolvers\n    query_name: www.example.test\n    query_type: A\n"
        f"    static_configs: [{{targets: [{targets('dns', starts['dns'], lambda a: f'{a}:{dns_port}')}]}}]\n"
        f"icmp:\n  - name: hosts\n    preferred_ip_protocol: ip4\n"
        f"    static_configs: [{{targets: [{targets('icmp', starts['icmp'], lambda a: a)}]}}]\n")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


_SAMPLE = re.compile(r'^([a-z_]+)\{(.*)\} (\S+)$', re.M)
_LABEL = re.compile(r'([a-z_]+)="([^"]*)"')


class Page:
    """The samples of a few names of a /metrics page: the strict parser (tests.helpers.Exposition) takes 5 s of
    CPU for the 186,000 series of 5,000 targets, too slow to poll; our label values here need no unescaping."""

    def __init__(self, text: str, names: tuple[str, ...]):
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in names}
        for name, labels, value in _SAMPLE.findall(text):
            if name in self.samples:
                self.samples[name].append((dict(_LABEL.findall(labels)), float(value)))

    def find(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(found, value) for found, value in self.samples[name]
                if all(found.get(k) == v for k, v in labels.items())]


NAMES = ("probes_total", "kpi_agent_probes_skipped_total", "kpi_agent_probe_start_delay_seconds_bucket")


def scrape(url: str) -> Page:
    status, text = fetch(url, timeout=30)
    assert status == 200
    return Page(text, NAMES)


def totals(page: Page) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for labels, value in page.find("probes_total"):
        key = (labels["source"], labels["target"])
        found[key] = found.get(key, 0.0) + value
    return found


def delays(page: Page) -> dict[float, float]:
    return {float(labels["le"]): value for labels, value in page.find("kpi_agent_probe_start_delay_seconds_bucket")}


@pytest.mark.slow
def test_five_thousand_mixed_targets_every_interval(tmp_path):
    counts = {kind: int(TOTAL * share) for kind, share in SHARE.items()}
    http, tcp, dns_port = free_port(), free_port(), free_port()
    first_dns = counts["http"] + counts["tcp"]  # the order of SHARE, as config() numbers them
    dns_addresses = ",".join(address(first_dns + i) for i in range(counts["dns"]))
    helpers = subprocess.Popen([sys.executable, "-c", SERVERS, str(http), str(tcp), str(dns_port), dns_addresses],
                               stdout=subprocess.PIPE)
    assert helpers.stdout is not None and helpers.stdout.readline() == b"ready\n"
    (tmp_path / "agent.yaml").write_text(config(counts, http, tcp, dns_port))
    port = free_port()
    started = time.monotonic()
    agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config.file", str(tmp_path / "agent.yaml"),
                              "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn"],
                             stderr=open(tmp_path / "agent.log", "wb"))  # noqa: SIM115 - closed with the process
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: fetch(f"http://127.0.0.1:{port}/-/ready")[0] == 200, timeout=120, what="ready")
        ready = time.monotonic() - started

        waiting: list[tuple[str, str]] = []

        def all_probed() -> Page | None:
            page = scrape(metrics)
            probed = totals(page)
            waiting[:] = [key for key, count in probed.items() if count < 1]
            return page if len(probed) == TOTAL and not waiting else None

        try:
            wait_until(all_probed, timeout=6 * INTERVAL, interval=2, what="every target probed once")
        except AssertionError:
            page = scrape(metrics)
            skipped = {labels["source"]: value for labels, value in page.find("kpi_agent_probes_skipped_total")}
            raise AssertionError(f"never probed: {waiting[:10]} ({len(waiting)}); skipped: {skipped}") from None
        time.sleep(INTERVAL / 2)
        asked = time.monotonic()
        before = scrape(metrics)
        read = time.monotonic()
        time.sleep(3 * INTERVAL - (read - asked))
        asked_again = time.monotonic()
        after = scrape(metrics)
        read_again = time.monotonic()
        rss = int(next(line for line in Path(f"/proc/{agent.pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS")).split()[1]) / 1024
    finally:
        stop_processes([agent, helpers])
    earlier = totals(before)
    grown = {key: after_total - earlier.get(key, 0.0) for key, after_total in totals(after).items()}
    by_count: dict[float, int] = {}
    for value in grown.values():
        by_count[value] = by_count.get(value, 0) + 1
    late = {bound: delays(after)[bound] - delays(before).get(bound, 0.0) for bound in delays(after)}
    total = late[float("inf")]
    within = late[0.1] / total if total else 0.0
    skipped = sum(value for _, value in after.find("kpi_agent_probes_skipped_total"))
    failed = {source: sum(value for labels, value in after.find("probes_total", source=source)
                          if labels["result"] != "success") for source in ("web", "ports", "resolvers", "hosts")}
    print(f"\n{TOTAL} targets ({', '.join(f'{n} {k}' for k, n in counts.items())}) every {INTERVAL:g}s on one agent; "
          f"load {load()}")
    print(f"  ready after {ready:.1f}s, RSS {rss:.0f} MiB after four intervals")
    # each page is read at some moment between asking and having it: every target probed every interval has
    # grown by one per tick that fell between the two moments, at least floor(shortest / interval) times and at
    # most ceil(longest / interval)
    fewest, most = int((asked_again - read) // INTERVAL), int(-(-(read_again - asked) // INTERVAL))
    print(f"  probes per target between the two reads ({asked_again - read:.1f} to {read_again - asked:.1f} s apart, "
          f"so {fewest} to {most} each): {dict(sorted(by_count.items()))}")
    print(f"  start delay: {within:.2%} of {total:.0f} probes within 100 ms, {late[0.01] / total:.2%} within 10 ms; "
          f"skipped {skipped:.0f}; failed probes by source {failed}")
    assert len(grown) == TOTAL and set(by_count) <= set(map(float, range(fewest, most + 1))), by_count
    assert skipped == 0
    assert within >= 0.99, late
