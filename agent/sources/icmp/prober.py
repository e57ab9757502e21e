"""ICMP probes: ``packets`` echo requests ``packet_interval`` apart, blackbox_exporter's series for the probe and
what smokeping users want besides (sent, received, loss, min/avg/max round trip, jitter).

A probe succeeds when at least one request got its reply; the loss is reported, not judged: the last probe's
in ``probe_icmp_packet_loss_ratio``, any window's from the counters kept across probes,
``1 - increase(probe_icmp_packets_received_total[1h]) / increase(probe_icmp_packets_sent_total[1h])``.
With ``packets: 1`` (the default) a probe is blackbox's: one request, success if its reply comes back within the
timeout. Replies are awaited until just before the timeout, so a probe that
lost some packets ends with its counts rather than being cancelled.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import statistics
import time
from typing import TYPE_CHECKING

from agent.sources.icmp.config import (
    DURATION,
    HOP_LIMIT,
    JITTER,
    LOSS,
    PHASES,
    RECEIVED,
    RTT,
    SENT,
    IcmpModule,
)
from agent.sources.icmp.sockets import Echo, EchoSockets, NoSocket
from agent.sources.probe.net import resolve
from agent.sources.probe.result import ProbeFailed

if TYPE_CHECKING:
    from agent.sources.probe.result import ProbeResult

_PHASE_KEYS = {phase: (phase,) for phase in PHASES}
_PAYLOAD_PREFIX = b"kpi-agent "


def reply_wait_margin(timeout: float) -> float:
    """How long before the probe's deadline it stops waiting for replies, to record what it has."""
    return min(0.05, timeout * 0.1)


class IcmpProber:
    """The settings of one source, shared by its targets; the sockets are the agent's."""

    def __init__(self, module: IcmpModule, sockets: EchoSockets):
        self.module = module
        self.sockets = sockets

    def _payload(self) -> bytes:
        """This probe's payload: a random cookie (so a reply to someone else's request with our sequence number
        is not taken), padded to payload_size."""
        size = self.module.payload_size
        cookie = _PAYLOAD_PREFIX + secrets.token_bytes(8)
        return (cookie * (size // len(cookie) + 1))[:size]

    async def probe(self, target: str, result: ProbeResult) -> None:
        module = self.module
        for key in _PHASE_KEYS.values():
            result.set(DURATION, 0.0, key)
        started = time.perf_counter()
        address = await resolve(target, module.ip, result)
        setup_started = time.perf_counter()
        result.add(DURATION, setup_started - started, _PHASE_KEYS["resolve"])
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            sock = self.sockets.get(family, module.ip.source_ip, module.dont_fragment)
        except NoSocket as exc:
            raise ProbeFailed("no_socket", str(exc)) from None
        payload = self._payload()
        result.add(DURATION, time.perf_counter() - setup_started, _PHASE_KEYS["setup"])
        result.set(LOSS, 1.0)
        echoes: list[Echo] = []
        refused: OSError | None = None
        loop = asyncio.get_running_loop()
        first = loop.time()
        try:
            for number in range(module.packets):
                if number:
                    await asyncio.sleep(max(0.0, first + number * module.packet_interval - loop.time()))
                result.count(SENT)  # a request the kernel refuses is sent and lost, as on the wire
                try:
                    echoes.append(sock.send(address, payload, module.ttl))
                except OSError as exc:  # refused by the kernel (no route, a firewall): this request is lost
                    refused = exc
            if refused is not None and not echoes:
                raise refused  # nothing went out: the reason is the kernel's, not a timeout
            wait = result.deadline - reply_wait_margin(result.timeout) - loop.time()
            if wait > 0:
                await asyncio.wait([echo.reply for echo in echoes], timeout=wait)
        finally:
            sock.forget(echoes)
        self._record(address, module.packets, echoes, result)

    def _record(self, address: str, sent: int, echoes: list[Echo], result: ProbeResult) -> None:
        replies = [echo.reply.result() for echo in echoes if echo.reply.done() and not echo.reply.cancelled()]
        result.count(RECEIVED, len(replies))
        result.set(LOSS, 1 - len(replies) / sent)
        if not replies:
            raise ProbeFailed("timeout", f"no echo reply from {address} to {sent} request"
                              f"{'s' if sent > 1 else ''} within {result.timeout:g}s")
        round_trips = [round_trip for round_trip, _ in replies]
        average = statistics.fmean(round_trips)
        result.add(DURATION, average, _PHASE_KEYS["rtt"])
        for stat, value in (("min", min(round_trips)), ("avg", average), ("max", max(round_trips))):
            result.set(RTT, value, (stat,))
        if len(round_trips) > 1:
            result.set(JITTER, statistics.fmean(abs(b - a) for a, b in zip(round_trips, round_trips[1:], strict=False)))
        hop_limit = replies[-1][1]
        if hop_limit is not None:
            result.set(HOP_LIMIT, hop_limit)
