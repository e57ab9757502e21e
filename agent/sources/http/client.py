"""What every HTTP source of a running agent shares: one aiohttp client session (connection pool, DNS cache)
and the SSL contexts of its tls_configs. Its own module, imported only when an HTTP source is built: an agent
without HTTP sources never loads aiohttp."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.sources.base import Shared, SourceContext
from agent.sources.http.timing import ProbeSSLContext
from agent.sources.probe.tls import TlsContexts

if TYPE_CHECKING:
    import ssl

    import aiohttp

    from agent.sources.probe.client import TlsConfig


def probe_session() -> aiohttp.ClientSession:
    """The one client session of every HTTP source (call it on the event loop)."""
    import aiohttp

    from agent.sources.http.timing import trace_config

    session = aiohttp.ClientSession(
        trace_configs=[trace_config()],
        # force_close: every probe opens its own connection, as blackbox does, so connect and TLS are measured
        # and a half-dead keep-alive connection cannot hide a down target.
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, force_close=True),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),  # each probe has its own deadline: no second timer
    )
    # aiohttp sends a GET again, unseen, when its connection fails while sending (no public switch): a probe
    # must see that failure, as blackbox_exporter does, and a target must get one request per probe.
    session._retry_connection = False
    return session


class HttpShared(Shared):
    """The session is made when the first probe asks for it (on the event loop); the SSL contexts are made in
    the kind's prepare thread."""

    def __init__(self, context: SourceContext | None = None):
        self.tls = TlsContexts(ProbeSSLContext)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = probe_session()
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def tls_options(tls: TlsConfig, ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
    """A request's TLS arguments from a tls_config: its context, and server_name for the handshake and the
    certificate check."""
    options: dict[str, Any] = {"ssl": ssl_context}
    if tls.server_name:
        options["server_hostname"] = tls.server_name
    return options


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, however many pieces it arrives in; None as soon as it is longer than ``limit`` bytes
    (the rest is never held)."""
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
