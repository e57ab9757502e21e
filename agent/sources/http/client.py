"""The one aiohttp client session every HTTP source shares (probes and HTTP service discovery). Its own module,
imported only when a source first needs it: an agent without HTTP sources never loads aiohttp."""

from __future__ import annotations

import aiohttp

from agent.sources.http.timing import trace_config


def probe_session() -> aiohttp.ClientSession:
    """The one client session of every HTTP source (call it on the event loop)."""
    session = aiohttp.ClientSession(
        trace_configs=[trace_config()],
        # force_close: every probe opens its own connection, as blackbox does, so connect and TLS are measured
        # and a half-dead keep-alive connection cannot hide a down target.
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, force_close=True),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),  # each probe has its own (asyncio.timeout): no second timer
    )
    # aiohttp sends a GET again, unseen, when its connection fails while sending (no public switch): a probe
    # must see that failure, as blackbox_exporter does, and a target must get one request per probe.
    session._retry_connection = False
    return session
