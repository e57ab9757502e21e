"""A small client of Prometheus's HTTP API (``/api/v1/query``, ``query_range``, ``status/buildinfo``), for
reports, the scoreboard and ``rules check --prometheus.url``.

Every failure becomes one of two exceptions whose message a person can act on: the server could not be
reached at all, or it answered with an error.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiohttp (and yarl) load with the first client: a command refusing its flags never does
    import aiohttp

QUERY_TIMEOUT = 60.0  # seconds per request: a 30d range over many series can take a while
CONCURRENCY = 4  # requests in flight at once; enough to overlap latency without crowding Prometheus
# The most of one answer that is read (after decompression). A report's chart asks for about 240 points per
# series (7 KB of JSON) and at most the 11,000 Prometheus allows (300 KB); the largest answer of the report
# tests' monthly reviews is 16 KB. Parsed, a matrix answer takes about eight times its size in memory (131 MiB
# for 16 MiB, measured), so one answer at the limit costs about 150 MiB, where an unbounded one cost 490 MB
# for 200 MB and more without end.
MAX_ANSWER_BYTES = 16 * 2**20


class PrometheusError(Exception):
    """Prometheus answered, but with an error (bad query, timeout on its side, overload)."""


class PrometheusUnreachable(PrometheusError):
    """No answer from Prometheus: refused, unresolvable, timed out, or not Prometheus's API at all."""


class PrometheusClient:
    def __init__(self, url: str, session: aiohttp.ClientSession, timeout: float = QUERY_TIMEOUT):
        import aiohttp
        from yarl import URL

        self._base = url.rstrip("/")  # may hold user:password, which aiohttp sends as basic auth
        self.url = str(URL(self._base).with_user(None))  # what people see: never the password
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def _call(self, path: str, form: dict[str, str] | None = None) -> Any:
        import aiohttp
        from yarl import URL

        url = f"{self.url}{path}"
        try:
            async with self._slots:
                method = "POST" if form is not None else "GET"
                async with self._session.request(method, URL(f"{self._base}{path}"), data=form,
                                                 timeout=self._timeout) as response:
                    text = await _read_bounded(response, url)
                    try:
                        body = json.loads(text)
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


async def _read_bounded(response: aiohttp.ClientResponse, url: str) -> bytes:
    """The answer's body (decompressed), refused past MAX_ANSWER_BYTES before it is read whole or parsed."""
    if response.content_length is not None and response.content_length > MAX_ANSWER_BYTES:
        raise PrometheusError(_too_large(url))
    body = bytearray()
    async for chunk in response.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise PrometheusError(_too_large(url))
    return bytes(body)


def _too_large(url: str) -> str:
    return (f"{url} answered with more than {MAX_ANSWER_BYTES // 2**20} MiB, the most kpi-agent reads of one "
            "answer (reports need a few MiB at most); is --prometheus.url a Prometheus API, and does the query "
            "select only the KPI's series?")


def _time(seconds: float) -> str:
    return f"{seconds:.3f}"


def series_labels(series: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in series.get("metric", {}).items() if k != "__name__"}
