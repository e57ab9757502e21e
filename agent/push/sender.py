"""Posting request bodies to one endpoint, and what the answer means under the Remote-Write 1.0 spec.

- 2xx: delivered.
- 5xx, and 429 unless ``retry_on_http_429: false``: try again after a backoff (``min_backoff`` doubling up to
  ``max_backoff``), or after ``Retry-After`` when the receiver sends one; so are a timeout (``remote_timeout``,
  which also ends a request to a receiver that accepts the connection and never answers) and a connection
  that fails.
- any other status (400 for a malformed or out-of-order batch, 401, 404, 413): refused for good, dropped and
  counted; the spec forbids retrying them.

Credentials (``basic_auth``, ``authorization``) are read when a request is built; a credential file is read
again when it changes (by size, modification time and inode), so a rotated token needs no reload. No secret
ever reaches a message: errors name the status and the URL without its user info and query.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import time
from dataclasses import dataclass
from typing import Literal

import aiohttp

from agent import __version__
from agent.config.files import file_stamp
from agent.formatting import cut
from agent.push import wire
from agent.push.config import RemoteWriteConfig, Secret, redacted_url

MAX_RETRY_AFTER = 600.0  # a receiver asking for more than ten minutes is asked again after ten
_ERROR_BODY = 512  # bytes of a refusal's body kept for the message


@dataclass(frozen=True)
class Outcome:
    verdict: Literal["sent", "retry", "refused"]
    status: int | None = None
    message: str = ""
    retry_after: float | None = None
    seconds: float = 0.0


class _SecretReader:
    """The current value of a Secret: inline, or its file's content (stripped), read again when it changes."""

    def __init__(self, secret: Secret):
        self.secret = secret
        self._stamp: object = None
        self._value = secret.value or ""

    def value(self) -> str:
        if self.secret.file is None:
            return self._value
        stamp = file_stamp(self.secret.file)
        if stamp != self._stamp:
            try:
                with open(self.secret.file, encoding="utf-8") as file:
                    self._value = file.read().strip()
                self._stamp = stamp
            except (OSError, UnicodeDecodeError):
                pass  # keep the last value read; the request fails with 401 and says so
        return self._value


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(0.0, when - (time.time() if now is None else now)), MAX_RETRY_AFTER)


class Sender:
    """One endpoint's HTTP client. ``ssl_context`` is built off the event loop by the caller."""

    def __init__(self, config: RemoteWriteConfig, ssl_context: object | None):
        self.config = config
        self.url = redacted_url(config.url)
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._headers = {**wire.HEADERS, "User-Agent": f"kpi-agent/{__version__}", **dict(config.headers)}
        self._basic = (config.basic_auth[0], _SecretReader(config.basic_auth[1])) if config.basic_auth else None
        self._authorization = ((config.authorization[0], _SecretReader(config.authorization[1]))
                               if config.authorization else None)

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.config.queue.max_shards, ttl_dns_cache=60),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            # aiohttp sends a request again, unseen, when its keep-alive connection turns out closed; the
            # retries here are ours, counted, with the spec's backoff
            self._session._retry_connection = False
        return self._session

    def _request_headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        if self._basic is not None:
            user, password = self._basic
            token = base64.b64encode(f"{user}:{password.value()}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        elif self._authorization is not None:
            kind, credentials = self._authorization
            headers["Authorization"] = f"{kind} {credentials.value()}"
        return headers

    async def post(self, payload: bytes) -> Outcome:
        config = self.config
        options: dict[str, object] = {"ssl": self._ssl if self._ssl is not None else True}
        if config.tls.server_name:
            options["server_hostname"] = config.tls.server_name
        if config.proxy_url:
            options["proxy"] = config.proxy_url
        started = time.perf_counter()
        try:
            async with asyncio.timeout(config.remote_timeout):
                async with self._session_now().post(config.url, data=payload, headers=self._request_headers(),
                                                    allow_redirects=False, **options) as response:  # type: ignore[arg-type]
                    status = response.status
                    if 200 <= status < 300:
                        await response.read()
                        return Outcome("sent", status, seconds=time.perf_counter() - started)
                    body = await response.content.read(_ERROR_BODY)
                    wait = retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            return Outcome("retry", None, f"no answer within remote_timeout ({config.remote_timeout:g}s)",
                           seconds=time.perf_counter() - started)
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome("retry", None, f"cannot send: {cut(str(exc) or type(exc).__name__)}",
                           seconds=time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a bug of ours or aiohttp's: retried with backoff, never fatal
            return Outcome("retry", None, f"cannot send: {type(exc).__name__}: {cut(str(exc))}",
                           seconds=time.perf_counter() - started)
        seconds = time.perf_counter() - started
        text = cut(body.decode("utf-8", "replace").strip(), 200)
        message = f"status {status}" + (f": {text}" if text else "")
        if status >= 500 or (status == 429 and config.queue.retry_on_http_429):
            return Outcome("retry", status, message, wait, seconds)
        return Outcome("refused", status, message, seconds=seconds)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
