"""What a probe sends: the URL it asks for, split once into what a connection needs, and the request head.

Requests are HTTP/1.1 with ``Connection: close`` (one connection per probe, as blackbox_exporter's client with
keep-alives disabled), the ``Host`` of the URL, a ``User-Agent`` naming the agent unless the config sets one,
and the configured headers. Header names and values were checked when the config was read (no line breaks:
a value cannot smuggle a second header or request).
"""

from __future__ import annotations

import re
from urllib.parse import quote, urljoin, urlsplit

from agent import __version__
from agent.formatting import excerpt
from agent.sources.http.head import InvalidResponse

USER_AGENT = f"kpi-agent/{__version__}"
DEFAULT_PORTS = {"http": 80, "https": 443}
# Header fields a probe sets itself: a configured value for them is not sent (Host is, as the request's host).
OWN_FIELDS = frozenset({"host", "connection", "content-length", "transfer-encoding"})
_UNSAFE = re.compile(r"[^\x21-\x7e]")  # characters a request line cannot carry as they are
# The common URL (no user, no fragment, a plain host name or IPv4 address), split without urlsplit's generality
_SIMPLE = re.compile(r"(https?)://([a-z0-9._-]+)(?::([0-9]{1,5}))?(/[\x21-\x22\x24-\x7e]*)?")


class Url:
    """A probed URL, split into what a request needs."""

    __slots__ = ("text", "scheme", "host", "port", "authority", "target", "username", "password")

    def __init__(self, text: str, scheme: str, host: str, port: int, authority: str, target: str,
                 username: str | None, password: str | None):
        self.text = text
        self.scheme = scheme  # http | https
        self.host = host  # lower case, IDNA-encoded, an IPv6 address without brackets
        self.port = port
        self.authority = authority  # host[:port] as the Host header carries it
        self.target = target  # path?query as the request line carries it
        self.username = username
        self.password = password

    @property
    def address(self) -> str:
        """host:port, for messages."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def join(self, location: str) -> Url:
        """Where a redirect's Location leads from here; raises InvalidResponse when it is not an http(s) URL."""
        return parse_url(urljoin(self.text, location.strip()), InvalidResponse)


def parse_url(text: str, error: type[ValueError] = ValueError) -> Url:
    """``text`` split (raises ``error``, naming the problem, when it is not an http:// or https:// URL with a
    host)."""
    simple = _SIMPLE.fullmatch(text)
    if simple is not None:
        scheme, host, port_text, target = simple.groups()
        if port_text is None:
            return Url(text, scheme, host, DEFAULT_PORTS[scheme], host, target or "/", None, None)
        port = int(port_text)
        if 0 < port < 65536:
            return Url(text, scheme, host, port, f"{host}:{port}", target or "/", None, None)
    shown = excerpt(without_credentials(text))  # messages never quote a password
    try:
        parts = urlsplit(text)
        given_port = parts.port
    except ValueError as exc:
        raise error(f"{shown} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in DEFAULT_PORTS or not host:
        raise error(f"{shown} is not an http:// or https:// URL with a host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise error(f"{shown}: the host is not a valid international domain name") from None
    shown_host = f"[{host}]" if ":" in host else host
    authority = shown_host if given_port is None else f"{shown_host}:{given_port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if _UNSAFE.search(target):
        target = quote(target, safe="/?%:@!$&'()*+,;=-._~[]")
    return Url(text, scheme, host, given_port if given_port is not None else DEFAULT_PORTS[scheme], authority, target,
               parts.username, parts.password)


def without_credentials(text: str) -> str:
    """A URL as it may be shown: without the user:password@ it may carry."""
    scheme, separator, rest = text.partition("://")
    authority_end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, authority_end)
    return text if not separator or at < 0 else f"{scheme}://{rest[at + 1:]}"


def request_head(method: str, url: Url, host: str, fields: str, body_length: int | None,
                 absolute: bool = False) -> bytes:
    """The request line and header block. ``host``: the Host field (the URL's, or the configured one);
    ``fields``: ``Name: value\\r\\n`` lines, already joined; ``absolute``: the absolute form a proxy is asked
    with (``GET http://host/path``)."""
    target = f"{url.scheme}://{url.authority}{url.target}" if absolute else url.target
    length = f"Content-Length: {body_length}\r\n" if body_length is not None else ""
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{fields}{length}Connection: close\r\n\r\n" \
        .encode()


def header_lines(headers: dict[str, str]) -> str:
    """``Name: value\\r\\n`` lines of configured headers, without those a probe sets itself."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items() if name.lower() not in OWN_FIELDS)
