"""Load a page in Debian's headless Chromium over the DevTools protocol and report what happened.

No browser download and no Playwright: ``chromium`` (``.ci/run`` installs it) is started with
``--remote-debugging-port=0`` on a fresh profile, and aiohttp (which Scrapy brings) speaks the
protocol's websocket on 127.0.0.1. Console errors, uncaught exceptions, log errors (a blocked
resource, a Content-Security-Policy violation) and every request the page made are collected.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
         "--remote-debugging-port=0", "--remote-allow-origins=*")


@dataclass
class PageLoad:
    """What loading one page gave."""

    errors: list[str] = field(default_factory=list)  # console errors, exceptions, log errors
    requests: list[str] = field(default_factory=list)  # every URL the page requested
    values: dict[str, Any] = field(default_factory=dict)  # results of the expressions asked for
    screenshot: bytes = b""  # PNG of the whole page


class _Cdp:
    """A DevTools protocol session on one websocket: commands with ids, events collected."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict[str, Any]] = []
        self.load_fired = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)
                if data["method"] == "Page.loadEventFired":
                    self.load_fired.set()

    async def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[n] = fut
        await self.ws.send_json({"id": n, "method": method, "params": params})
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        method, p = e["method"], e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            out.append(f"network: {p.get('errorText')} {p.get('blockedReason', '')}")
    return out


async def _load(port: int, url: str, expressions: dict[str, str], width: int, height: int, timeout: float) -> PageLoad:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list", timeout=aiohttp.ClientTimeout(total=10)) as r:
            targets = await r.json()
        page = next(t for t in targets if t.get("type") == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = _Cdp(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                await cdp.call(f"{domain}.enable")
            await cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
            await cdp.call("Page.navigate", url=url)
            await asyncio.wait_for(cdp.load_fired.wait(), timeout)
            # every image decoded (or failed) before anything is counted
            await cdp.call("Runtime.evaluate", awaitPromise=True, expression=(
                "Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))"))
            values = {}
            for name, expr in expressions.items():
                res = await cdp.call("Runtime.evaluate", expression=expr, returnByValue=True)
                values[name] = res.get("result", {}).get("value")
            metrics = await cdp.call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            shot = await cdp.call("Page.captureScreenshot", timeout=60, format="png", captureBeyondViewport=True,
                                  clip={"x": 0, "y": 0, "width": width, "height": min(size["height"], 12000), "scale": 1})
            await asyncio.sleep(0.2)  # late console messages
            cdp.reader.cancel()
    requests = [e["params"]["request"]["url"] for e in cdp.events if e["method"] == "Network.requestWillBeSent"]
    return PageLoad(_errors(cdp.events), requests, values, base64.b64decode(shot["data"]))


def load_page(url: str, expressions: dict[str, str] | None = None, width: int = 1366, height: int = 800,
              timeout: float = 60) -> PageLoad:
    """Open ``url`` in a fresh headless Chromium; evaluate ``expressions`` once everything loaded."""
    if CHROMIUM is None:
        raise RuntimeError("chromium is not installed")
    profile = Path(tempfile.mkdtemp(prefix="capcrawl-chromium-"))
    log = open(profile / "chromium.log", "wb")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start: {(profile / 'chromium.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        return asyncio.run(asyncio.wait_for(_load(port, url, expressions or {}, width, height, timeout), timeout * 2))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def blankness(png: bytes) -> tuple[float, int]:
    """(standard deviation of the grey levels, number of distinct colours) of a PNG."""
    import io

    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(png)) as im:
        rgb = im.convert("RGB")
        colours = len(rgb.getcolors(maxcolors=1 << 24) or [])
        return ImageStat.Stat(rgb.convert("L")).stddev[0], colours
