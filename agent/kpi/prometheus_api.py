"""A small client of Prometheus's HTTP API (``/api/v1/query``, ``query_range``, ``status/buildinfo``), for
reports, the scoreboard and ``rules check --prometheus.url``.

Every failure becomes one of two exceptions whose message a person can act on: the server could not be
reached at all, or it answered with an error.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from yarl import URL

QUERY_TIMEOUT = 60.0  # seconds per request: a 30d range over many series can take a while
CONCURRENCY = 4  # requests in flight at once; enough to overlap latency without crowding Prometheus


class PrometheusError(Exception):
    """Prometheus answered, but with an error (bad query, timeout on its side, overload)."""


class PrometheusUnreachable(PrometheusError):
    """No answer from Prometheus: refused, unresolvable, timed out, or not Prometheus's API at all."""


class PrometheusClient:
    def __init__(self, url: str, session: aiohttp.ClientSession, timeout: float = QUERY_TIMEOUT):
        self._base = url.rstrip("/")  # may hold user:password, which aiohttp sends as basic auth
        self.url = str(URL(self._base).with_user(None))  # what people see: never the password
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def _call(self, path: str, form: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}"
        try:
            async with self._slots:
                method = "POST" if form is not None else "GET"
                async with self._session.request(method, URL(f"{self._base}{path}"), data=form,
                                                 timeout=self._timeout) as response:
                    try:
                        body = await response.json(content_type=None)
                    except ValueError:
                        raise PrometheusUnreachable(
                            f"{url} answered HTTP {response.status} with something that is not Prometheus's "
                            "JSON API; check --prometheus.url") from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc).replace(self._base, self.url)
            raise PrometheusUnreachable(f"cannot reach Prometheus at {self.url}: {reason}") from None
        except TimeoutError:
            raise PrometheusUnreachable(f"Prometheus at {self.url} did not answer within "
                                        f"{self._timeout.total:g}s") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error", body) if isinstance(body, dict) else body
            kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
            raise PrometheusError(f"{kind}: {detail}")
        return body.get("data")

    async def buildinfo(self) -> dict[str, str]:
        return await self._call("/api/v1/status/buildinfo")

    async def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """An instant query's result (vector, or matrix for a range-vector expression)."""
        data = await self._call("/api/v1/query", {"query": expr, "time": _time(at)})
        return data["result"]

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = await self._call("/api/v1/query_range", {"query": expr, "start": _time(start), "end": _time(end),
                                                        "step": f"{step:.3f}"})
        return data["result"]


def _time(seconds: float) -> str:
    return f"{seconds:.3f}"


def series_labels(series: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in series.get("metric", {}).items() if k != "__name__"}
