"""DNS sources against real servers (Debian's dnsmasq serving a test zone, unbound over TLS, a server that
misbehaves on purpose), each probe compared with blackbox_exporter's dns prober on the same server in the same
test: the same series and labels, the same verdict, the same record counts and serial."""

import time

import pytest

from agent.config.problems import ConfigError
from agent.sources.dns import KIND
from agent.sources.dns.config import RESULTS
from agent.sources.probe.families import COMMON_RESULTS
from tests.helpers import examples
from tests.sources.blackbox import blackbox, compare  # noqa: F401 - the fixture
from tests.sources.dns_servers import SERIAL, bad_dns, dnsmasq, ticking_dns, unbound_tls  # noqa: F401 - fixtures
from tests.sources.probers import Probed, assert_retried, blackbox_module, source_config

OURS_ONLY = ("probes_total", "probe_last_result", "probe_latency_seconds_bucket", "probe_latency_seconds_sum",
             "probe_latency_seconds_count")
COUNTS = ("probe_dns_answer_rrs", "probe_dns_authority_rrs", "probe_dns_additional_rrs", "probe_dns_query_succeeded",
          "probe_success")

# (module keys, expected verdict) probed on dnsmasq's zone by both
CASES = {
    "a_record": ({"query_name": "www.example.test", "query_type": "A"}, True),
    "aaaa_record": ({"query_name": "www.example.test", "query_type": "AAAA"}, True),
    "soa_serial": ({"query_name": "example.test", "query_type": "SOA"}, True),
    "mx_over_tcp": ({"query_name": "example.test", "query_type": "MX", "transport_protocol": "tcp"}, True),
    "any_default_type": ({"query_name": "www.example.test"}, True),
    "nxdomain": ({"query_name": "missing.example.test", "query_type": "A"}, False),
    "nxdomain_accepted": ({"query_name": "missing.example.test", "query_type": "A",
                           "valid_rcodes": ["NXDOMAIN"]}, True),
    "answer_must_match": ({"query_name": "www.example.test", "query_type": "A",
                           "validate_answer_rrs": {"fail_if_not_matches_regexp": [r"www\.example\.test\.\t600\tIN\tA"
                                                                                  r"\t192\.0\.2\.10"]}}, True),
    "answer_matches_forbidden": ({"query_name": "www.example.test", "query_type": "A",
                                  "validate_answer_rrs": {"fail_if_matches_regexp": ["192\\.0\\.2\\.10"]}}, False),
    "none_matches": ({"query_name": "example.test", "query_type": "MX",
                      "validate_answer_rrs": {"fail_if_none_matches_regexp": ["mail2\\."]}}, False),
    "all_match_blackbox_rule": ({"query_name": "example.test", "query_type": "MX",
                                 "validate_authority_rrs": {"fail_if_all_match_regexp": ["NS"]}}, True),
    "empty_authority_needs_records": ({"query_name": "example.test", "query_type": "SOA",
                                       "validate_additional_rrs": {"fail_if_not_matches_regexp": ["."]}}, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_same_verdict_series_and_counts_as_blackbox(case, dnsmasq, blackbox, context):  # noqa: F811
    module, verdict = CASES[case]
    target = f"127.0.0.1:{dnsmasq}"
    exporter = blackbox(blackbox_module("dns_case", "dns", module))
    ours = Probed(context, "dns", target, module)
    result = await ours.probe()
    theirs = exporter.probe("dns_case", target)
    page = ours.page()
    assert theirs.value("probe_success") == float(verdict), exporter.debug("dns_case", target)
    assert (result == "success") == verdict, ours.reason
    values = [*COUNTS, *(["probe_dns_serial"] if module.get("query_type") == "SOA" else [])]
    compare(page, theirs, ours_only=OURS_ONLY, values=values)
    if module.get("query_type") == "SOA":
        assert page.value("probe_dns_serial") == SERIAL
    assert page.value("probes_total", result=result) == 1


async def test_ipv6_server_address(dnsmasq, blackbox, context):  # noqa: F811
    module = {"query_name": "www.example.test", "query_type": "AAAA"}
    target = f"[::1]:{dnsmasq}"
    exporter = blackbox(blackbox_module("dns6", "dns", module))
    ours = Probed(context, "dns", target, module)
    assert await ours.probe() == "success", ours.reason
    theirs = exporter.probe("dns6", target)
    compare(ours.page(), theirs, ours_only=OURS_ONLY, values=[*COUNTS, "probe_ip_protocol"])
    assert ours.page().value("probe_ip_protocol") == 6


async def test_failure_reasons_say_what_went_wrong(dnsmasq, context):  # noqa: F811
    ours = Probed(context, "dns", f"127.0.0.1:{dnsmasq}", {"query_name": "missing.example.test", "query_type": "A"})
    assert await ours.probe() == "rcode"
    assert ours.reason == "rcode NXDOMAIN, expected NOERROR"
    ours = Probed(context, "dns", f"127.0.0.1:{dnsmasq}", {
        "query_name": "www.example.test", "query_type": "A",
        "validate_answer_rrs": {"fail_if_matches_regexp": ["192\\.0\\.2\\."]}})
    assert await ours.probe() == "validation"
    assert ours.reason == ("answer section: 'www.example.test.\\t600\\tIN\\tA\\t192.0.2.10' matches "
                           "fail_if_matches_regexp '192\\\\.0\\\\.2\\\\.'")
    page = ours.page()
    assert page.value("probe_success") == 0
    assert page.value("probe_dns_answer_rrs") == 1  # the answer arrived: its counts are shown
    assert page.by("probes_total", "result") == {result: float(result == "validation")
                                                 for result in (*COMMON_RESULTS, *RESULTS)}


async def test_dns_over_tls_against_unbound(unbound_tls, blackbox, context):  # noqa: F811
    module = {"query_name": "example.test", "query_type": "SOA", "transport_protocol": "tcp", "dns_over_tls": True,
              "tls_config": {"ca_file": str(unbound_tls.cert), "server_name": unbound_tls.name}}
    target = f"127.0.0.1:{unbound_tls.port}"
    exporter = blackbox(blackbox_module("dot", "dns", module))
    ours = Probed(context, "dns", target, module)
    assert await ours.probe() == "success", ours.reason
    theirs = exporter.probe("dot", target)
    assert theirs.value("probe_success") == 1, exporter.debug("dot", target)
    page = ours.page()
    assert page.value("probe_dns_serial") == SERIAL
    assert page.value("probe_tls_version_info", version="TLS 1.3") == 1
    assert page.value("probe_ssl_earliest_cert_expiry") > time.time()
    compare(page, theirs, ours_only=(*OURS_ONLY, "probe_ssl_earliest_cert_expiry", "probe_tls_version_info",
                                     "probe_ssl_last_chain_expiry_timestamp_seconds", "probe_ssl_last_chain_info",
                                     "probe_tls_cipher_info"), values=[*COUNTS, "probe_dns_serial"])

    wrong_name = {**module, "tls_config": {"ca_file": str(unbound_tls.cert), "server_name": "other.example.test"}}
    ours = Probed(context, "dns", target, wrong_name)
    assert await ours.probe() == "tls_error"
    assert "other.example.test" in ours.reason


async def test_dns_over_tls_lost_as_its_handshake_ends(unbound_tls, context, tls_lost_as_it_ends):  # noqa: F811
    """asyncio gives no TLS transport then: the target closing the connection, not an error out of the prober."""
    module = {"query_name": "example.test", "query_type": "SOA", "transport_protocol": "tcp", "dns_over_tls": True,
              "tls_config": {"ca_file": str(unbound_tls.cert), "server_name": unbound_tls.name}}
    ours = Probed(context, "dns", f"127.0.0.1:{unbound_tls.port}", module)
    assert await ours.probe() == "connection_error"
    assert ours.reason == "the target closed the connection"


@pytest.mark.parametrize(("mode", "transport", "result", "reason"), [
    ("garbage", "udp", "invalid_response", "the answer is not a DNS message"),
    ("garbage", "tcp", "invalid_response", "the answer is not a DNS message"),
    ("truncated", "udp", "truncated", "the answer is truncated (TC bit)"),
    ("wrong_id", "udp", "invalid_response", "is not the answer to the query sent"),
    ("wrong_id", "tcp", "invalid_response", "is not the answer to the query sent"),
    ("short", "tcp", "invalid_response", "the server closed the connection after 3 of 512 bytes"),
])
async def test_a_server_that_misbehaves(bad_dns, context, mode, transport, result, reason):  # noqa: F811
    server = bad_dns(mode)
    ours = Probed(context, "dns", f"127.0.0.1:{server.port}",
                  {"query_name": "www.example.test", "query_type": "A", "transport_protocol": transport})
    assert await ours.probe() == result
    assert reason in ours.reason
    assert ours.page().value("probe_success") == 0


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_a_silent_server_times_out_on_time(bad_dns, context, transport):  # noqa: F811
    server = bad_dns("silent")  # over TLS: the connection is accepted, the handshake never answered
    keys = {"dns_over_tls": True, "tls_config": {"insecure_skip_verify": True}} if transport == "tls" else \
        {"transport_protocol": transport}
    ours = Probed(context, "dns", f"127.0.0.1:{server.port}",
                  {"query_name": "www.example.test", "query_type": "A", **keys}, timeout="500ms")
    started = time.perf_counter()
    assert await ours.probe() == "timeout"
    assert 0.45 < time.perf_counter() - started < 1.5
    if transport != "tls":  # over TLS the server reads the client's hello as a query and stays silent
        assert server.queries == 1
    page = ours.page()
    assert page.value("probe_dns_query_succeeded") == 0
    assert page.value("probe_dns_answer_rrs") == 0


async def test_a_failure_a_retry_papered_over_is_still_counted(bad_dns, context):  # noqa: F811
    server = bad_dns("flaky")  # silent to the first query, answers the next
    ours = Probed(context, "dns", f"127.0.0.1:{server.port}",
                  {"query_name": "www.example.test", "query_type": "A", "retries": 1}, timeout="300ms")
    assert await ours.probe() == "success", ours.reason
    assert server.queries == 2
    assert_retried(ours.page(), "dns", failed="timeout")


async def test_nothing_listening(context):
    from tests.helpers import free_port

    ours = Probed(context, "dns", f"127.0.0.1:{free_port()}", {"query_name": "www.example.test"})
    assert await ours.probe() == "connection_refused"


def test_config_errors_name_the_line():
    with pytest.raises(ConfigError) as error:
        source_config("dns", "bad", "127.0.0.1", {"query_name": "example.test", "query_type": "AXFRX",
                                                  "valid_rcodes": ["NOPE"]})
    text = str(error.value)
    assert "agent.yaml:7: dns[0].query_type: 'AXFRX' is not a DNS record type" in text
    assert "dns[0].valid_rcodes" in text and "'NOPE' is not an rcode" in text
    with pytest.raises(ConfigError, match="dns\\[0\\].query_name"):
        source_config("dns", "bad", "127.0.0.1", {"query_type": "A"})
    with pytest.raises(ConfigError, match="is not host:port"):
        source_config("dns", "bad", "127.0.0.1:53:53", {"query_name": "example.test"})


def test_the_kind_declares_what_a_probe_writes():
    names = {name for spec in KIND.builtin for name in spec.sample_names}
    assert {"probe_dns_answer_rrs", "probe_dns_serial", "probe_dns_duration_seconds", "probe_ip_protocol",
            "probe_success", "probes_total"} <= names


def _response(query_name: str, rdtype: str, records: list[str], authority: list[str] = (), edns: bool = False,
              ) -> bytes:
    """An answer to our query for (query_name, rdtype), as a server would write it (dnspython builds it)."""
    import dns.message
    import dns.rrset

    query = dns.message.make_query(query_name, rdtype, use_edns=False)
    response = dns.message.make_response(query)
    for text in records:
        response.answer.append(dns.rrset.from_text(query_name, 300, "IN", rdtype, text))
    for text in authority:
        response.authority.append(dns.rrset.from_text("example.test.", 300, "IN", "NS", text))
    if edns:
        response.use_edns(0, payload=1232)
    return response.to_wire()


# answers that a prober may see again, each with its query (name, type)
BASES = {
    "a": ("www.example.test.", "A", _response("www.example.test.", "A", ["192.0.2.10", "192.0.2.11"],
                                              ["ns.example.test."])),
    "soa": ("example.test.", "SOA", _response("example.test.", "SOA", [
        "ns.example.test. hostmaster.example.test. 2024010101 1200 180 1209600 600"])),
    "mx_edns": ("example.test.", "MX", _response("example.test.", "MX", ["10 mail.example.test."], edns=True)),
}


def outcome(verdict) -> tuple:  # noqa: ANN001
    """What a verdict shows on /metrics: counts, serial, the failure and its reason."""
    return (verdict.not_a_message, verdict.answers_query, verdict.question, verdict.counts, verdict.serial,
            verdict.failure)


@pytest.mark.parametrize("validated", [False, True])
@pytest.mark.parametrize("base", sorted(BASES))
def test_a_remembered_verdict_is_the_verdict_a_fresh_parse_gives(base, validated):
    """The prober remembers the verdicts of answers it parsed (keyed without the id and, unless a regexp reads
    them, the TTLs): whatever bytes arrive after an answer it remembers (TTLs counted down, a record changed,
    truncation, garbage), its verdict is the one dnspython's parse of those bytes gives."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from agent.sources.dns.prober import DnsProber

    name, rdtype, answer = BASES[base]
    module = source_config("dns", "d", "127.0.0.1", {
        "query_name": name, "query_type": rdtype,
        **({"validate_answer_rrs": {"fail_if_not_matches_regexp": ["\t300\t"]}} if validated else {})}).module
    edits = st.lists(st.tuples(st.integers(0, len(answer) - 1), st.integers(0, 255)), max_size=4)
    # the TTL fields: the records' (300) and an OPT record's (its extended rcode, EDNS version and flags)
    ttl_fields = [i for i in range(len(answer) - 3) if answer[i:i + 4] == (300).to_bytes(4, "big")]
    opt = answer.find(b"\x00\x00\x29\x04\xd0")  # root name, type OPT, payload 1232
    ttl_fields += [opt + 5] if opt > 0 else []
    ttl_edits = st.lists(st.tuples(st.sampled_from([field + i for field in ttl_fields for i in range(4)]),
                                   st.integers(0, 255)), max_size=3)

    @settings(max_examples=examples(), deadline=None, suppress_health_check=list(HealthCheck))
    @given(edits=edits, ttl_edits=ttl_edits, cut=st.integers(0, 8), tail=st.binary(max_size=3))
    def check(edits, ttl_edits, cut, tail):  # noqa: ANN001
        seen = DnsProber(module)
        seen.verdict(answer)
        changed = bytearray(answer)
        for position, value in edits + ttl_edits:  # anywhere, and in the TTLs (the likely change: counting down)
            changed[position] = value
        arrived = bytes(changed[:len(changed) - cut]) + tail
        remembered, parsed = seen.verdict(arrived), DnsProber(module).parse(arrived)
        assert outcome(remembered) == outcome(parsed)

    check()


@pytest.mark.parametrize(("validate", "results"), [
    ({}, ["success", "success"]),  # the TTL is no part of the verdict
    ({"validate_answer_rrs": {"fail_if_matches_regexp": ["\t2147483645\t"]}}, ["success", "validation"]),
])
async def test_answers_that_differ_only_in_their_ttls(ticking_dns, context, validate, results):  # noqa: F811
    """A resolver's answers differ in their TTLs from one probe to the next: the record counts and the verdict
    are the same, unless a validation regexp reads the TTL, which then sees each answer's own."""
    ours = Probed(context, "dns", f"127.0.0.1:{ticking_dns}", {"query_name": "www.example.test",
                                                               "query_type": "A", **validate})
    for expected in results:
        assert await ours.probe() == expected, ours.reason
        page = ours.page()
        assert (page.value("probe_dns_answer_rrs"), page.value("probe_dns_authority_rrs")) == (1, 1)


def test_remembered_verdicts_are_bounded():
    """A server whose answers never repeat costs a bounded memory: the oldest verdicts are forgotten."""
    from agent.sources.dns.prober import VERDICTS_KEPT, DnsProber
    from tests.sources.dns_servers import ticking_answer

    module = source_config("dns", "d", "127.0.0.1", {"query_name": "www.example.test", "query_type": "A"}).module
    prober = DnsProber(module)
    query = prober._wire
    for number in range(VERDICTS_KEPT + 500):
        verdict = prober.verdict(ticking_answer(query, 600, (10 << 24 | number).to_bytes(4, "big")))
        assert verdict.failure is None and verdict.counts == (1, 1, 0)
    assert len(prober._verdicts) == VERDICTS_KEPT
