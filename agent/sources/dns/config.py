"""DNS source config: blackbox_exporter's dns module keys, and the families a DNS probe writes.

Query types, classes and rcodes are checked against dnspython's tables, imported here only when a DNS source is
parsed: an agent without one never loads dnspython.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.config import regex, values
from agent.config.fields import Fields
from agent.formatting import excerpt
from agent.series.family import gauge
from agent.sources.probe.client import TlsConfig, parse_tls_config
from agent.sources.probe.net import IpConfig, parse_ip_config

TRANSPORTS = ("udp", "tcp")
SECTIONS = ("answer", "authority", "additional")
PHASES = ("resolve", "connect", "request")
# probes_total{result} values of a DNS probe beyond the ones every prober has
RESULTS = (
    "invalid_response",  # the answer is not a DNS message, or not the answer to the query sent
    "truncated",         # a UDP answer with the TC bit: the records are incomplete (use transport_protocol: tcp)
    "rcode",             # the answer's rcode is not one of valid_rcodes
    "validation",        # a validate_*_rrs regexp failed the probe
)

DURATION = gauge("probe_dns_duration_seconds", "Duration of the DNS query by phase", ["phase"])
ANSWER_RRS = gauge("probe_dns_answer_rrs", "Number of records in the answer section")
AUTHORITY_RRS = gauge("probe_dns_authority_rrs", "Number of records in the authority section")
ADDITIONAL_RRS = gauge("probe_dns_additional_rrs", "Number of records in the additional section")
QUERY_SUCCEEDED = gauge("probe_dns_query_succeeded", "Whether an answer to the query arrived")
SERIAL = gauge("probe_dns_serial", "Serial of the zone, from the SOA record of an SOA query's answer")
FAMILIES = (DURATION, ANSWER_RRS, AUTHORITY_RRS, ADDITIONAL_RRS, QUERY_SUCCEEDED, SERIAL)
SECTION_COUNTS = {"answer": ANSWER_RRS, "authority": AUTHORITY_RRS, "additional": ADDITIONAL_RRS}


@dataclass(frozen=True)
class RecordValidator:
    """blackbox's four regexp lists for one section; each regexp is searched in every record's text
    (``name<TAB>ttl<TAB>class<TAB>type<TAB>data``, the form blackbox matches)."""

    fail_if_matches_regexp: tuple[str, ...] = ()       # fail if any record matches any of them
    fail_if_all_match_regexp: tuple[str, ...] = ()     # blackbox's behaviour, not its name: fail unless every
                                                       # record matches (an empty section passes)
    fail_if_not_matches_regexp: tuple[str, ...] = ()   # fail if a record does not match (each regexp)
    fail_if_none_matches_regexp: tuple[str, ...] = ()  # fail if no record matches (each regexp)

    def __bool__(self) -> bool:
        return any((self.fail_if_matches_regexp, self.fail_if_all_match_regexp, self.fail_if_not_matches_regexp,
                    self.fail_if_none_matches_regexp))


@dataclass(frozen=True)
class DnsModule:
    query_name: str
    query_type: str = "ANY"  # blackbox's default
    query_class: str = "IN"
    transport_protocol: str = "udp"
    dns_over_tls: bool = False
    tls: TlsConfig = field(default_factory=TlsConfig)
    recursion_desired: bool = True
    valid_rcodes: tuple[str, ...] = ("NOERROR",)
    validate: dict[str, RecordValidator] = field(default_factory=dict)  # section -> validator (set ones only)
    ip: IpConfig = field(default_factory=IpConfig)

    def __hash__(self) -> int:  # validate is a dict: hash what identifies a module
        return hash((self.query_name, self.query_type, self.query_class, self.transport_protocol, self.tls))


def _query_type(value: Any) -> str:
    import dns.rdatatype

    text = values.nonempty_string(value).upper()
    try:
        dns.rdatatype.from_text(text)
    except Exception:  # dnspython raises its own UnknownRdatatype, or ValueError for TYPE<n> out of range
        raise ValueError(f"{excerpt(text)} is not a DNS record type (A, AAAA, MX, SOA, TXT, ANY, TYPE65, ...)"
                         ) from None
    return text


def _query_class(value: Any) -> str:
    import dns.rdataclass

    text = values.nonempty_string(value).upper()
    try:
        dns.rdataclass.from_text(text)
    except Exception:
        raise ValueError(f"{excerpt(text)} is not a DNS class (IN, CH, HS, ANY)") from None
    return text


def _rcode(value: Any) -> str:
    import dns.rcode

    text = values.nonempty_string(value).upper()
    try:
        dns.rcode.from_text(text)
    except Exception:
        raise ValueError(f"{excerpt(text)} is not an rcode (NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ...)") from None
    return text


def _query_name(value: Any) -> str:
    import dns.name

    text = values.nonempty_string(value)
    try:
        dns.name.from_text(text)
    except Exception as exc:
        raise ValueError(f"{excerpt(text)} is not a domain name: {exc}") from None
    return text


def _regexes(value: Any) -> tuple[str, ...]:
    return tuple(p.pattern for p in values.list_of(regex.parse)(value))


def _validator(section: Fields | None) -> RecordValidator:
    if section is None:
        return RecordValidator()
    validator = RecordValidator(*(section.get(key, _regexes, ()) for key in (
        "fail_if_matches_regexp", "fail_if_all_match_regexp", "fail_if_not_matches_regexp",
        "fail_if_none_matches_regexp")))
    section.finish()
    return validator


def parse_module(fields: Fields) -> DnsModule | None:
    """blackbox's dns module keys (the keys every prober has are read by the framework)."""
    ip = parse_ip_config(fields)
    tls = parse_tls_config(fields.section("tls_config"))
    name = fields.get("query_name", _query_name)
    query_type = fields.get("query_type", _query_type, "ANY")
    query_class = fields.get("query_class", _query_class, "IN")
    transport = fields.get("transport_protocol", values.one_of(*TRANSPORTS), "udp")
    over_tls = fields.get("dns_over_tls", values.boolean, False)
    if over_tls and transport != "tcp" and fields.has("transport_protocol"):
        fields.error("dns_over_tls", "DNS over TLS runs over TCP: set transport_protocol: tcp, or leave it out")
    recursion = fields.get("recursion_desired", values.boolean, True)
    rcodes = fields.get("valid_rcodes", values.list_of(_rcode), ["NOERROR"])
    if rcodes == []:
        fields.error("valid_rcodes", "lists no rcode: no answer could ever succeed")
    validate = {section: _validator(fields.section(f"validate_{section}_rrs")) for section in SECTIONS}
    if name is None:
        return None
    return DnsModule(name, query_type, query_class, "tcp" if over_tls else transport, over_tls, tls, recursion,
                     tuple(rcodes or ("NOERROR",)), {k: v for k, v in validate.items() if v}, ip)
