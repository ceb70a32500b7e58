"""Per-host politeness across every worker of a crawl: a download handler that waits for the host's turn in Redis.

Scrapy's download slots keep one process polite: at most ``--per-host-concurrency`` requests
to a host in flight, its robots.txt ``Crawl-delay`` and ``Retry-After`` between them. With
many workers each slot only sees its own requests, so every download of a crawl worker first
takes a token for its host from the frontier (:mod:`crawler.frontier`, ``gate_acquire``, one
atomic script): granted only while fewer than the limit are in flight across all workers,
``Crawl-delay`` has passed since the last request any worker started there and any
``Retry-After`` has run out. The token is handed back when the response (or the failure) is
in, with the back-off a 429/503 asked for.

Until some worker has read a host's robots.txt its Crawl-delay is unknown, and the gate lets
one request at a time through: the first is the robots.txt that every worker fetches before
anything else there, and its answer sets the delay for all. A token of a worker that died is
freed as soon as the worker's heartbeat lapses.

The handler wraps the configured HTTP client (aiohttp's or Twisted's), so the wait happens
after Scrapy's own slot let the request go (its AutoThrottle delay still applies locally) and
just before the bytes leave.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import Any

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import DownloadCancelledError
from scrapy.http import Response
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler, load_object

from .middlewares import backoff_wait
from .upstream import engine_closing

log = logging.getLogger(__name__)

#: Import path of the handler (Scrapy's DOWNLOAD_HANDLERS for http and https on a crawl worker).
HOST_GATE_HANDLER = f"{__name__}.HostGateHandler"
#: The setting naming the HTTP client the gate wraps.
INNER_SETTING = "CAPCRAWL_INNER_HANDLER"
#: Longest robots.txt Crawl-delay obeyed, in seconds (as crawler.upstream.RobotsMiddleware's).
MAX_CRAWL_DELAY = 60.0
#: Polls of a full host: the first after this many seconds, doubling up to MAX_POLL.
FIRST_POLL, MAX_POLL = 0.005, 0.1


class HostGateHandler:
    """Download handler: take the host's token from the frontier, download with the inner client, give it back."""

    lazy = False

    def __init__(self, crawler: Crawler):
        s = crawler.settings
        self.crawler = crawler
        self.inner = build_from_crawler(load_object(s.get(INNER_SETTING)), crawler)
        self.limit = s.getint("CONCURRENT_REQUESTS_PER_DOMAIN")
        # A holder's token lapses on its own long after any download could still run.
        self.hold_ms = int((2 * s.getfloat("DOWNLOAD_TIMEOUT") + 10) * 1000)
        self.obey = s.getbool("ROBOTSTXT_OBEY")
        self.agent = s.get("ROBOTSTXT_USER_AGENT") or s.get("USER_AGENT")
        self.max_wait = s.getfloat("CAPCRAWL_MAX_RETRY_AFTER", 120.0)
        self.parser = load_object(s.get("ROBOTSTXT_PARSER"))
        self.delays: dict[str, int] = {}  # host -> Crawl-delay (ms) as this worker read its robots.txt
        self._queues: dict[str, deque] = {}  # host -> futures of the requests waiting for a token
        self._serving: set[str] = set()  # hosts whose waiters a task is asking Redis for
        self._tasks: set[asyncio.Task] = set()
        self._seq = itertools.count()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> HostGateHandler:
        return cls(crawler)

    async def download_request(self, request: Request) -> Response:
        frontier = self.crawler.spider.frontier
        parts = urlparse_cached(request)
        host = parts.hostname or ""
        robots = self.obey and parts.path == "/robots.txt"
        holder = await self._acquire(frontier, host)
        delay, backoff = -1, 0
        try:
            response = await self.inner.download_request(request)
            if robots:
                delay = self._robots_delay(host, response)
            wait = backoff_wait(request, response, self.max_wait)
            backoff = int(wait * 1000) if wait else 0
            return response
        except Exception:
            if robots:  # no robots.txt to be had: the robots middleware allows everything, no delay
                delay = self.delays.setdefault(host, 0)
            raise
        finally:
            await frontier.gate_release(host, holder, backoff, delay)

    async def _acquire(self, frontier: Any, host: str) -> str:
        """Wait for a token for ``host``: the requests waiting for one host ask Redis together."""
        queue = self._queues.setdefault(host, deque())
        waiter = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        if host not in self._serving:
            self._serving.add(host)
            task = asyncio.get_running_loop().create_task(self._serve(frontier, host, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await waiter

    async def _serve(self, frontier: Any, host: str, queue: deque) -> None:
        """Ask Redis for as many tokens as requests wait for ``host`` (one at a time under a
        Crawl-delay), hand them out in order, and wait as Redis says while none is granted."""
        poll = FIRST_POLL
        try:
            while True:
                while queue and queue[0].done():
                    queue.popleft()  # its download was cancelled while it waited
                if not queue:
                    return
                if engine_closing(self.crawler):
                    raise DownloadCancelledError("the crawl is closing")
                known = self.delays.get(host, -1) if self.obey else 0
                holders = [f"{frontier.W}|{frontier.token}|{next(self._seq)}" for _ in range(min(len(queue), self.limit))]
                granted, wait = await frontier.gate_acquire(host, holders, self.limit, known, self.hold_ms)
                for holder in holders[:granted]:
                    waiter = queue.popleft() if queue else None
                    if waiter is None or waiter.done():
                        frontier.release_soon(host, holder)  # nobody left to use it
                    else:
                        waiter.set_result(holder)
                if granted:
                    poll = FIRST_POLL
                elif wait > 0:
                    await asyncio.sleep(wait / 1000)
                    poll = FIRST_POLL
                else:  # the host's in-flight limit is reached across the workers
                    await asyncio.sleep(poll)
                    poll = min(2 * poll, MAX_POLL)
        except Exception as e:  # noqa: BLE001 - every waiter gets the error (a lost frontier, the close)
            for waiter in queue:
                if not waiter.done():
                    waiter.set_exception(e)
            queue.clear()
        finally:
            self._serving.discard(host)
            if not queue:
                self._queues.pop(host, None)

    def _robots_delay(self, host: str, response: Response) -> int:
        """The Crawl-delay (ms) of a robots.txt response for our agent; 0 for none or no robots.txt."""
        delay = 0.0
        if 200 <= response.status < 300:
            try:
                found = self.parser.from_crawler(self.crawler, response.body).crawl_delay(self.agent)
            except Exception:
                log.debug("unreadable robots.txt from %s", host, exc_info=True)
                found = None
            delay = min(float(found), MAX_CRAWL_DELAY) if found else 0.0
        self.delays[host] = int(delay * 1000)
        return self.delays[host]

    async def close(self) -> None:
        await self.inner.close()
