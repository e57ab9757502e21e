"""Debian's headless Chromium, driven over the DevTools protocol with aiohttp's websocket client.

What a person would notice is recorded: console errors, uncaught exceptions, failed loads and CSP
violations (Chromium logs those as errors), every request the page makes, and what the page looks like.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

# The flags that work on this machine's closed network: no background connections for Chromium to be refused.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1400,1000")


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser = browser
        self.session = session
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.loads = 0
        self._loaded = asyncio.Event()

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry']['text']} {params['entry'].get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Page.loadEventFired":
            self.loads += 1
            self._loaded.set()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    async def goto(self, url: str, timeout: float = 30) -> None:
        self._loaded.clear()
        await self.send("Page.navigate", url=url)
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def wait_for_loads(self, count: int, timeout: float) -> None:
        """Until the page has finished loading ``count`` times in all (reloads included)."""
        async def loaded() -> None:
            while self.loads < count:
                self._loaded.clear()
                await self._loaded.wait()
        await asyncio.wait_for(loaded(), timeout)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def set_viewport(self, width: int, height: int) -> None:
        """The window of a screen that size: a phone (narrower than 800 pixels, touch) or a desktop."""
        await self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=width < 800)

    async def screenshot(self) -> bytes:
        """The whole page, not only the window."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                               clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        return base64.b64decode(shot["data"])


class Browser:
    def __init__(self, executable: str):
        self.executable = executable
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}

    async def __aenter__(self) -> Browser:
        self._profile = tempfile.TemporaryDirectory(prefix="kpi-chromium-", ignore_cleanup_errors=True)
        profile = Path(self._profile.name)
        self._process = await asyncio.create_subprocess_exec(
            self.executable, *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        active = profile / "DevToolsActivePort"  # Chromium writes its port and browser path here
        for _ in range(300):
            lines = active.read_text().splitlines() if active.exists() else []
            if len(lines) >= 2:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("Chromium did not start its DevTools endpoint within 30s")
        self._http = aiohttp.ClientSession()
        self._socket = await self._http.ws_connect(f"ws://127.0.0.1:{lines[0]}{lines[1]}", max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        await self._socket.close()
        await self._http.close()
        # Chromium's helper processes share its session: end them all, or one may still write to the profile
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._process.wait(), 10)
        except TimeoutError:
            os.killpg(self._process.pid, signal.SIGKILL)
            await self._process.wait()
        self._profile.cleanup()

    async def _read(self) -> None:
        async for message in self._socket:
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"])
                if "error" in data:
                    future.set_exception(AssertionError(f"DevTools: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
            elif data.get("sessionId") in self._pages:
                self._pages[data["sessionId"]].on_event(data["method"], data.get("params", {}))

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   session: str | None = None) -> dict[str, Any]:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._socket.send_str(json.dumps(message))
        return await asyncio.wait_for(future, 60)

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        self._pages[page.session] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            await page.send(f"{domain}.enable")
        return page
