"""Obeying opt-out signals in the crawl: a downloader middleware and a response check.

:class:`OptOutMiddleware` refuses, before it is sent, every request whose URL a host's files
opt out: ``/.well-known/tdmrep.json`` (TDMRep), ``/ai.txt`` (Spawning) and the Content-Usage /
Content-Signal rules of its robots.txt. Both files are fetched once per host, like robots.txt,
and robots.txt itself is not fetched again: :class:`crawler.upstream.RobotsMiddleware`
hands its text over (or, with robots.txt access rules switched off by ``--ignore-robots``,
this middleware fetches it for its usage rules, which stay obeyed). A refused request fails
with :class:`OptedOut`, which carries the evidence. Pages are refused the same way as images.

:func:`response_opt_out` is the check of what a downloaded response declares for itself
(X-Robots-Tag noai/noimageai/noml, Content-Usage, tdm-reservation, and a page's meta tags);
the spider calls it and discards the bytes of an opted-out image.
"""

from __future__ import annotations

import asyncio
import logging

from parsel import Selector
from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.defer import CancelledError as TwistedCancelledError

from . import optout
from .upstream import ROBOTS_TEXT
from .optout import OptOut, SiteRules

log = logging.getLogger(__name__)

#: Request meta key set on the middleware's own fetches of the files (never refused by it).
FILE_META = "cc_optout_file"
AI_TXT_PATH = "/ai.txt"
TDMREP_PATH = "/.well-known/tdmrep.json"
ROBOTS_PATH = "/robots.txt"


class OptedOut(IgnoreRequest):
    """A host's opt-out rules forbid this URL; it was not requested. ``evidence`` says why."""

    def __init__(self, evidence: OptOut):
        super().__init__(f"opted out by {evidence.signal} ({evidence.describe()}); not requested")
        self.evidence = evidence


class OptOutMiddleware:
    """Refuse requests that tdmrep.json, ai.txt or robots.txt usage rules opt out.

    Runs after the robots middleware (crawler/settings.py), so robots.txt has been read for
    the request's host when it runs. Requests waiting for a host's files wait on their own
    future (the same fix as RobotsMiddleware's for Scrapy's shared Deferred).
    """

    DOWNLOAD_PRIORITY = 1000  # as Scrapy's robots.txt requests: before the host's other requests

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.stats = crawler.stats
        user_agent = crawler.settings.get("ROBOTSTXT_USER_AGENT") or crawler.settings.get("USER_AGENT") or ""
        self.agent = optout.agent_token(user_agent)
        self.fetch_robots = not crawler.settings.getbool("ROBOTSTXT_OBEY")
        self._robots_texts: dict[str, str] = {}
        self._sites: dict[str, SiteRules] = {}
        self._fetching: dict[str, asyncio.Future] = {}
        crawler.signals.connect(self._robots_text, signal=ROBOTS_TEXT)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> "OptOutMiddleware":
        return cls(crawler)

    def _robots_text(self, netloc: str, text: str) -> None:
        self._robots_texts[netloc] = text

    async def process_request(self, request: Request, spider: Spider | None = None) -> None:
        if request.meta.get(FILE_META) or request.meta.get("dont_obey_robotstxt"):
            return  # the policy files themselves, robots.txt included
        if urlparse_cached(request).scheme not in ("http", "https"):
            return
        site = await self.site_rules(request)
        found = site.decision(request.url)
        if found is not None:
            self.stats.inc_value(f"capcrawl/opt_out/{found.signal}")
            log.debug("%s refused: %s", request.url, found.describe())
            raise OptedOut(found)

    async def site_rules(self, request: Request) -> SiteRules:
        """The rules of ``request``'s host, its files fetched on the first request for it."""
        netloc = urlparse_cached(request).netloc
        while netloc in self._fetching:
            await asyncio.shield(self._fetching[netloc])
        if netloc in self._sites:
            return self._sites[netloc]
        done = asyncio.get_running_loop().create_future()
        self._fetching[netloc] = done
        try:
            self._sites[netloc] = await self._read_site(request)
        finally:
            del self._fetching[netloc]
            done.set_result(None)
        return self._sites[netloc]

    async def _read_site(self, request: Request) -> SiteRules:
        parts = urlparse_cached(request)
        base = f"{parts.scheme}://{parts.netloc}"
        wanted = [self._fetch(base + AI_TXT_PATH), self._fetch(base + TDMREP_PATH)]
        if self.fetch_robots:
            wanted.append(self._fetch(base + ROBOTS_PATH))
        texts = await asyncio.gather(*wanted)
        robots = texts[2] if self.fetch_robots else self._robots_texts.get(parts.netloc)
        return SiteRules.from_texts(self.agent, robots, texts[0], texts[1], host=base)

    async def _fetch(self, url: str) -> str | None:
        """The text of a policy file; None when it is absent (not 2xx), HTML, or failed."""
        request = Request(
            url,
            priority=self.DOWNLOAD_PRIORITY,
            meta={FILE_META: True, "dont_obey_robotstxt": True},  # the page size cap applies, as to robots.txt
            callback=NO_CALLBACK,
        )
        name = url.rsplit("/", 1)[-1]
        try:
            response = await self.crawler.engine.download_async(request)
        except IgnoreRequest as e:
            log.debug("%s not fetched: %s", url, e)
            return None
        except TwistedCancelledError:  # the crawl is stopping: the request that asked waits for the next run
            raise
        except Exception as e:  # a host's missing or broken file is never fatal: no rules from it
            self.stats.inc_value(f"capcrawl/opt_out_files/{name}/error")
            log.info("%s could not be fetched (%s: %s); no rules from it", url, type(e).__name__, e)
            return None
        self.stats.inc_value(f"capcrawl/opt_out_files/{name}/{response.status}")
        if not 200 <= response.status < 300:
            return None
        ctype = (response.headers.get(b"Content-Type") or b"").decode("latin-1").lower()
        if "html" in ctype:
            log.info("%s is an HTML page, not a policy file; ignored", url)
            return None
        return response.body.decode("utf-8-sig", errors="replace")


#: The response headers that can opt a response out.
SIGNAL_HEADERS = ("x-robots-tag", "content-usage", "tdm-reservation", "tdm-policy")


def headers_of(response: Response) -> dict[str, list[str]]:
    """The values of a response's :data:`SIGNAL_HEADERS`, as text, by lower-cased name."""
    return {name: [v.decode("latin-1") for v in response.headers.getlist(name)] for name in SIGNAL_HEADERS}


def response_opt_out(response: Response, agent: str, html: Selector | None = None) -> OptOut | None:
    """The opt-out ``response`` declares for itself (for a page, pass its ``html`` for the meta tags)."""
    return optout.response_opt_out(headers_of(response), agent, html)
