"""One DNS query to a server, judged the way blackbox_exporter's dns prober judges it.

The query is built once per source with dnspython (only its id changes per probe) and sent over a socket of the
probe's own: UDP, TCP (two-byte length prefix) or TLS (DNS over TLS, RFC 7858). The answer is parsed by dnspython
with one record per RRset, so the section counts are blackbox's (records, duplicates included). Phases as
blackbox's: ``resolve`` (the server's name), ``connect`` (socket, TCP handshake and TLS), ``request`` (query sent
to answer read).

Where we differ from blackbox, on purpose: a UDP answer with the TC bit fails the probe (``truncated``: its
sections are incomplete, and validating half an answer proves nothing), and an answer that is not the answer to
the query sent (another id or question) fails it (``invalid_response``) instead of being taken.

Parsing the answer is most of a probe's CPU (about three quarters: dnspython builds a name, rdata and RRset
object per record). What an answer says does not depend on its id, nor (but for what validation regexps read)
on its records' TTLs, and a server answering the same question sends the same bytes again but for those (an
authoritative server exactly; a caching resolver with its TTLs counting down). So each prober keeps the verdict
of the last answers it parsed, keyed by the bytes after the id with the TTLs zeroed (``verdict_key``), and
parses only an answer it has not seen; the ``validate_*_rrs`` regexps still read every answer's records with
that answer's TTLs.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import socket
import ssl
import struct
import time
from dataclasses import dataclass, replace
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
from agent.sources.probe.stream import release, start_tls_over
from agent.sources.probe.tls import record_tls

if TYPE_CHECKING:
    from agent.sources.probe.result import ProbeResult

_PHASE_KEYS = {phase: (phase,) for phase in PHASES}
_MAX_MESSAGE = 65535
# Distinct answers a prober (a source's targets share one) remembers the verdict of, oldest forgotten first, and
# the longest answer remembered (a UDP answer to our queries, without EDNS, has at most 512 bytes): at most about
# 1.5 MiB for a source whose answers never repeat, a few hundred KiB for a thousand targets' usual answers.
VERDICTS_KEPT = 1024
VERDICT_BYTES = 1232
_COUNT = struct.Struct("!H")
_COUNTS = struct.Struct("!HHH")
_RR_HEADER = struct.Struct("!HHIH")  # a record's type, class, TTL and data length, after its name
_TTL_NOT_A_TTL = (41, 250)  # OPT (the TTL field holds the extended rcode and flags) and TSIG
# What dnspython raises for bytes that are not a DNS message (FormError, ShortHeader, TrailingJunk, BadLabelType,
# ... derive from DNSException; a few malformed records surface as plain ValueError or struct errors).
_NOT_A_MESSAGE = (dns.exception.DNSException, ValueError, struct.error, IndexError, UnicodeError)


def record_parts(rrset: dns.rrset.RRset) -> tuple[str, str]:
    """A one-record RRset as blackbox's regexps see it (Go's ``RR.String()``: tab-separated name, TTL, class,
    type and data), as the text before its TTL and the text after it."""
    data = rrset[0].to_text() if rrset else ""
    return (f"{rrset.name.to_text()}\t",
            f"\t{dns.rdataclass.to_text(rrset.rdclass)}\t{dns.rdatatype.to_text(rrset.rdtype)}\t{data}")


def record_text(rrset: dns.rrset.RRset) -> str:
    before, after = record_parts(rrset)
    return f"{before}{rrset.ttl}{after}"


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


# A validated section's records without their TTLs: (index of the record in the answer, text before the TTL,
# text after it); the TTLs are read from each answer
Records = tuple[tuple[int, str, str], ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one answer says, whatever its id and (unless keyed whole) its TTLs: computed once per distinct
    answer."""

    not_a_message: str | None = None  # why the bytes are no DNS message, or None
    answers_query: bool = False  # a response (QR) to the question sent
    question: str = "none"  # the answer's question, for the failure reason
    counts: tuple[int, int, int] = (0, 0, 0)  # records in the answer, authority and additional sections
    serial: int | None = None  # of an SOA query's answer
    failure: tuple[str, str] | None = None  # (result, reason): truncated, rcode, validation
    records: tuple[Records, ...] = ()  # per validator, its section's records, when their TTLs are read apart


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
        self._verdicts: dict[bytes, Verdict] = {}  # answer without its id -> its verdict, oldest first

    async def probe(self, target: str, result: ProbeResult) -> None:
        module = self.module
        for key in _PHASE_KEYS.values():
            result.set(DURATION, 0.0, key)
        host, port = _host_port(target, self.default_port)
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
        started = time.perf_counter()
        sock = socket.socket(family, socket.SOCK_DGRAM)  # a new one per query: a random source port, as Go's
        try:
            sock.setblocking(False)
            if self.module.ip.source_ip:
                sock.bind((self.module.ip.source_ip, 0))
            # connected (at once: no handshake for UDP): only the server's datagrams reach us, and an ICMP port
            # unreachable comes back as ConnectionRefusedError
            sock.connect((ip, port))
            sent = time.perf_counter()
            result.add(DURATION, sent - started, _PHASE_KEYS["connect"])
            loop = asyncio.get_running_loop()
            try:
                try:
                    sock.send(wire)  # a fresh socket's buffer is empty: a datagram this small goes out at once
                except BlockingIOError:
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
        reader, writer = await asyncio.open_connection(ip, port, family=family,
                                                       local_addr=(source, 0) if source else None)
        plain = writer.transport  # TLS goes over it (start_tls, never open_connection(ssl=)): release reaches it
        try:
            if tls is not None:
                await start_tls_over(writer, tls, self.module.tls.server_name or host,
                                     ssl_handshake_timeout=max(result.deadline - asyncio.get_running_loop().time(),
                                                               0.001))
                record_tls(result, writer.get_extra_info("ssl_object"))
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
            release(plain)

    def _judge(self, answer: bytes, query_id: int, result: ProbeResult) -> None:
        verdict = self.verdict(answer)
        if verdict.not_a_message is not None:
            raise ProbeFailed("invalid_response", verdict.not_a_message)
        answer_id = int.from_bytes(answer[:2], "big")
        if answer_id != query_id or not verdict.answers_query:
            raise ProbeFailed("invalid_response", f"the answer (id {answer_id}, question {verdict.question!r}) "
                              f"is not the answer to the query sent (id {query_id}, question "
                              f"{_question(self._query)!r})"[:300])
        for family, count in zip(SECTION_COUNTS.values(), verdict.counts, strict=True):
            result.set(family, count)
        result.set(QUERY_SUCCEEDED, 1)
        if verdict.serial is not None:
            result.set(SERIAL, verdict.serial)
        if verdict.failure is not None:
            raise ProbeFailed(*verdict.failure)

    def verdict(self, answer: bytes) -> Verdict:
        """The verdict on an answer, parsed only if the same answer but for its id and its TTLs was not judged
        lately (the validation regexps then read the records with this answer's TTLs)."""
        key, ttls = verdict_key(answer)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self.parse(answer, ttls_apart=ttls is not None)
            if len(key) <= VERDICT_BYTES:
                if len(self._verdicts) >= VERDICTS_KEPT:
                    del self._verdicts[next(iter(self._verdicts))]
                self._verdicts[key] = verdict
        if verdict.records and ttls is not None:
            for validator, records in zip(self.validators, verdict.records, strict=True):
                problem = validator.problem([f"{before}{_ttl(answer, ttls[index])}{after}"
                                             for index, before, after in records])
                if problem is not None:
                    return replace(verdict, failure=("validation", problem[:300]))
        return verdict

    def parse(self, answer: bytes, ttls_apart: bool = False) -> Verdict:
        """The verdict dnspython gives, every record read whole (``ttls_apart``: the validated records kept
        without their TTLs, for ``verdict`` to read them from each answer)."""
        try:
            message = dns.message.from_wire(answer, one_rr_per_rrset=True, ignore_trailing=True)
        except _NOT_A_MESSAGE as exc:
            return Verdict(f"the answer is not a DNS message: {exc}"[:300])
        question = _question(message)
        if not message.flags & dns.flags.QR or message.question != self._query.question:
            return Verdict(question=question)
        counts = (len(message.answer), len(message.authority), len(message.additional))
        serial = None
        if self.rdtype == dns.rdatatype.SOA:
            serials = [rrset[0].serial for rrset in message.answer if rrset.rdtype == dns.rdatatype.SOA]
            serial = serials[-1] if serials else 0
        failure = self._failure(message)
        if failure is not None or not self.validators:
            return Verdict(None, True, question, counts, serial, failure)
        sections = {"answer": message.answer, "authority": message.authority, "additional": message.additional}
        if ttls_apart:  # the index of a record among the answer's: sections in order, OPT and TSIG absent
            first = {"answer": 0, "authority": counts[0], "additional": counts[0] + counts[1]}
            records = tuple(tuple((first[validator.section] + number, *record_parts(rrset))
                                  for number, rrset in enumerate(sections[validator.section]))
                            for validator in self.validators)
            return Verdict(None, True, question, counts, serial, None, records)
        for validator in self.validators:
            problem = validator.problem([record_text(rrset) for rrset in sections[validator.section]])
            if problem is not None:
                return Verdict(None, True, question, counts, serial, ("validation", problem[:300]))
        return Verdict(None, True, question, counts, serial)

    def _failure(self, message: dns.message.Message) -> tuple[str, str] | None:
        if message.flags & dns.flags.TC and self.module.transport_protocol == "udp":
            return ("truncated", "the answer is truncated (TC bit): its records are incomplete; "
                    "transport_protocol: tcp gets the whole answer")
        rcode = message.rcode()
        if rcode not in self.valid_rcodes:
            return "rcode", f"rcode {dns.rcode.to_text(rcode)}, expected {' or '.join(self.module.valid_rcodes)}"
        return None


def verdict_key(answer: bytes) -> tuple[bytes, list[int] | None]:
    """The answer without its id and with every record's TTL zeroed, and where its records' TTLs are: two answers
    with the same key have the same verdict but for what validation regexps read in the TTLs.

    Sound by construction: the walk reads the answer forward only (it skips a compression pointer, never
    follows it) and never reads a TTL field, so two answers with equal keys walk alike and differ in nothing
    but TTL fields, which dnspython's verdict does not read. OPT and TSIG records use the TTL field for other
    things (OPT: the extended rcode), so an answer with one is keyed whole (no TTL positions), as is one the
    walk cannot follow (dnspython will say what is wrong with it)."""
    try:
        questions, records = _COUNT.unpack_from(answer, 4)[0], sum(_COUNTS.unpack_from(answer, 6))
        position = 12
        for _ in range(questions):
            position = _after_name(answer, position) + 4
        ttls = []
        for _ in range(records):
            position = _after_name(answer, position)
            rdtype, _, _, rdlength = _RR_HEADER.unpack_from(answer, position)
            if rdtype in _TTL_NOT_A_TTL:
                return b"w" + answer[2:], None
            ttls.append(position + 4)
            position += _RR_HEADER.size + rdlength
        if position > len(answer):
            return b"w" + answer[2:], None
    except (struct.error, IndexError, ValueError):
        return b"w" + answer[2:], None
    key = bytearray(answer)
    for ttl in ttls:
        key[ttl:ttl + 4] = b"\0\0\0\0"
    key[:2] = b"t"  # the id out; "t" and "w" keep a TTL-free key from ever equalling a whole one
    return bytes(key), ttls


def _ttl(answer: bytes, position: int) -> int:
    ttl = int.from_bytes(answer[position:position + 4], "big")
    return 0 if ttl > 0x7FFFFFFF else ttl  # as dnspython reads it


def _after_name(wire: bytes, position: int) -> int:
    """Where the name at ``position`` ends (labels up to the root label, or up to a compression pointer)."""
    while True:
        length = wire[position]
        if length == 0:
            return position + 1
        if length & 0xC0 == 0xC0:
            return position + 2
        if length & 0xC0:
            raise ValueError("an extended label type")
        position += 1 + length


@functools.lru_cache(maxsize=4096)
def _host_port(target: str, default_port: int) -> tuple[str, int]:
    return split_host_port(target, default_port)


def _question(message: dns.message.Message) -> str:
    return "; ".join(f"{rrset.name} {dns.rdataclass.to_text(rrset.rdclass)} {dns.rdatatype.to_text(rrset.rdtype)}"
                     for rrset in message.question) or "none"


async def _read_exactly(reader: asyncio.StreamReader, size: int, what: str) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise ProbeFailed("invalid_response", f"the server closed the connection after {len(exc.partial)} of "
                          f"{size} bytes of the answer's {what}") from None
