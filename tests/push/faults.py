"""A proxy in front of a real receiver that misbehaves on demand: answers 500 or 429 (with Retry-After), refuses
one batch with 400, or accepts requests and never answers. It runs its own event loop in a thread, so the
synchronous tests drive agent processes and the proxy side by side."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.helpers import free_port
from tests.push.prompb import Pushed, decode


@dataclass
class Fault:
    status: int = 0  # 0: forward to the receiver
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False  # accept the request and never answer


@dataclass
class Seen:
    at: float
    answer: int | str  # the status sent, or "stalled"
    samples: list[Pushed]


class FaultProxy:
    def __init__(self, target: str, plan: Callable[[int], Fault | None] = lambda n: None):
        self.target = target
        self.plan = plan  # request number (from 0) -> what to do with it
        self.port = free_port()
        self.seen: list[Seen] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def write_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1/write"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def answered(self, answer: int | str) -> list[Seen]:
        return [seen for seen in list(self.seen) if seen.answer == answer]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            async def write(request: web.Request) -> web.Response:
                body = await request.read()
                number = len(self.seen)
                fault = self.plan(number)
                seen = Seen(time.monotonic(), 0, decode(body))
                self.seen.append(seen)
                if fault is not None and fault.stall:
                    seen.answer = "stalled"
                    assert self._stop is not None
                    await self._stop.wait()  # until the proxy stops: never, as far as the agent can tell
                if fault is not None and fault.status:
                    seen.answer = fault.status
                    return web.Response(status=fault.status, text="injected fault", headers=fault.headers)
                async with session.post(self.target, data=body, headers={
                        k: v for k, v in request.headers.items() if k.lower() != "host"}) as response:
                    seen.answer = response.status
                    return web.Response(status=response.status, body=await response.read())

            app = web.Application()
            app.router.add_post("/api/v1/write", write)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()
