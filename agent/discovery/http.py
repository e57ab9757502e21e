"""``http_sd_configs``: Prometheus's HTTP SD, a GET answered 200 with ``Content-Type: application/json`` and a
JSON list of target groups, asked every ``refresh_interval`` (also the request's timeout). A failed look keeps
the endpoint's last good targets. Each endpoint has its own client session (made on first use, so an agent
without HTTP SD never loads aiohttp for it) and its own SSL context, built in a worker thread."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from agent.config.problems import ConfigError
from agent.discovery.config import HttpSdConfig
from agent.discovery.discoverer import Up, Update
from agent.discovery.targetgroup import TargetGroup, parse_target_groups
from agent.formatting import without_credentials
from agent.sources.probe.client import credentials, make_ssl_context

if TYPE_CHECKING:
    import aiohttp

MAX_RESPONSE = 32 * 1024 * 1024
MAX_REDIRECTS = 10


class HttpDiscoverer:
    mechanism = "http"

    def __init__(self, config: HttpSdConfig):
        self.config = config
        self.shown_url = without_credentials(config.url)  # the endpoint as logs and pages name it

    async def run(self, up: Up) -> None:
        import aiohttp

        sd = self.config
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                         timeout=aiohttp.ClientTimeout(total=None)) as session:
            ssl_context = None
            while True:
                try:
                    if ssl_context is None:
                        ssl_context = await asyncio.to_thread(make_ssl_context, sd.tls)
                    groups = await self._fetch(session, ssl_context)
                except ConfigError as exc:
                    up(Update(self.mechanism, self.shown_url, error="; ".join(map(str, exc.problems[:3]))[:500]))
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    error = without_credentials(f"{type(exc).__name__}: {exc}")
                    up(Update(self.mechanism, self.shown_url, error=error[:500]))
                else:
                    up(Update(self.mechanism, self.shown_url, groups))
                await asyncio.sleep(sd.refresh_interval)

    async def _fetch(self, session: aiohttp.ClientSession, ssl_context: Any) -> list[TargetGroup]:
        sd = self.config
        headers = {"Accept": "application/json", **credentials(sd.basic_auth, sd.bearer_token_file)}
        options: dict[str, Any] = {"ssl": ssl_context}
        if sd.tls.server_name:
            options["server_hostname"] = sd.tls.server_name
        async with asyncio.timeout(sd.refresh_interval):
            async with session.get(sd.url, headers=headers, max_redirects=MAX_REDIRECTS, **options) as response:
                if response.status != 200:
                    raise ValueError(f"status {response.status}, not 200")
                if response.content_type != "application/json":
                    raise ValueError(f"content type {response.content_type!r}, not 'application/json'")
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > MAX_RESPONSE:
                        raise ValueError(f"response longer than {MAX_RESPONSE} bytes")
                    chunks.append(chunk)
        return await asyncio.to_thread(_parse_body, b"".join(chunks), self.shown_url)


def _parse_body(body: bytes, url: str) -> list[TargetGroup]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the response is not UTF-8: {exc}") from None
    return parse_target_groups(text, url, {"__meta_url": url})
