"""ICMP source config: blackbox_exporter's icmp module keys, several echo requests per probe, and the families an
ICMP probe writes."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.config import values
from agent.config.fields import Fields
from agent.formatting import format_duration
from agent.series.family import counter, gauge
from agent.sources.probe.net import IpConfig, parse_ip_config

PHASES = ("resolve", "setup", "rtt")
STATS = ("min", "avg", "max")
DEFAULT_PAYLOAD_SIZE = 28  # blackbox's payload, "Prometheus Blackbox Exporter", is 28 bytes
MAX_PAYLOAD_SIZE = 65000
DEFAULT_TTL = 64
# probes_total{result} values of an ICMP probe beyond the ones every prober has
RESULTS = (
    "no_socket",  # neither a ping socket nor a raw socket may be opened (see `kpi-agent check`)
)

DURATION = gauge("probe_icmp_duration_seconds", "Duration of the ICMP probe by phase (rtt: average round trip "
                 "of the replies)", ["phase"])
HOP_LIMIT = gauge("probe_icmp_reply_hop_limit", "Hop limit (TTL for IPv4) of the last echo reply")


LOSS = gauge("probe_icmp_packet_loss_ratio", "Share of the last probe's echo requests that got no reply (0 to 1)")
RTT = gauge("probe_icmp_rtt_seconds", "Round trip of the last probe's replies: min, avg or max", ["stat"])
JITTER = gauge("probe_icmp_rtt_jitter_seconds", "Mean difference between the round trips of consecutive replies "
               "of the last probe (needs two replies)")
# Kept across probes, so loss over any window is 1 - increase(received) / increase(sent) (smokeping_prober's
# smokeping_requests_total and smokeping_response_duration_seconds_count)
SENT = counter("probe_icmp_packets_sent_total", "Echo requests sent, over every probe")
RECEIVED = counter("probe_icmp_packets_received_total", "Echo replies received in time, over every probe")
FAMILIES = (DURATION, HOP_LIMIT, SENT, RECEIVED, LOSS, RTT, JITTER)


@dataclass(frozen=True)
class IcmpModule:
    packets: int = 1  # echo requests per probe; 1 is blackbox's probe
    packet_interval: float = 1.0  # between two requests of a probe
    payload_size: int = DEFAULT_PAYLOAD_SIZE
    ttl: int = DEFAULT_TTL  # 0: the system's default
    dont_fragment: bool = False
    ip: IpConfig = field(default_factory=IpConfig)


def _payload_size(value: object) -> int:
    size = values.integer(value)
    if not 0 <= size <= MAX_PAYLOAD_SIZE:
        raise ValueError(f"{size} is not a payload size from 0 to {MAX_PAYLOAD_SIZE} bytes")
    return size


def _ttl(value: object) -> int:
    """1 to 255, or 0: the system's default hop limit (blackbox_exporter's meaning of 0)."""
    ttl = values.integer(value)
    if not 0 <= ttl <= 255:
        raise ValueError(f"{ttl} is not a TTL from 1 to 255 (or 0: the system's default)")
    return ttl


def _packets(value: object) -> int:
    packets = values.positive_integer(value)
    if packets > 1000:
        raise ValueError(f"{packets} echo requests per probe is more than 1000")
    return packets


def parse_module(fields: Fields, timeout: float) -> IcmpModule:
    """blackbox's icmp module keys, and ``packets`` / ``packet_interval``: every request of a probe is sent
    within its timeout, with time left for the last one's reply."""
    ip = parse_ip_config(fields)
    packets = fields.get("packets", _packets, 1)
    spacing = fields.get("packet_interval", values.duration, 1.0)
    if packets > 1 and (packets - 1) * spacing >= timeout and not {"packets", "packet_interval"} & fields.invalid:
        fields.error("packet_interval", f"{packets} requests {format_duration(spacing)} apart take "
                     f"{format_duration((packets - 1) * spacing)}, not less than the timeout "
                     f"{format_duration(timeout)}: the last request would get no time for its reply")
    payload = fields.get("payload_size", _payload_size, DEFAULT_PAYLOAD_SIZE)
    ttl = fields.get("ttl", _ttl, DEFAULT_TTL)
    dont_fragment = fields.get("dont_fragment", values.boolean, False)
    return IcmpModule(packets, spacing, payload, ttl, dont_fragment, ip)
