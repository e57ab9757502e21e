"""Probes through an HTTP proxy (``proxy_url``, ``no_proxy``, ``proxy_from_environment``,
``proxy_connect_header``: Prometheus's http_config keys, as blackbox_exporter reads them).

A plain http:// URL is asked of the proxy in absolute form (``GET http://host/path``); an https:// URL goes
through a ``CONNECT host:port`` tunnel, and TLS to the target runs inside it, so the certificate checked is the
target's. As in blackbox, the target's name is still resolved by the agent (the resolve phase, and
``probe_ip_*``) and the proxy is asked for that address, unless ``skip_resolve_phase_with_proxy`` lets the
proxy resolve it. The proxy's credentials (``http://user:password@proxy:3128``) go in ``Proxy-Authorization``
and are never shown: messages name the proxy by host and port.
"""

from __future__ import annotations

import ipaddress

from agent.sources.http.connection import Connection, connect
from agent.sources.http.head import InvalidResponse
from agent.sources.http.request import Url, parse_url
from agent.sources.probe.client import ProxyConfig, basic_authorization
from agent.sources.probe.net import IpConfig, resolve
from agent.sources.probe.result import ProbeFailed, ProbeResult

_DISCARD = ProbeResult(0.0, 0.0, frozenset())  # the proxy's own name resolution is not the target's


class Proxies:
    """A module's proxy settings, parsed once."""

    def __init__(self, config: ProxyConfig):
        self.config = config
        self.http = parse_url(config.http_url) if config.http_url else None
        self.https = parse_url(config.https_url) if config.https_url else None
        self.no_proxy = [_exclusion(entry) for entry in config.no_proxy]
        connect_lines = "".join(f"{name}: {value}\r\n" for name, values in config.connect_headers.items()
                                for value in values)
        self.connect_lines = connect_lines

    def for_url(self, url: Url) -> Url | None:
        """The proxy that serves ``url``, None when it goes direct (no proxy for its scheme, or no_proxy)."""
        proxy = self.https if url.scheme == "https" else self.http
        if proxy is None:
            return None
        if self.config.excludes_loopback and _is_loopback(url.host):
            return None  # Go's proxy-from-config with no_proxy, and from the environment, never proxy loopback
        for exclusion in self.no_proxy:
            if exclusion(url.host, url.port):
                return None
        return proxy

    def authorization(self, url: Url) -> str:
        """The Proxy-Authorization line for a request to ``url`` through its proxy (none without credentials)."""
        proxy = self.for_url(url)
        if proxy is None or proxy.username is None:
            return ""
        return f"Proxy-Authorization: {basic_authorization(proxy.username, proxy.password or '')}\r\n"

    async def connect(self, proxy: Url, url: Url, ip: str | None, ip_config: IpConfig) -> Connection:
        """A connection through ``proxy`` ready for ``url``'s request: for https, the CONNECT tunnel is up."""
        proxy_ip = await resolve(proxy.host, ip_config, _DISCARD)
        connection = await connect(proxy_ip, proxy.port, f"proxy {proxy.address}", ip_config.source_ip)
        if url.scheme != "https":
            return connection
        try:
            await self._tunnel(connection, proxy, url, ip)
        except BaseException:
            connection.abort()
            raise
        return connection

    async def _tunnel(self, connection: Connection, proxy: Url, url: Url, ip: str | None) -> None:
        host = ip if ip is not None else url.host
        authority = f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"
        credentials = "" if proxy.username is None else \
            f"Proxy-Authorization: {basic_authorization(proxy.username, proxy.password or '')}\r\n"
        connection.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{credentials}{self.connect_lines}"
                         "\r\n".encode())
        try:
            head = await connection.read_head()
        except InvalidResponse as exc:
            raise ProbeFailed("connection_error", f"proxy {proxy.address} did not answer CONNECT: {exc}") from None
        except OSError:
            raise ProbeFailed("connection_error", f"proxy {proxy.address} closed the connection at CONNECT "
                                                  f"{url.address}") from None
        if not 200 <= head.status < 300:
            raise ProbeFailed("connection_error", f"proxy {proxy.address} refused CONNECT {url.address}: "
                                                  f"status {head.status}")
        if connection.buffer:
            raise ProbeFailed("connection_error", f"proxy {proxy.address} sent data before the TLS handshake")
        connection.first_byte = 0.0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _exclusion(entry: str):  # noqa: ANN202 - a small predicate
    """One no_proxy entry as Go's httpproxy reads it: ``*``, an IP, a CIDR, ``name`` (the name and its
    subdomains), ``.name`` (subdomains only), each with an optional ``:port``."""
    text = entry.strip().lower()
    if text == "*":
        return lambda host, port: True
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        network = None
    if network is not None:
        def in_network(host: str, port: int) -> bool:
            try:
                return ipaddress.ip_address(host) in network
            except ValueError:
                return False
        return in_network
    name, port_text = text, None
    if text.count(":") == 1:
        name, port_text = text.split(":")
    wanted_port = int(port_text) if port_text and port_text.isdigit() else None
    subdomains_only = name.startswith(".")
    name = name.lstrip(".").removeprefix("*.")

    def matches(host: str, port: int) -> bool:
        if wanted_port is not None and port != wanted_port:
            return False
        if host == name:
            return not subdomains_only
        return host.endswith("." + name)
    return matches
