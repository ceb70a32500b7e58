"""Downloader middlewares: private-address refusal, robots.txt with a named status, Retry-After."""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import socket
import time
from typing import Any

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.extensions.throttle import AutoThrottle
from scrapy.http import Response
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.python import to_unicode

from .optout import ROBOTS, SOURCE_ROBOTS, OptOut, RobotsRules, agent_token

log = logging.getLogger(__name__)


class RobotsForbidden(IgnoreRequest):
    """robots.txt disallows this URL for our user agent; ``evidence`` names the rule."""

    def __init__(self, message: str, evidence: OptOut | None = None):
        super().__init__(message)
        self.evidence = evidence or OptOut(ROBOTS, SOURCE_ROBOTS, "disallow")


class PrivateAddressRefused(IgnoreRequest):
    """The URL's host resolves to a private, loopback, link-local or reserved address."""


def is_public_ip(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


class PrivateAddressMiddleware:
    """Refuse requests (redirect targets included) whose host is not a public address.

    Resolution runs in the event loop's resolver thread pool, never on the reactor
    thread; results are cached per host for the run.
    """

    def __init__(self, crawler: Crawler):
        if crawler.settings.getbool("CAPCRAWL_ALLOW_PRIVATE_ADDRESSES"):
            raise NotConfigured
        self.stats = crawler.stats
        self._cache: dict[str, str | None] = {}  # host -> offending address or None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "PrivateAddressMiddleware":
        return cls(crawler)

    async def process_request(self, request: Request, spider: Spider | None = None) -> None:
        host = urlparse_cached(request).hostname
        if not host:
            return
        if host not in self._cache:
            self._cache[host] = await self._offending_address(host)
        if bad := self._cache[host]:
            self.stats.inc_value("capcrawl/private_address_refused")
            raise PrivateAddressRefused(f"{host} resolves to non-public address {bad}")

    async def _offending_address(self, host: str) -> str | None:
        try:
            return None if is_public_ip(host) else host
        except ValueError:
            pass  # a name, not a literal address
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return None  # unresolvable: the download itself reports dns_error
        for info in infos:
            ip = info[4][0]
            if not is_public_ip(ip):
                return ip
        return None


#: Signal sent once per host when its robots.txt has been read: ``netloc`` and ``text`` (the
#: decoded body of a 2xx answer, "" otherwise), for the opt-out rules robots.txt also holds
#: (Content-Usage, Content-Signal: crawler/optout_middleware.py). Scrapy's parser keeps no text.
ROBOTS_TEXT = object()


class RobotsMiddleware(RobotsTxtMiddleware):
    """Scrapy's robots.txt middleware, raising :class:`RobotsForbidden` so it gets its own status.

    It also fixes a race in Scrapy 2.19: requests that wait for a host's robots.txt while
    it is being fetched all await one Deferred, and every waiter after the first receives
    None ("no robots.txt") and is let through. Here waiters wait on their own future.

    It keeps each host's robots.txt text: to name the Disallow rule that refused a URL, and
    to hand it on (:data:`ROBOTS_TEXT`) to the opt-out middleware.
    """

    max_crawl_delay = 60.0

    def __init__(self, crawler: Crawler):
        super().__init__(crawler)
        self._fetching: dict[str, asyncio.Future] = {}
        self.crawl_delays: dict[str, float] = {}  # slot key -> robots.txt Crawl-delay
        self.robots_texts: dict[str, str] = {}  # netloc -> robots.txt text ("" when none)
        self._robots_rules: dict[str, RobotsRules] = {}  # parsed from the text when a URL is refused

    async def process_request(self, request: Request, spider: Spider | None = None) -> None:
        await super().process_request(request)
        self._keep_crawl_delay(request)

    def _keep_crawl_delay(self, request: Request) -> None:
        downloader = self.crawler.engine.downloader
        key = downloader.get_slot_key(request)
        delay = self.crawl_delays.get(key)
        slot = downloader.slots.get(key)
        if delay and slot is not None:
            slot.jitter = 0.0  # Crawl-delay is a minimum; a random 0.5x would break it
            slot.delay = max(slot.delay, delay)

    def process_request_2(self, rp: Any, request: Request) -> None:
        if rp is not None:
            key = self.crawler.engine.downloader.get_slot_key(request)
            if key not in self.crawl_delays:
                agent = self._robotstxt_useragent or request.headers.get(b"User-Agent", self._default_useragent)
                delay = rp.crawl_delay(agent)
                self.crawl_delays[key] = min(float(delay), self.max_crawl_delay) if delay else 0.0
                if delay:
                    self._stats.set_value(f"capcrawl/crawl_delay/{key}", self.crawl_delays[key])
                    # so that AutoThrottle, which moves the delay on every response, keeps it
                    self.crawler.signals.send_catch_log(HOST_WAIT, slot_key=key, delay=self.crawl_delays[key])
        try:
            super().process_request_2(rp, request)
        except IgnoreRequest as e:
            raise RobotsForbidden(str(e), self._evidence(request)) from e

    async def _parse_robots(self, response: Response, netloc: str, request: Request) -> None:
        text = ""
        if 200 <= response.status < 300:
            text = response.body.decode("utf-8-sig", errors="replace")
        self.robots_texts[netloc] = text
        self.crawler.signals.send_catch_log(ROBOTS_TEXT, netloc=netloc, text=text)
        await super()._parse_robots(response, netloc, request)

    def _evidence(self, request: Request) -> OptOut:
        """The Disallow line that refused ``request`` (``disallow`` when it cannot be told)."""
        netloc = urlparse_cached(request).netloc
        if netloc not in self._robots_rules:
            agent = self._robotstxt_useragent or to_unicode(request.headers.get(b"User-Agent") or self._default_useragent)
            self._robots_rules[netloc] = RobotsRules(self.robots_texts.get(netloc, ""), agent_token(agent))
        rule = self._robots_rules[netloc].disallowing_rule(request.url)
        return OptOut(ROBOTS, SOURCE_ROBOTS, rule or "disallow")

    async def robot_parser(self, request: Request) -> Any:
        netloc = urlparse_cached(request).netloc
        while netloc in self._fetching:
            await asyncio.shield(self._fetching[netloc])
        if netloc in self._parsers:
            return await super().robot_parser(request)  # already parsed: returns it at once
        done = asyncio.get_running_loop().create_future()
        self._fetching[netloc] = done
        try:
            return await super().robot_parser(request)
        finally:
            del self._fetching[netloc]
            done.set_result(None)


def parse_retry_after(value: bytes | str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


#: Signal sent when a host asks for a wait: ``slot_key`` with ``delay`` (robots.txt
#: Crawl-delay: a minimum between requests, for good) and/or ``until`` (Retry-After: no
#: request before then; ``time.monotonic()``, the clock of Scrapy's download slots).
HOST_WAIT = object()


class PoliteAutoThrottle(AutoThrottle):
    """Scrapy's AutoThrottle, except that it never shortens a wait a host asked for.

    On every response Scrapy's moves the host's delay halfway towards its latency target: the
    first image to arrive after a 429 with ``Retry-After: 1`` halved the wait that
    :class:`RetryAfterMiddleware` had set (the retry came back after ~0.5 s), and a
    Crawl-delay was lowered until the robots middleware put it back. The floors are applied
    in the same signal handler, before the slot starts its next request.
    """

    def __init__(self, crawler: Crawler):
        super().__init__(crawler)
        self._delay: dict[str, float] = {}
        self._until: dict[str, float] = {}
        crawler.signals.connect(self._host_wait, signal=HOST_WAIT)

    def _host_wait(self, slot_key: str, delay: float = 0.0, until: float = 0.0) -> None:
        self._delay[slot_key] = max(self._delay.get(slot_key, 0.0), delay)
        self._until[slot_key] = max(self._until.get(slot_key, 0.0), until)

    def _response_downloaded(self, response: Response, request: Request, spider: Spider) -> None:
        super()._response_downloaded(response, request, spider)
        key, slot = self._get_slot(request, spider)
        if slot is None or key not in self._delay:
            return
        floor = self._delay[key]
        if self._until[key] > time.monotonic():
            floor = max(floor, self._until[key] - slot.lastseen)
        slot.delay = max(slot.delay, floor)


class RetryAfterMiddleware:
    """On 429/503, slow the whole host down (Retry-After or a doubling back-off) and retry, bounded."""

    codes = (429, 503)

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.max_wait = crawler.settings.getfloat("CAPCRAWL_MAX_RETRY_AFTER", 120.0)
        self.max_retries = crawler.settings.getint("RETRY_TIMES", 2) + 1

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "RetryAfterMiddleware":
        return cls(crawler)

    def process_response(self, request: Request, response: Response, spider: Spider | None = None) -> Request | Response:
        if response.status not in self.codes or request.meta.get("dont_retry"):
            return response
        tries = request.meta.get("retry_times", 0)
        wait = parse_retry_after(response.headers.get(b"Retry-After"))
        wait = min(self.max_wait, wait if wait is not None else 2.0 ** (tries + 1))
        self._slow_down(request, wait)
        self.crawler.stats.inc_value(f"capcrawl/backoff/{response.status}")
        retry = get_retry_request(
            request, spider=self.crawler.spider, reason=f"http_{response.status}", max_retry_times=self.max_retries
        )
        return retry or response

    def _slow_down(self, request: Request, wait: float) -> None:
        downloader = self.crawler.engine.downloader
        key = downloader.get_slot_key(request)
        slot = downloader.slots.get(key)
        if slot is not None:
            until = time.monotonic() + wait
            # The slot's next request starts at lastseen + delay (monotonic time of the last
            # start, never after now), so this is at least ``wait``.
            slot.delay = max(slot.delay, until - slot.lastseen)
            slot.jitter = 0.0  # a random 0.5x of the delay would come back before Retry-After
            self.crawler.signals.send_catch_log(HOST_WAIT, slot_key=key, until=until)
            log.info("%s answered with a back-off: waiting %.1fs between requests to its host", request.url, wait)
