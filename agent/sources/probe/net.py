"""Addresses for probers: ``host:port`` targets, the IP protocol choice blackbox_exporter users configure
(``preferred_ip_protocol``, ``ip_protocol_fallback``, ``source_ip_address``), and name resolution that records
``probe_dns_lookup_time_seconds``, ``probe_ip_protocol`` and ``probe_ip_addr_hash``."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config import values
from agent.config.fields import Fields
from agent.formatting import excerpt
from agent.sources.probe.families import DNS_LOOKUP, IP_ADDR_HASH, IP_PROTOCOL
from agent.sources.probe.result import ProbeFailed

if TYPE_CHECKING:
    from agent.sources.probe.result import ProbeResult

IP_PROTOCOLS = ("ip4", "ip6")


@dataclass(frozen=True)
class IpConfig:
    preferred: str = "ip6"  # blackbox's default: IPv6 first, then IPv4
    fallback: bool = True
    source_ip: str | None = None


def _ip_address(value: Any) -> str:
    text = values.nonempty_string(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{excerpt(text)} is not an IP address") from None


def parse_ip_config(fields: Fields) -> IpConfig:
    """``preferred_ip_protocol`` (ip4 or ip6, default ip6), ``ip_protocol_fallback`` (default true),
    ``source_ip_address``."""
    return IpConfig(fields.get("preferred_ip_protocol", values.one_of(*IP_PROTOCOLS), "ip6"),
                    fields.get("ip_protocol_fallback", values.boolean, True),
                    fields.get("source_ip_address", _ip_address, None))


def split_host_port(address: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or (with a default port) ``host`` / ``v6``; raises ValueError."""
    host, port_text = address, None
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ValueError(f"{excerpt(address)}: missing ]")
        host, rest = address[1:end], address[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{excerpt(address)} is not host:port")
            port_text = rest[1:]
    elif address.count(":") == 1:
        host, port_text = address.split(":")
    elif ":" in address:  # a bare IPv6 address
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise ValueError(f"{excerpt(address)} is not host:port (write an IPv6 address as [addr]:port)") from None
    if not host:
        raise ValueError(f"{excerpt(address)} has no host")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{excerpt(address)} has no port (host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{excerpt(address)}: {excerpt(port_text)} is not a port")
    return host, int(port_text)


def _fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


@functools.lru_cache(maxsize=4096)
def _ip_facts(text: str) -> tuple[float, float] | None:
    """(IP version, blackbox's hash of the address: FNV-32a of its 4 bytes for IPv4, 16 for IPv6) of an IP
    address, or None for a host name. Kept for the addresses probed lately: the same targets every interval."""
    try:
        ip = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    return float(ip.version), float(_fnv32a(ip.packed))


def record_resolution(result: ProbeResult, address: str, seconds: float) -> None:
    facts = _ip_facts(address)
    if facts is None:
        raise ValueError(f"{excerpt(address)} is not an IP address")
    result.set(DNS_LOOKUP, seconds)
    result.set(IP_PROTOCOL, facts[0])
    result.set(IP_ADDR_HASH, facts[1])


async def resolve(host: str, config: IpConfig, result: ProbeResult) -> str:
    """The IP address to probe ``host`` at, of the preferred protocol if it has one (else the other, when
    fallback is on); records the resolution. Raises ProbeFailed("dns_error", ...)."""
    started = time.perf_counter()
    literal = _ip_facts(host)
    if literal is not None:
        if not config.fallback and f"ip{literal[0]:.0f}" != config.preferred:
            raise ProbeFailed("dns_error", f"{host} is not an {config.preferred} address and ip_protocol_fallback "
                                           "is off")
        record_resolution(result, host, time.perf_counter() - started)
        return host
    family = socket.AF_INET if config.preferred == "ip4" else socket.AF_INET6
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, None, family=0 if config.fallback else family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        result.set(DNS_LOOKUP, time.perf_counter() - started)
        raise ProbeFailed("dns_error", f"cannot resolve {host}: {exc.strerror}") from None
    preferred = [info for info in infos if info[0] == family]
    chosen = (preferred or infos)[:1]
    if not chosen:
        result.set(DNS_LOOKUP, time.perf_counter() - started)
        raise ProbeFailed("dns_error", f"{host} has no {config.preferred} address")
    address = str(chosen[0][4][0])
    record_resolution(result, address, time.perf_counter() - started)
    return address
