"""Every place where capcrawl reaches into upstream internals (Scrapy 2.19, Twisted, CPython).

Each override below names what it relies on. They were written for ``scrapy>=2.19,<2.20``
(pinned in pyproject.toml); :func:`check_upstream` compares the attributes and signatures
they rely on with the installed versions, the crawl runs it at start-up and refuses to start
on a mismatch (``tests/test_upstream.py`` fails on it too), so a Scrapy release can never
silently weaken the robots.txt guarantee.

What is here, and why:

- :class:`RobotsMiddleware` (Scrapy's ``RobotsTxtMiddleware``: ``robot_parser``,
  ``process_request_2``, ``_parsers``, ``_parserimpl``, ``_parse_robots``, ``_robots_error``).
  Correctness: Scrapy 2.19 lets every request that waits for a host's robots.txt after the
  first one through unchecked; here waiters wait on a future of their own. Scrapy also reads a
  robots.txt answered with a 5xx (an error page) or lost to a timeout as "allow all"; RFC 9309
  says complete disallow, and so does this class. Also a named exception (status ``robots``), the
  robots.txt Crawl-delay, and the raw robots.txt body kept per host for the opt-out rules
  that live in it (Content-Signal, Content-Usage).
- :class:`PoliteAutoThrottle` (``AutoThrottle._response_downloaded`` / ``_get_slot``).
  Correctness: Scrapy's moves a host's delay halfway to its latency target on every response,
  which halved a Retry-After wait and lowered a Crawl-delay.
- :func:`slot_of` / :func:`hold_slot` (the downloader's ``slots``, ``get_slot_key`` and a
  ``Slot``'s ``delay``, ``jitter``, ``lastseen``): how a host's wait is applied.
- :class:`AiohttpHandler` (the private module ``scrapy.core.downloader.handlers._aiohttp``,
  its static ``_request_headers`` and the ``aiohttp.TCPConnector`` its ``__init__`` builds).
  Safety: the connector resolves names with crawler/resolver.py's guard (no DNS rebinding). Speed, measured: the aiohttp client costs the crawl
  process ~18% less CPU than Twisted's (bench/README.md); not copying every request's headers
  was ~3% of the crawl process's CPU (part of a 1.5% faster download, ab_checkouts.sh).
- :func:`without_twisted_exceptions` (the names in Scrapy's default ``RETRY_EXCEPTIONS``).
  Speed: naming Twisted's ``TunnelError`` imports its TLS stack, ~0.1 s of every start.
- :func:`set_scrapy_log_levels` (Scrapy's logging set-up resets its loggers). Speed and
  quiet: ~2% of the crawl process's CPU went to debug records nobody printed.
- :data:`TWISTED_CONNECTION_ERRORS` (``twisted.web._newclient``): mapping Twisted client
  failures to ``connection_error``.
- :func:`cancel_queued_downloads` (the downloader's ``slots`` and each slot's ``queue`` of
  ``(request, Deferred)``): a stopping crawl fails the requests still queued for a host (a
  long Crawl-delay) as cancelled, instead of sending them all before it closes.
- :func:`engine_closing` / :func:`scraper_idle` (the engine's ``_slot.closing`` and the
  scraper's ``slot.is_idle()``): a crawl worker (crawler/spiders/cluster.py) feeds the
  downloader from Redis only while the engine is open, and puts its rows in a part when nothing
  is in flight; its per-host gate (crawler/hostgate.py) stops waiting when the engine closes.
- :func:`widen_pool_pipes` (CPython's ``ProcessPoolExecutor._call_queue`` /
  ``_result_queue`` and their ``_writer`` connections). Speed, measured: 1 MB pipes instead of
  64 KB made bench/vs_img2dataset.sh's download ~2.3% faster (ab_checkouts.sh, 5 pairs).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # Windows: pipes stay at their default size
    fcntl = None  # type: ignore[assignment]

import scrapy
from scrapy import Request, Spider, signals as scrapy_signals
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.exceptions import CannotResolveHostError, DownloadConnectionRefusedError, IgnoreRequest, StopDownload
from scrapy.extensions.throttle import AutoThrottle
from scrapy.http import Headers, Response
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.python import to_unicode
from twisted.internet.defer import CancelledError as TwistedCancelledError
from twisted.internet.error import ConnectionRefusedError as TwistedConnectionRefused, DNSLookupError
from twisted.web._newclient import ResponseFailed, ResponseNeverReceived

from .optout import ROBOTS, SOURCE_ROBOTS, OptOut, RobotsRules, agent_token

if TYPE_CHECKING:
    import concurrent.futures as cf

log = logging.getLogger(__name__)

#: The Scrapy releases these overrides were written and tested for.
SCRAPY_SERIES = (2, 19)


class RobotsForbidden(IgnoreRequest):
    """robots.txt disallows this URL for our user agent; ``evidence`` names the rule, ``detail``
    is the row's error text."""

    def __init__(self, message: str, evidence: OptOut | None = None, detail: str | None = None):
        super().__init__(message)
        self.evidence = evidence or OptOut(ROBOTS, SOURCE_ROBOTS, "disallow")
        self.detail = detail or "disallowed by robots.txt (not requested)"


#: Failures to download a robots.txt after which the host's next request asks for it again (and
#: meanwhile fails the same way): the name does not resolve, or nothing listens.
ROBOTS_RETRY_ERRORS = (CannotResolveHostError, DownloadConnectionRefusedError, DNSLookupError, TwistedConnectionRefused)

#: How much of a robots.txt is read and parsed (RFC 9309 2.5: at least 500 KiB); the download
#: stops there, whatever its size, and the rest is ignored (Google reads as much).
ROBOTS_PARSE_BYTES = 500 * 1024

#: robots.txt that stands for a host whose robots.txt is unreachable (RFC 9309, 2.3.1.4).
DISALLOW_ALL = b"User-agent: *\nDisallow: /\n"


def _robots_unreachable_status(status: int) -> bool:
    """An answer to robots.txt that means "unreachable", so complete disallow (RFC 9309): a
    server error, or 429 (too many requests), which is no permission either."""
    return status >= 500 or status == 429


class _QuietRobotsErrors(logging.Filter):
    """Drops Scrapy's traceback for a robots.txt that could not be downloaded; the middleware
    logs one line of its own (the rows carry the status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Error downloading")


#: Signal sent once per host when its robots.txt has been read: ``netloc`` and ``text`` (the
#: decoded body of a 2xx answer, "" otherwise), for the opt-out rules robots.txt also holds
#: (Content-Usage, Content-Signal: crawler/optout_middleware.py). Scrapy's parser keeps no text.
ROBOTS_TEXT = object()

#: Signal sent when a host asks for a wait: ``slot_key`` with ``delay`` (robots.txt
#: Crawl-delay: a minimum between requests, for good) and/or ``until`` (Retry-After: no
#: request before then; ``time.monotonic()``, the clock of Scrapy's download slots).
HOST_WAIT = object()


# --- download slots ----------------------------------------------------------------------


def slot_of(crawler: Crawler, request: Request) -> tuple[str, Any]:
    """The downloader slot key of ``request`` and its slot (None before its first request)."""
    downloader = crawler.engine.downloader
    key = downloader.get_slot_key(request)
    return key, downloader.slots.get(key)


def hold_slot(slot: Any, delay: float) -> None:
    """Make ``slot`` wait at least ``delay`` seconds between request starts, with no jitter
    (a random 0.5x of the delay would break a Crawl-delay or come back before a Retry-After)."""
    slot.jitter = 0.0
    slot.delay = max(slot.delay, delay)


def engine_closing(crawler: Crawler) -> bool:
    """The engine is closing the spider, or has closed it (its slot's ``closing`` Deferred is set)."""
    engine = crawler.engine
    slot = getattr(engine, "_slot", None) if engine is not None else None
    return slot is None or slot.closing is not None


async def until_closing(crawler: Crawler, poll: float) -> None:
    """Return once the engine starts closing the spider (a deadline, Ctrl-C, or the end)."""
    engine = crawler.engine
    while getattr(engine, "_slot", None) is None:  # not open yet
        await asyncio.sleep(poll)
    slot = engine._slot
    while slot.closing is None:
        await asyncio.sleep(poll)


def cancel_queued_downloads(crawler: Crawler) -> int:
    """Fail the requests waiting in the downloader's per-host queues (for a Crawl-delay, a
    back-off or a free connection) as cancelled; the number failed.

    Scrapy's graceful stop sends every queued request first, so a host held at a 60 s
    Crawl-delay kept a stopping crawl alive for minutes. Cancelled requests stay pending and
    the next run fetches them; requests already on the wire finish.
    """
    from twisted.python.failure import Failure

    cancelled = 0
    for slot in list(crawler.engine.downloader.slots.values()):
        while slot.queue:
            _, dfd = slot.queue.popleft()
            dfd.errback(Failure(TwistedCancelledError("stopping: fetched by the next run")))
            cancelled += 1
    return cancelled


def scraper_idle(crawler: Crawler) -> bool:
    """No response or item is being processed by the spider or the item pipelines."""
    slot = crawler.engine.scraper.slot
    return slot is None or slot.is_idle()


# --- robots.txt ----------------------------------------------------------------------------


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
        self.unreachable: dict[str, str] = {}  # netloc -> why its robots.txt counts as "disallow all"
        self._ask_again: dict[str, Exception] = {}  # netloc -> why its robots.txt download failed to connect
        self._stopped: set[str] = set()  # netlocs whose robots.txt download a stopping crawl cancelled
        crawler.signals.connect(self._robots_bytes, signal=scrapy_signals.bytes_received)
        robots_log = logging.getLogger(RobotsTxtMiddleware.__module__)
        if not any(isinstance(f, _QuietRobotsErrors) for f in robots_log.filters):
            robots_log.addFilter(_QuietRobotsErrors())

    async def process_request(self, request: Request, spider: Spider | None = None) -> None:
        if request.meta.get("dont_obey_robotstxt") and urlparse_cached(request).path == "/robots.txt":
            # Any size may come (no --max-page-bytes cancel); the first ROBOTS_PARSE_BYTES are read.
            request.meta["cc_robots"] = True
            request.meta["download_maxsize"] = 0
        await super().process_request(request)
        self._keep_crawl_delay(request)

    def _robots_bytes(self, data: bytes, request: Request, spider: Spider | None = None) -> None:
        """Stop a robots.txt download (its redirects' too) at ROBOTS_PARSE_BYTES, keeping what came."""
        if request.meta.get("cc_robots"):
            got = request.meta.get("cc_robots_bytes", 0) + len(data)
            request.meta["cc_robots_bytes"] = got
            if got >= ROBOTS_PARSE_BYTES:
                raise StopDownload(fail=False)

    def _keep_crawl_delay(self, request: Request) -> None:
        key, slot = slot_of(self.crawler, request)
        delay = self.crawl_delays.get(key)
        if delay and slot is not None:
            hold_slot(slot, delay)

    def process_request_2(self, rp: Any, request: Request) -> None:
        if rp is not None:
            key, _ = slot_of(self.crawler, request)
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
            why = self.unreachable.get(urlparse_cached(request).netloc)
            raise RobotsForbidden(str(e), self._evidence(request), f"{why}: not requested" if why else None) from e

    async def _parse_robots(self, response: Response, netloc: str, request: Request) -> None:
        text = ""
        if 200 <= response.status < 300:
            if len(response.body) > ROBOTS_PARSE_BYTES:  # cut at the limit, after the last whole line
                body = response.body[:ROBOTS_PARSE_BYTES]
                response = response.replace(body=body[: body.rfind(b"\n") + 1] or body)
                log.info("robots.txt of %s: only its first %d bytes are read (RFC 9309 2.5)", netloc, ROBOTS_PARSE_BYTES)
            text = response.body.decode("utf-8-sig", errors="replace")
        elif _robots_unreachable_status(response.status):
            self._unreachable(netloc, f"robots.txt unreachable (HTTP {response.status})")
            response = response.replace(body=DISALLOW_ALL)
        elif response.status >= 400:  # 4xx: no robots.txt, everything allowed (RFC 9309, 2.3.1.3)
            response = response.replace(body=b"")
        self.robots_texts[netloc] = text
        self.crawler.signals.send_catch_log(ROBOTS_TEXT, netloc=netloc, text=text)
        await super()._parse_robots(response, netloc, request)

    def _robots_error(self, exc: Exception, netloc: str) -> None:
        """robots.txt could not be downloaded. A host that cannot be resolved or refuses
        connections gets its robots.txt asked for again by its next request; the request that
        was waiting for it fails with that error, unsent (no request goes out unchecked), and
        its retries ask again. Any other failure (a timeout, a cut connection) means
        unreachable: complete disallow, as RFC 9309 asks."""
        super()._robots_error(exc, netloc)
        if isinstance(exc, IgnoreRequest):
            return
        if isinstance(exc, TwistedCancelledError):  # the crawl is stopping: the request waits for the next run
            self._ask_again[netloc] = exc
            self._stopped.add(netloc)
            return
        if isinstance(exc, ROBOTS_RETRY_ERRORS):
            log.info("robots.txt of %s: %s; asked again with the next request", netloc, type(exc).__name__)
            self._ask_again[netloc] = exc
            return
        self._unreachable(netloc, f"robots.txt unreachable ({type(exc).__name__})")
        self._parsers[netloc] = build_from_crawler(self._parserimpl, self.crawler, DISALLOW_ALL)  # after Scrapy's None

    def _unreachable(self, netloc: str, why: str) -> None:
        log.warning("%s: %s; nothing on that host is fetched (RFC 9309)", netloc, why)
        self.unreachable[netloc] = why
        self._stats.inc_value("capcrawl/robots_unreachable")

    def _evidence(self, request: Request) -> OptOut:
        """The Disallow line that refused ``request`` (``disallow`` when it cannot be told)."""
        netloc = urlparse_cached(request).netloc
        if netloc in self.unreachable:
            return OptOut(ROBOTS, SOURCE_ROBOTS, self.unreachable[netloc])
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
            parser = await super().robot_parser(request)
            if netloc in self._stopped:
                self._stopped.discard(netloc)
                raise TwistedCancelledError("stopping: fetched by the next run")
            failed = self._ask_again.get(netloc)
        finally:
            if netloc in self._ask_again:
                del self._ask_again[netloc]
                self._parsers.pop(netloc, None)
            del self._fetching[netloc]
            done.set_result(None)
        if failed is not None:
            # Scrapy would let the request go with no robots.txt read (RFC 9309 forbids that):
            # it fails as the robots.txt download did, and its retries ask for robots.txt again.
            raise failed
        return parser


# --- AutoThrottle --------------------------------------------------------------------------


class PoliteAutoThrottle(AutoThrottle):
    """Scrapy's AutoThrottle, except that it never shortens a wait a host asked for.

    On every response Scrapy's moves the host's delay halfway towards its latency target: the
    first image to arrive after a 429 with ``Retry-After: 1`` halved the wait that
    :class:`crawler.middlewares.RetryAfterMiddleware` had set (the retry came back after
    ~0.5 s), and a Crawl-delay was lowered until the robots middleware put it back. The floors
    are applied in the same signal handler, before the slot starts its next request.
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


# --- HTTP clients --------------------------------------------------------------------------

_AIOHTTP_MODULE = "scrapy.core.downloader.handlers._aiohttp"
#: Import path of the aiohttp handler class (Scrapy's DOWNLOAD_HANDLERS setting).
AIOHTTP_HANDLER = f"{__name__}.AiohttpHandler"


#: aiohttp's response limits (8,190-byte header lines, 128 headers) refuse what web servers
#: send and browsers and Twisted read: a stock nginx's 11 KB Content-Security-Policy, a 12 KB
#: Set-Cookie, 150 headers. These are Twisted's order of size, still bounded.
AIOHTTP_HEADER_LIMITS = {"max_line_size": 65536, "max_field_size": 65536, "max_headers": 1024}


def _aiohttp_handler_class() -> type:
    """capcrawl's aiohttp download handler, defined on first use (it imports aiohttp)."""
    import importlib

    base = importlib.import_module(_AIOHTTP_MODULE).AiohttpDownloadHandler

    class AiohttpHandler(base):  # type: ignore[misc, valid-type]
        """Scrapy's aiohttp handler, without the 'experimental' warning (capcrawl's suite runs
        every crawl through it), without a copy of every request's headers, and with a resolver
        that checks the addresses its connections use (crawler/resolver.py)."""

        experimental = False

        def __init__(self, crawler: Crawler):
            # Scrapy builds its aiohttp.TCPConnector inside __init__ with no way to pass a
            # resolver: the connector class is swapped for one that takes ours, for the
            # duration of the call (construction is single-threaded, on the event loop).
            import aiohttp

            from .resolver import Guard, GuardedAiohttpResolver

            resolver = GuardedAiohttpResolver(Guard.from_settings(crawler.settings))
            real, real_session = aiohttp.TCPConnector, aiohttp.ClientSession

            def connector(*args: Any, **kwargs: Any) -> Any:
                return real(*args, resolver=resolver, **kwargs)

            def session(*args: Any, **kwargs: Any) -> Any:
                return real_session(*args, **AIOHTTP_HEADER_LIMITS, **kwargs)

            aiohttp.TCPConnector = connector  # type: ignore[misc]
            aiohttp.ClientSession = session  # type: ignore[misc]
            try:
                super().__init__(crawler)
            finally:
                aiohttp.TCPConnector = real  # type: ignore[misc]
                aiohttp.ClientSession = real_session  # type: ignore[misc]

        @staticmethod
        def _request_headers(request: Request) -> Headers:
            """The headers to send: the request's own unless it has a Proxy-Authorization to leave out.

            Scrapy's copies every request's headers (re-normalising each key and value) only to
            drop that one header from the copy; the caller just reads them. With the header
            present, Scrapy's own method does the work.
            """
            if b"Proxy-Authorization" in request.headers:
                return base._request_headers(request)
            return request.headers

    AiohttpHandler.__module__ = __name__
    AiohttpHandler.__qualname__ = "AiohttpHandler"
    return AiohttpHandler


def aiohttp_available() -> str | None:
    """None when Scrapy's aiohttp handler imports, else why not."""
    try:
        _aiohttp_handler_class()
    except (ImportError, AttributeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


_LAZY: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name == "AiohttpHandler":
        if name not in _LAZY:
            _LAZY[name] = _aiohttp_handler_class()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_TWISTED_HANDLER = "scrapy.core.downloader.handlers.http11."


def without_twisted_exceptions(retry_exceptions: list[Any]) -> list[Any]:
    """RETRY_EXCEPTIONS less the Twisted client's own (Scrapy lists its proxy TunnelError).

    The aiohttp handler never raises those, and naming one makes the retry middleware import
    Twisted's HTTP/1.1 handler and its TLS stack: ~0.1 s of every start.
    """
    return [e for e in retry_exceptions if not (isinstance(e, str) and e.startswith(_TWISTED_HANDLER))]


#: Failures of Twisted's HTTP client that mean the connection broke.
TWISTED_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (ResponseFailed, ResponseNeverReceived)


# --- logging -------------------------------------------------------------------------------

#: Scrapy loggers quieter than the rest at capcrawl's default level (WARNING): one warning per
#: oversized image or exhausted retry is noise in a crawl of millions; stats.json counts them.
QUIET_AT_WARNING = {
    "scrapy.core.downloader.handlers.http11": logging.ERROR,  # Twisted's client
    "scrapy.core.downloader.handlers._base_streaming": logging.ERROR,  # aiohttp's
    "scrapy.downloadermiddlewares.retry": logging.CRITICAL,
}


def set_scrapy_log_levels(log_level: str) -> None:
    """Scrapy's loggers at ``log_level``; call it after Scrapy has configured logging.

    Scrapy's set-up (in ``AsyncCrawlerProcess``) puts its own logger at DEBUG whatever
    LOG_LEVEL says, leaving the filtering to the handlers: every response and every item then
    built a "Crawled (200)" and a "Scraped from" record that no handler printed (~2% of the
    crawl process's CPU). It also resets the levels of the loggers below it, so the quieter
    ones of :data:`QUIET_AT_WARNING` are set here too, after it.
    """
    logging.getLogger("scrapy").setLevel(log_level)
    quiet = QUIET_AT_WARNING if log_level == "WARNING" else {}
    for name in QUIET_AT_WARNING:
        logging.getLogger(name).setLevel(quiet.get(name, logging.NOTSET))


# --- CPython's process pool ----------------------------------------------------------------


def widen_pool_pipes(pool: cf.ProcessPoolExecutor, size: int) -> int:
    """Let each pipe of the pool's task and result queues hold a whole batch (Linux only).

    With 64 KB pipes a batch (~1 MB of bodies) crossed in ~16 chunks, and the crawl process's
    side needs the GIL for each one: its feeder and result threads take it from the busy event
    loop, so a worker that had finished a batch sat blocked, sending its results or waiting for
    the rest of the next batch. Where an attribute is missing or the size is refused (a
    per-user pipe limit), the pipes stay as they were. Returns how many pipes were widened.
    """
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setpipe is None:
        return 0
    widened = 0
    for queue in (getattr(pool, "_call_queue", None), getattr(pool, "_result_queue", None)):
        conn = getattr(queue, "_writer", None)
        try:
            if fcntl.fcntl(conn.fileno(), setpipe, size) >= size:
                widened += 1
        except (AttributeError, OSError, ValueError):
            continue
    return widened


# --- the check -----------------------------------------------------------------------------


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def check_upstream(optional: bool = True) -> list[str]:
    """What the overrides above rely on and the installed versions no longer offer ([] = all there).

    With ``optional=False`` only what the respect rules and politeness depend on (robots.txt,
    the throttle, download slots): the crawl refuses to start without those. The speed-ups
    (aiohttp handler, pipes) have fallbacks.
    """
    problems: list[str] = []
    version = tuple(int(p) for p in scrapy.__version__.split(".")[:2] if p.isdigit())
    if version != SCRAPY_SERIES:
        problems.append(f"Scrapy {scrapy.__version__} is installed; capcrawl's overrides were written for "
                        f"{'.'.join(map(str, SCRAPY_SERIES))}.x")
    expect = [
        (RobotsTxtMiddleware, "robot_parser", ["self", "request"], True),
        (RobotsTxtMiddleware, "process_request_2", ["self", "rp", "request"], False),
        (RobotsTxtMiddleware, "_parse_robots", ["self", "response", "netloc", "request"], True),
        (RobotsTxtMiddleware, "_robots_error", ["self", "exc", "netloc"], False),
        (RobotsTxtMiddleware, "process_request", ["self", "request", "spider"], True),
        (AutoThrottle, "_response_downloaded", ["self", "response", "request", "spider"], False),
        (AutoThrottle, "_get_slot", ["self", "request", "spider"], False),
    ]
    for cls, name, params, coroutine in expect:
        fn = getattr(cls, name, None)
        if fn is None:
            problems.append(f"{cls.__name__}.{name} is gone")
            continue
        if _params(fn) != params:
            problems.append(f"{cls.__name__}.{name} takes {_params(fn)}, not {params}")
        if inspect.iscoroutinefunction(fn) != coroutine:
            problems.append(f"{cls.__name__}.{name} is {'no longer' if coroutine else 'now'} a coroutine")
    for attr in ("_parsers", "_parserimpl", "_robotstxt_useragent", "_default_useragent", "_stats"):
        if attr not in inspect.getsource(RobotsTxtMiddleware.__init__):
            problems.append(f"RobotsTxtMiddleware no longer sets {attr}")
    from scrapy.core.downloader import Downloader, Slot as DownloaderSlot
    from scrapy.core.engine import ExecutionEngine, _Slot
    from scrapy.core.scraper import Slot as ScraperSlot

    if "queue" not in getattr(DownloaderSlot, "__dataclass_fields__", {}):
        problems.append("the downloader's Slot no longer has a queue")
    if "self.slots" not in inspect.getsource(Downloader.__init__):
        problems.append("the Downloader no longer keeps its slots in slots")

    if "self._slot" not in inspect.getsource(ExecutionEngine.__init__):
        problems.append("ExecutionEngine no longer keeps its slot in _slot")
    if "self.closing" not in inspect.getsource(_Slot.__init__):
        problems.append("the engine's slot no longer has closing")
    if not callable(getattr(ScraperSlot, "is_idle", None)):
        problems.append("the scraper's Slot.is_idle is gone")
    from scrapy.core.downloader import Downloader, Slot

    if "get_slot_key" not in vars(Downloader):
        problems.append("Downloader.get_slot_key is gone")
    slot_src = inspect.getsource(Slot)
    for attr in ("delay", "jitter", "lastseen"):
        if f"{attr}:" not in slot_src and f"self.{attr}" not in slot_src:
            problems.append(f"Slot.{attr} is gone")
    if not optional:
        return problems
    try:
        import importlib

        handler = importlib.import_module(_AIOHTTP_MODULE).AiohttpDownloadHandler
        if "aiohttp.ClientSession(" not in inspect.getsource(handler.__init__):
            problems.append("AiohttpDownloadHandler.__init__ no longer builds aiohttp.ClientSession: long headers are refused")
        if "aiohttp.TCPConnector(" not in inspect.getsource(handler.__init__):
            problems.append("AiohttpDownloadHandler.__init__ no longer builds aiohttp.TCPConnector: the connection-time address check is off")
        if not isinstance(inspect.getattr_static(handler, "_request_headers"), staticmethod):
            problems.append("AiohttpDownloadHandler._request_headers is no longer a static method")
        elif _params(handler._request_headers) != ["request"]:
            problems.append(f"AiohttpDownloadHandler._request_headers takes {_params(handler._request_headers)}")
    except (ImportError, AttributeError) as e:
        problems.append(f"Scrapy's aiohttp handler is unavailable ({e}); --http-client twisted still works")
    from scrapy.crawler import AsyncCrawlerProcess

    # crawler.stage: a second Ctrl-C saves what is finished before Scrapy cancels the rest.
    for name in ("_signal_kill_reactorless", "_signal_kill", "_signal_shutdown_reactorless", "_signal_shutdown"):
        if len(_params(getattr(AsyncCrawlerProcess, name, lambda: None))) != 3:
            problems.append(f"AsyncCrawlerProcess.{name}(signum, frame) is gone: Ctrl-C may not stop the crawl cleanly")
    if "_reactorless_loop" not in inspect.getsource(AsyncCrawlerProcess):
        problems.append("AsyncCrawlerProcess no longer keeps _reactorless_loop")
    from scrapy.crawler import Crawler

    if "self._engine" not in inspect.getsource(Crawler):
        problems.append("Crawler no longer keeps _engine: a Ctrl-C in the crawl's first second may not stop it")
    import concurrent.futures as cf

    init_src = inspect.getsource(cf.ProcessPoolExecutor)
    for attr in ("_call_queue", "_result_queue"):
        if f"self.{attr}" not in init_src:
            problems.append(f"ProcessPoolExecutor no longer has {attr}")
    return problems
