"""Network namespaces the tests make (``ip netns``, root only): a loopback of their own, their own
``net.ipv4.ping_group_range``, random loss of ICMP packets alone, and agents running inside them.

The loss is an nftables rule (``numgen random`` drops a share of ICMP packets on input, as a lossy link would),
not ``tc netem``: the kernels this runs on (CI's included) may lack sch_netem, and loss on ICMP alone keeps the
scrapes over TCP whole.

Nothing leaves a namespace: it has only its loopback, so every packet stays on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Exposition, free_port, stop_processes, wait_until
from tests.tools import require_tool

# Runs inside a namespace: GET a URL, print the status and the body (the test's own process is outside it).
_FETCH = ("import sys, urllib.request, urllib.error\n"
          "try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())\n"
          "except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n")
# What a process needs to lose to have no raw socket (root keeps every other capability)
NO_RAW_SOCKETS = ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", "--"]


def _require(what: str, ok: bool) -> None:
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"network namespace tests need {what}")
    pytest.skip(f"network namespace tests need {what}")


class Namespace:
    def __init__(self, name: str):
        self.name = name
        self.processes: list[subprocess.Popen] = []

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix(), *argv], capture_output=True, text=True, timeout=60)

    def fetch(self, url: str) -> tuple[int, str]:
        done = self.run(sys.executable, "-c", _FETCH, url)
        status, _, body = done.stdout.partition("\n")
        if not status.strip().isdigit():
            raise ConnectionError(done.stderr.strip()[-300:])
        return int(status), body

    def scrape(self, base: str) -> Exposition:
        status, body = self.fetch(base + "/metrics")
        assert status == 200, (status, body[:300])
        return Exposition(body.encode())

    def sources(self, base: str) -> list[dict]:
        return json.loads(self.fetch(base + "/api/v1/sources")[1])

    def start_agent(self, config: Path, wrapper: list[str] = ()) -> str:
        """``kpi-agent run`` inside the namespace (behind ``wrapper``, e.g. NO_RAW_SOCKETS); its base URL once
        ready."""
        port = free_port()
        process = subprocess.Popen([*self.prefix(), *wrapper, sys.executable, "-m", "agent", "run", "--config.file",
                                    str(config), "--web.listen-address", f"127.0.0.1:{port}"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.processes.append(process)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: self.fetch(base + "/-/ready")[0] == 200, timeout=20, what="agent ready in namespace")
        except AssertionError:
            process.terminate()
            raise AssertionError(f"agent did not start: {process.stderr.read().decode()[-2000:]}") from None
        return base


@pytest.fixture
def netns() -> Iterator:
    """``netns(ping_group_range=None, icmp_loss=None, lo_only_host=False, hosts=None) -> Namespace``: a new
    namespace with its loopback up; ``ping_group_range`` ("0 0": root's group may open ping sockets, "1 0": nobody
    may); ``icmp_loss`` the percentage of ICMP packets dropped (requests and replies alike); ``lo_only_host``:
    127.0.0.1 is the only loopback address (any other 127.x address has no route: an unreachable host, no packet
    sent); ``hosts``: the /etc/hosts its processes read (names of the test's own); ``icmp_drop_first_of``: N drops
    the first of every N ICMP packets (3: a request lost, then a request and its reply through, and again)."""
    _require("root", os.geteuid() == 0)
    _require("ip (Debian's iproute2)", bool(shutil.which("ip")))
    made: list[Namespace] = []

    def make(ping_group_range: str | None = None, icmp_loss: int | None = None,
             lo_only_host: bool = False, hosts: str | None = None, icmp_drop_first_of: int | None = None
             ) -> Namespace:
        name = f"kpi-test-{os.getpid()}-{len(made)}"
        if hosts is not None:  # `ip netns exec` mounts /etc/netns/NAME/hosts over /etc/hosts for what it runs
            Path(f"/etc/netns/{name}").mkdir(parents=True, exist_ok=True)
            Path(f"/etc/netns/{name}/hosts").write_text(hosts)
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        namespace = Namespace(name)
        made.append(namespace)
        commands = [["ip", "link", "set", "lo", "up"]]
        if lo_only_host:
            commands += [["ip", "addr", "del", "127.0.0.1/8", "dev", "lo"],
                         ["ip", "addr", "add", "127.0.0.1/32", "dev", "lo"]]
        if ping_group_range is not None:
            commands.append(["sysctl", "-q", "-w", f"net.ipv4.ping_group_range={ping_group_range}"])
        if icmp_loss is not None:
            nft = require_tool("nft")
            commands += [[nft, "add", "table", "inet", "loss"],
                         [nft, "add", "chain", "inet", "loss", "in", "{ type filter hook input priority 0; }"],
                         [nft, "add", "rule", "inet", "loss", "in", "meta", "l4proto", "{ icmp, ipv6-icmp }",
                          *(["numgen", "random", "mod", "100", "lt", str(icmp_loss)] if icmp_loss < 100 else []),
                          "drop"]]
        if icmp_drop_first_of is not None:  # the 1st, N+1st, 2N+1st... ICMP packet: a pattern, not chance
            nft = require_tool("nft")
            commands += [[nft, "add", "table", "inet", "drops"],
                         [nft, "add", "chain", "inet", "drops", "in", "{ type filter hook input priority 0; }"],
                         [nft, "add", "rule", "inet", "drops", "in", "meta", "l4proto", "{ icmp, ipv6-icmp }",
                          "numgen", "inc", "mod", str(icmp_drop_first_of), "lt", "1", "drop"]]
        for command in commands:
            done = namespace.run(*command)
            assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
        return namespace

    yield make
    for namespace in made:
        stop_processes(namespace.processes)
        subprocess.run(["ip", "netns", "delete", namespace.name], capture_output=True)
        shutil.rmtree(f"/etc/netns/{namespace.name}", ignore_errors=True)
