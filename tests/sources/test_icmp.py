"""ICMP sources: echo requests to 127.0.0.1 and ::1 compared with blackbox_exporter's icmp prober in the same
test, packet loss made by nftables in a network namespace, ping sockets without CAP_NET_RAW, and a process
that may open neither socket (a reason on /metrics, the status page and `kpi-agent check`, never a traceback)."""

import subprocess
import sys
import time

import pytest

from agent.sources.icmp import KIND
from tests.helpers import wait_until
from tests.sources.blackbox import blackbox, compare  # noqa: F401 - the fixture
from tests.sources.netns import NO_RAW_SOCKETS, netns  # noqa: F401 - the fixture
from tests.sources.probers import Probed, assert_retried, blackbox_module, source_config

OURS_ONLY = ("probes_total", "probe_last_result", "probe_latency_seconds_bucket", "probe_latency_seconds_sum",
             "probe_latency_seconds_count", "probe_icmp_packets_sent_total", "probe_icmp_packets_received_total",
             "probe_icmp_packet_loss_ratio", "probe_icmp_rtt_seconds", "probe_icmp_rtt_jitter_seconds")


@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
async def test_loopback_as_blackbox_sees_it(target, blackbox, context):  # noqa: F811
    module = {"preferred_ip_protocol": "ip6" if ":" in target else "ip4", "ttl": 32}
    exporter = blackbox(blackbox_module("icmp_lo", "icmp", module))
    ours = Probed(context, "icmp", target, module)
    assert await ours.probe() == "success", ours.reason
    theirs = exporter.probe("icmp_lo", target)
    assert theirs.value("probe_success") == 1, exporter.debug("icmp_lo", target)
    page = ours.page()
    compare(page, theirs, ours_only=OURS_ONLY,
            values=["probe_success", "probe_ip_protocol", "probe_icmp_reply_hop_limit", "probe_ip_addr_hash"])
    assert page.value("probe_icmp_reply_hop_limit") == 64  # the kernel's own replies leave with hop limit 64
    assert page.value("probe_icmp_packets_sent_total") == page.value("probe_icmp_packets_received_total") == 1
    assert page.value("probe_icmp_packet_loss_ratio") == 0
    rtt = page.value("probe_icmp_duration_seconds", phase="rtt")
    assert 0 < rtt < 0.5 and rtt == page.value("probe_icmp_rtt_seconds", stat="avg")


async def test_ttl_0_is_the_systems_default_as_in_blackbox(blackbox, context):  # noqa: F811
    module = {"preferred_ip_protocol": "ip4", "ttl": 0}
    exporter = blackbox(blackbox_module("icmp_ttl0", "icmp", module))
    ours = Probed(context, "icmp", "127.0.0.1", module)
    assert await ours.probe() == "success", ours.reason
    assert exporter.probe("icmp_ttl0", "127.0.0.1").value("probe_success") == 1


async def test_several_requests_give_min_avg_max_and_jitter(context):
    ours = Probed(context, "icmp", "127.0.0.1", {"packets": 5, "packet_interval": "20ms", "payload_size": 200})
    started = time.perf_counter()
    assert await ours.probe() == "success", ours.reason
    assert 0.08 <= time.perf_counter() - started < 1.0  # four gaps of 20 ms, not the whole timeout
    page = ours.page()
    assert page.value("probe_icmp_packets_sent_total") == page.value("probe_icmp_packets_received_total") == 5
    low, mean, high = (page.value("probe_icmp_rtt_seconds", stat=stat) for stat in ("min", "avg", "max"))
    assert 0 < low <= mean <= high < 0.5
    assert 0 <= page.value("probe_icmp_rtt_jitter_seconds") <= high - low


async def test_packet_counters_are_born_at_zero_and_grow_across_probes(context):
    ours = Probed(context, "icmp", "127.0.0.1", {"packets": 3, "packet_interval": "10ms"})
    before = ours.page()  # increase() over the first probe needs the counters before it
    assert before.value("probe_icmp_packets_sent_total") == before.value("probe_icmp_packets_received_total") == 0
    for probes in (1, 2):
        assert await ours.probe() == "success", ours.reason
        page = ours.page()
        assert page.value("probe_icmp_packets_sent_total") == page.value("probe_icmp_packets_received_total") == \
            3 * probes
    assert "# TYPE probe_icmp_packets_sent_total counter" in page.text


def _probes(page) -> float:  # noqa: ANN001
    return page.total("probes_total")


@pytest.mark.slow
def test_loss_over_several_probes_from_the_counters(netns, tmp_path):  # noqa: F811
    """With 30% of ICMP packets dropped both ways, the counters read from /metrics across several probes give the
    loss of any window (1 - increase(received) / increase(sent)), and each probe adds what its own gauge says."""
    namespace = netns(icmp_loss=30)
    config = tmp_path / "agent.yaml"
    config.write_text("icmp:\n  - {name: lossy, target: 127.0.0.1, packets: 20, packet_interval: 10ms, "
                      "timeout: 1s, interval: 2s}\n")
    base = namespace.start_agent(config)
    pages = [namespace.scrape(base)]

    def next_probe():  # noqa: ANN202
        page = namespace.scrape(base)
        return page if _probes(page) > _probes(pages[-1]) else None

    while _probes(pages[-1]) < 6:
        pages.append(wait_until(next_probe, timeout=60, interval=0.2, what="the next probe through the lossy netns"))
    single_steps = 0
    for earlier, later in zip(pages, pages[1:], strict=False):
        probes = _probes(later) - _probes(earlier)
        sent = later.value("probe_icmp_packets_sent_total") - earlier.value("probe_icmp_packets_sent_total")
        received = later.value("probe_icmp_packets_received_total") - \
            earlier.value("probe_icmp_packets_received_total")
        assert sent == 20 * probes and 0 <= received <= sent
        if probes == 1:  # one probe between the scrapes: its own loss gauge says what it added
            single_steps += 1
            assert received == round(20 * (1 - later.value("probe_icmp_packet_loss_ratio")))
    assert single_steps >= 2
    first, last = pages[0], pages[-1]
    sent = last.value("probe_icmp_packets_sent_total") - first.value("probe_icmp_packets_sent_total")
    received = last.value("probe_icmp_packets_received_total") - first.value("probe_icmp_packets_received_total")
    # a round trip survives with 0.7 * 0.7 = 49%: over 100 requests or more, the loss is about half
    assert sent >= 100 and 0.25 < 1 - received / sent < 0.77, (sent, received)


@pytest.mark.slow
def test_a_failure_a_retry_papered_over_is_still_counted(netns, tmp_path):  # noqa: F811
    """Every third ICMP packet dropped, from the first: each probe's first request is lost (a timeout), its retry
    and the reply get through. The probes succeed, the failed attempts and their packets are counted."""
    namespace = netns(icmp_drop_first_of=3)
    config = tmp_path / "agent.yaml"
    config.write_text("icmp:\n  - {name: flaky, target: 127.0.0.1, timeout: 300ms, retries: 1, interval: 1s}\n")
    base = namespace.start_agent(config)
    page = wait_until(lambda: (p := namespace.scrape(base)).total("probes_total") >= 2 and p, timeout=60,
                      what="two probes")
    probes = page.total("probes_total")
    assert_retried(page, "icmp", failed="timeout", probes=probes)
    assert page.value("probe_icmp_packets_sent_total") == 2 * probes  # both attempts' requests
    assert page.value("probe_icmp_packets_received_total") == probes


@pytest.mark.slow
def test_all_lost_is_a_timeout_like_blackbox(netns, tmp_path):  # noqa: F811
    namespace = netns(icmp_loss=100)
    config = tmp_path / "agent.yaml"
    config.write_text("icmp:\n  - {name: dead, target: 127.0.0.1, packets: 3, packet_interval: 100ms, timeout: 1s}\n")
    base = namespace.start_agent(config)
    page = wait_until(lambda: (p := namespace.scrape(base)).value("probes_total", result="timeout") and p,
                      timeout=60, what="a timed out probe")
    assert page.value("probe_success") == 0
    assert page.value("probe_icmp_packet_loss_ratio") == 1
    # a failed probe's requests count as sent and lost: the counters never hide a dead host
    assert page.value("probe_icmp_packets_sent_total") == 3 * page.total("probes_total")
    assert page.value("probe_icmp_packets_received_total") == 0
    (row,) = namespace.sources(base)
    assert row["last_error_text"] == "no echo reply from 127.0.0.1 to 3 requests within 1s"


@pytest.mark.slow
def test_ping_sockets_serve_a_process_without_cap_net_raw(netns, tmp_path):  # noqa: F811
    namespace = netns(ping_group_range="0 0")
    config = tmp_path / "agent.yaml"
    config.write_text("icmp:\n  - {name: v4, target: 127.0.0.1, packets: 2, packet_interval: 50ms}\n"
                      "  - {name: v6, target: '::1', packets: 2, packet_interval: 50ms}\n")
    check = namespace.run(*NO_RAW_SOCKETS, sys.executable, "-m", "agent", "check", "--config.file", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    base = namespace.start_agent(config, wrapper=NO_RAW_SOCKETS)
    page = wait_until(lambda: (p := namespace.scrape(base)).total("probes_total", result="success") == 2 and p,
                      timeout=60, what="both probes")
    assert page.value("probe_icmp_packets_received_total", target="v4") == 2
    assert page.value("probe_icmp_packets_received_total", target="v6") == 2


@pytest.mark.slow
def test_neither_socket_is_a_clear_problem_never_a_traceback(netns, tmp_path):  # noqa: F811
    namespace = netns(ping_group_range="1 0")
    config = tmp_path / "agent.yaml"
    config.write_text("global: {interval: 2s}\nicmp:\n  - name: router\n    target: 127.0.0.1\n")
    check = namespace.run(*NO_RAW_SOCKETS, sys.executable, "-m", "agent", "check", "--config.file", str(config))
    assert check.returncode != 0
    output = check.stdout + check.stderr
    assert "Traceback" not in output
    assert f"{config}:3: icmp[0]: no ICMP socket may be opened" in output, output
    assert "net.ipv4.ping_group_range (now '1 0'" in output and "CAP_NET_RAW" in output

    base = namespace.start_agent(config, wrapper=NO_RAW_SOCKETS)
    page = wait_until(lambda: (p := namespace.scrape(base)).value("probes_total", result="no_socket") and p,
                      timeout=60, what="a probe without a socket")
    assert page.value("probe_success") == 0
    assert page.value("probe_last_result", result="no_socket") == 1
    (row,) = namespace.sources(base)
    assert row["last_error_text"].startswith("no ICMP socket may be opened")
    status, html = namespace.fetch(base + "/")
    assert status == 200 and "no ICMP socket may be opened" in html


@pytest.mark.slow
def test_an_unreachable_host(netns, tmp_path):  # noqa: F811
    namespace = netns(lo_only_host=True)
    config = tmp_path / "agent.yaml"
    config.write_text("icmp:\n  - {name: gone, target: 127.0.0.2, timeout: 1s}\n  - {name: here, target: 127.0.0.1}\n")
    base = namespace.start_agent(config)
    page = wait_until(lambda: (p := namespace.scrape(base)).total("probes_total") >= 2 and p, timeout=60,
                      what="both probes")
    assert page.value("probe_success", target="here") == 1
    assert page.value("probe_success", target="gone") == 0
    assert page.value("probes_total", target="gone", result="connection_error") == 1
    rows = {row["name"]: row for row in namespace.sources(base)}
    assert "unreachable" in rows["gone"]["last_error_text"].lower()


def test_config_keys_and_their_errors():
    config = source_config("icmp", "r", "router.example.test", {"packets": 10, "packet_interval": "100ms",
                                                               "payload_size": 56, "ttl": 10,
                                                               "preferred_ip_protocol": "ip4"})
    assert (config.module.packets, config.module.packet_interval, config.module.ttl) == (10, 0.1, 10)
    from agent.config.problems import ConfigError

    with pytest.raises(ConfigError) as error:
        source_config("icmp", "r", "127.0.0.1", {"packets": 5, "packet_interval": "1s", "ttl": 300}, timeout="2s")
    text = str(error.value)
    assert "icmp[0].packet_interval: 5 requests 1s apart take 4s, not less than the timeout 2s" in text
    assert "icmp[0].ttl: 300 is not a TTL from 1 to 255 (or 0: the system's default)" in text
    with pytest.raises(ConfigError, match="ICMP has no port"):
        source_config("icmp", "r", "127.0.0.1:80", {})


def test_the_kind_never_loads_sockets_until_a_source_is_built():
    done = subprocess.run([sys.executable, "-c", "import sys, agent.sources.kinds; "
                           "print(any(m.startswith('agent.sources.icmp.sockets') for m in sys.modules))"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    assert "probe_icmp_packet_loss_ratio" in {spec.name for spec in KIND.builtin}
