"""Downloader middlewares: private-address refusal and Retry-After back-off.

The robots.txt middleware and the throttle override Scrapy internals and live in
:mod:`crawler.upstream`.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import socket
import time

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response
from scrapy.utils.httpobj import urlparse_cached

from .upstream import HOST_WAIT, hold_slot, slot_of

log = logging.getLogger(__name__)


class PrivateAddressRefused(IgnoreRequest):
    """The URL's host resolves to a private, loopback, link-local or reserved address."""


class Blocked(IgnoreRequest):
    """The URL (or its domain) is on the takedown blocklist; ``entry`` is the takedown line."""

    def __init__(self, entry: str):
        from .optout import OptOut

        super().__init__(f"blocklist: {entry}")
        self.entry = entry
        self.evidence = OptOut("blocked", "takedown blocklist", entry)


class BlocklistMiddleware:
    """Refuse requests (redirect targets included) whose URL or domain is on the takedown blocklist.

    Before robots.txt: a blocked host's robots.txt is not fetched either. Matches by bytes
    (sha256, pHash) happen after the download, in the image pipeline.
    """

    def __init__(self, crawler: Crawler):
        path = crawler.settings.get("CAPCRAWL_BLOCKLIST")
        if not path:
            raise NotConfigured
        from common.blocklist import BlockSet

        self.blocklist = BlockSet.read(path)
        if not len(self.blocklist):
            raise NotConfigured
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "BlocklistMiddleware":
        return cls(crawler)

    def process_request(self, request: Request, spider: Spider | None = None) -> None:
        if (entry := self.blocklist.match_urls([request.url])) is not None:
            self.stats.inc_value("capcrawl/blocklist_refused")
            raise Blocked(entry)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr


def is_public_ip(ip: str) -> bool:
    addr = _address(ip)
    return addr.is_global and not addr.is_multicast


def address_allowed(ip: str, allowed: tuple[Network, ...] = ()) -> bool:
    """A public address, or one inside a network the user allowed (``--allow-address``)."""
    if is_public_ip(ip):
        return True
    addr = _address(ip)
    return any(addr.version == net.version and addr in net for net in allowed)


def parse_networks(values: list[str] | tuple[str, ...]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "127.0.0.2"]`` -> networks; raises ValueError naming a bad one."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


class PrivateAddressMiddleware:
    """Refuse requests (redirect targets included) whose host is not a public address.

    Addresses inside ``CAPCRAWL_ALLOWED_NETWORKS`` (``--allow-address``) are allowed too.
    Resolution runs in the event loop's resolver thread pool, never on the reactor thread;
    results are cached per host for the run.
    """

    def __init__(self, crawler: Crawler):
        if crawler.settings.getbool("CAPCRAWL_ALLOW_PRIVATE_ADDRESSES"):
            raise NotConfigured
        self.stats = crawler.stats
        self.allowed = parse_networks(crawler.settings.getlist("CAPCRAWL_ALLOWED_NETWORKS"))
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

    def process_response(self, request: Request, response: Response, spider: Spider | None = None) -> Response:
        """The address the response came from must pass too (the resolvers check it before
        connecting; this is the last line, for any path around them)."""
        ip = getattr(response, "ip_address", None)
        if ip is not None and not address_allowed(str(ip), self.allowed):
            self.stats.inc_value("capcrawl/private_address_refused")
            raise PrivateAddressRefused(f"{urlparse_cached(request).hostname} answered from non-public address {ip}")
        return response

    async def _offending_address(self, host: str) -> str | None:
        try:
            return None if address_allowed(host, self.allowed) else host
        except ValueError:
            pass  # a name, not a literal address
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return None  # unresolvable: the download itself reports dns_error
        for info in infos:
            ip = info[4][0]
            if not address_allowed(ip, self.allowed):
                return ip
        return None


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


#: Statuses that slow a whole host down (Retry-After, or a doubling back-off).
BACKOFF_CODES = (429, 503)


def backoff_wait(request: Request, response: Response, max_wait: float) -> float | None:
    """Seconds the host asked to be left alone (Retry-After, else 2^(tries+1)), or None."""
    if response.status not in BACKOFF_CODES or request.meta.get("dont_retry"):
        return None
    tries = request.meta.get("retry_times", 0)
    wait = parse_retry_after(response.headers.get(b"Retry-After"))
    return min(max_wait, wait if wait is not None else 2.0 ** (tries + 1))


class RetryAfterMiddleware:
    """On 429/503, slow the whole host down (Retry-After or a doubling back-off) and retry, bounded."""

    codes = BACKOFF_CODES

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.max_wait = crawler.settings.getfloat("CAPCRAWL_MAX_RETRY_AFTER", 120.0)
        self.max_retries = crawler.settings.getint("RETRY_TIMES", 2)  # --retries, as for other failures

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "RetryAfterMiddleware":
        return cls(crawler)

    def process_response(self, request: Request, response: Response, spider: Spider | None = None) -> Request | Response:
        wait = backoff_wait(request, response, self.max_wait)
        if wait is None:
            return response
        self._slow_down(request, wait)
        self.crawler.stats.inc_value(f"capcrawl/backoff/{response.status}")
        retry = get_retry_request(
            request, spider=self.crawler.spider, reason=f"http_{response.status}", max_retry_times=self.max_retries
        )
        return retry or response

    def _slow_down(self, request: Request, wait: float) -> None:
        key, slot = slot_of(self.crawler, request)
        if slot is not None:
            until = time.monotonic() + wait
            # The slot's next request starts at lastseen + delay (monotonic time of the last
            # start, never after now), so this is at least ``wait``.
            hold_slot(slot, until - slot.lastseen)
            self.crawler.signals.send_catch_log(HOST_WAIT, slot_key=key, until=until)
            log.info("%s answered with a back-off: waiting %.1fs between requests to its host", request.url, wait)
