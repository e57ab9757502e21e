"""One DNS query to a server, judged the way blackbox_exporter's dns prober judges it.

The query is built once per source with dnspython (only its id changes per probe) and sent over a socket of the
probe's own: UDP, TCP (two-byte length prefix) or TLS (DNS over TLS, RFC 7858). The answer is parsed by dnspython
with one record per RRset, so the section counts are blackbox's (records, duplicates included). Phases as
blackbox's: ``resolve`` (the server's name), ``connect`` (socket, TCP handshake and TLS), ``request`` (query sent
to answer read).

Where we differ from blackbox, on purpose: a UDP answer with the TC bit fails the probe (``truncated``: its
sections are incomplete, and validating half an answer proves nothing), and an answer that is not the answer to
the query sent (another id or question) fails it (``invalid_response``) instead of being taken.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import struct
import time
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from agent.config import regex as user_regex
from agent.sources.dns.config import (
    DURATION,
    PHASES,
    QUERY_SUCCEEDED,
    SECTION_COUNTS,
    SERIAL,
    DnsModule,
    RecordValidator,
)
from agent.sources.probe.net import resolve, split_host_port
from agent.sources.probe.result import ProbeFailed

if TYPE_CHECKING:
    from agent.sources.probe.result import ProbeResult

_PHASE_KEYS = {phase: (phase,) for phase in PHASES}
_MAX_MESSAGE = 65535
# What dnspython raises for bytes that are not a DNS message (FormError, ShortHeader, TrailingJunk, BadLabelType,
# ... derive from DNSException; a few malformed records surface as plain ValueError or struct errors).
_NOT_A_MESSAGE = (dns.exception.DNSException, ValueError, struct.error, IndexError, UnicodeError)


def record_text(rrset: dns.rrset.RRset) -> str:
    """A one-record RRset as blackbox's regexps see it (Go's ``RR.String()``): tab-separated name, TTL, class,
    type and data."""
    rdata = rrset[0]
    return (f"{rrset.name.to_text()}\t{rrset.ttl}\t{dns.rdataclass.to_text(rrset.rdclass)}\t"
            f"{dns.rdatatype.to_text(rrset.rdtype)}\t{rdata.to_text()}")


class _CompiledValidator:
    """One section's four regexp lists, compiled."""

    def __init__(self, section: str, validator: RecordValidator):
        self.section = section
        self.fail_if_matches = [user_regex.compile(p) for p in validator.fail_if_matches_regexp]
        self.fail_if_all_match = [user_regex.compile(p) for p in validator.fail_if_all_match_regexp]
        self.fail_if_not_matches = [user_regex.compile(p) for p in validator.fail_if_not_matches_regexp]
        self.fail_if_none_matches = [user_regex.compile(p) for p in validator.fail_if_none_matches_regexp]

    def problem(self, records: list[str]) -> str | None:
        """Why these records fail the validation, or None: blackbox's rules, in its order."""
        where = f"{self.section} section"
        if not records and self.fail_if_not_matches:
            return f"{where} is empty, and fail_if_not_matches_regexp needs records"
        if not records and self.fail_if_none_matches:
            return f"{where} is empty, and fail_if_none_matches_regexp needs records"
        for record in records:
            for regex in self.fail_if_matches:
                if regex.search(record):
                    return f"{where}: {record!r} matches fail_if_matches_regexp {regex.pattern!r}"
            for regex in self.fail_if_not_matches:
                if not regex.search(record):
                    return f"{where}: {record!r} does not match fail_if_not_matches_regexp {regex.pattern!r}"
        for record in records:  # blackbox's rule, whatever the name says: fail unless every record matches
            for regex in self.fail_if_all_match:
                if not regex.search(record):
                    return f"{where}: {record!r} does not match fail_if_all_match_regexp {regex.pattern!r}"
        for regex in self.fail_if_none_matches:
            if not any(regex.search(record) for record in records):
                return f"{where}: no record matches fail_if_none_matches_regexp {regex.pattern!r}"
        return None


class DnsProber:
    """The compiled module of one source, shared by its targets."""

    def __init__(self, module: DnsModule, ssl_context: ssl.SSLContext | None = None):
        self.module = module
        self.ssl_context = ssl_context if module.dns_over_tls else None
        self.rdtype = dns.rdatatype.from_text(module.query_type)
        query = dns.message.make_query(module.query_name, self.rdtype, dns.rdataclass.from_text(module.query_class),
                                       use_edns=False, flags=dns.flags.RD if module.recursion_desired else 0)
        self._query = query
        self._wire = query.to_wire()  # bytes 0-1 are the id, replaced per probe
        self.valid_rcodes = frozenset(dns.rcode.from_text(rcode) for rcode in module.valid_rcodes)
        self.validators = [_CompiledValidator(section, validator) for section, validator in module.validate.items()]
        self.default_port = 853 if module.dns_over_tls else 53

    async def probe(self, target: str, result: ProbeResult) -> None:
        module = self.module
        for key in _PHASE_KEYS.values():
            result.set(DURATION, 0.0, key)
        host, port = split_host_port(target, self.default_port)
        started = time.perf_counter()
        ip = await resolve(host, module.ip, result)
        result.add(DURATION, time.perf_counter() - started, _PHASE_KEYS["resolve"])
        query_id = secrets.randbits(16)
        wire = query_id.to_bytes(2, "big") + self._wire[2:]
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        if module.transport_protocol == "udp":
            answer = await self._exchange_udp(family, ip, port, wire, result)
        else:
            answer = await self._exchange_stream(family, ip, port, host, wire, result)
        self._judge(answer, query_id, result)

    async def _exchange_udp(self, family: int, ip: str, port: int, wire: bytes, result: ProbeResult) -> bytes:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if self.module.ip.source_ip:
                sock.bind((self.module.ip.source_ip, 0))
            # connected: only the server's datagrams reach us, and an ICMP port unreachable comes back as
            # ConnectionRefusedError
            await loop.sock_connect(sock, (ip, port))
            sent = time.perf_counter()
            result.add(DURATION, sent - started, _PHASE_KEYS["connect"])
            try:
                await loop.sock_sendall(sock, wire)
                return await loop.sock_recv(sock, _MAX_MESSAGE)
            finally:
                result.add(DURATION, time.perf_counter() - sent, _PHASE_KEYS["request"])
        finally:
            sock.close()

    async def _exchange_stream(self, family: int, ip: str, port: int, host: str, wire: bytes,
                               result: ProbeResult) -> bytes:
        started = time.perf_counter()
        tls = self.ssl_context
        source = self.module.ip.source_ip
        reader, writer = await asyncio.open_connection(
            ip, port, family=family, local_addr=(source, 0) if source else None, ssl=tls,
            server_hostname=(self.module.tls.server_name or host) if tls else None,
            ssl_handshake_timeout=None if tls is None else max(result.deadline - asyncio.get_running_loop().time(),
                                                                0.001))
        try:
            if tls is not None:
                result.tls(writer.get_extra_info("ssl_object"))
            sent = time.perf_counter()
            result.add(DURATION, sent - started, _PHASE_KEYS["connect"])
            try:
                writer.write(len(wire).to_bytes(2, "big") + wire)
                length = int.from_bytes(await _read_exactly(reader, 2, "length"), "big")
                return await _read_exactly(reader, length, "message")
            finally:
                result.add(DURATION, time.perf_counter() - sent, _PHASE_KEYS["request"])
        finally:
            writer.transport.abort()  # no close_notify wait on a server that stopped reading

    def _judge(self, answer: bytes, query_id: int, result: ProbeResult) -> None:
        try:
            message = dns.message.from_wire(answer, one_rr_per_rrset=True, ignore_trailing=True)
        except _NOT_A_MESSAGE as exc:
            raise ProbeFailed("invalid_response", f"the answer is not a DNS message: {exc}"[:300]) from None
        if message.id != query_id or not message.flags & dns.flags.QR or message.question != self._query.question:
            raise ProbeFailed("invalid_response", f"the answer (id {message.id}, question "
                              f"{_question(message)!r}) is not the answer to the query sent "
                              f"(id {query_id}, question {_question(self._query)!r})"[:300])
        sections = {"answer": message.answer, "authority": message.authority, "additional": message.additional}
        for section, family in SECTION_COUNTS.items():
            result.set(family, len(sections[section]))
        result.set(QUERY_SUCCEEDED, 1)
        if self.rdtype == dns.rdatatype.SOA:
            serials = [rrset[0].serial for rrset in message.answer if rrset.rdtype == dns.rdatatype.SOA]
            result.set(SERIAL, serials[-1] if serials else 0)
        if message.flags & dns.flags.TC and self.module.transport_protocol == "udp":
            raise ProbeFailed("truncated", "the answer is truncated (TC bit): its records are incomplete; "
                              "transport_protocol: tcp gets the whole answer")
        rcode = message.rcode()
        if rcode not in self.valid_rcodes:
            raise ProbeFailed("rcode", f"rcode {dns.rcode.to_text(rcode)}, expected "
                              f"{' or '.join(self.module.valid_rcodes)}")
        for validator in self.validators:
            problem = validator.problem([record_text(rrset) for rrset in sections[validator.section]])
            if problem is not None:
                raise ProbeFailed("validation", problem[:300])


def _question(message: dns.message.Message) -> str:
    return "; ".join(f"{rrset.name} {dns.rdataclass.to_text(rrset.rdclass)} {dns.rdatatype.to_text(rrset.rdtype)}"
                     for rrset in message.question) or "none"


async def _read_exactly(reader: asyncio.StreamReader, size: int, what: str) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise ProbeFailed("invalid_response", f"the server closed the connection after {len(exc.partial)} of "
                          f"{size} bytes of the answer's {what}") from None
