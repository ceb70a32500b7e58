"""The ``images`` spider (crawl pages from seeds) and ``image_list`` (download a URL list).

Both emit one item per image URL: either the downloaded bytes (processed by
``crawler.pipelines.ImagePipeline``) or a final status. Every image URL discovered ends
as a row; pages end as counted statuses in the journal and stats.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import defaultdict, deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Iterator
from urllib.parse import urlsplit

import scrapy
from scrapy import signals
from scrapy.exceptions import StopDownload
from scrapy.http import Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure
from w3lib.encoding import html_body_declared_encoding, http_content_type_encoding, read_bom

from common.fileio import atomic_write_parquet, remove_stale_temps
from common.layout import IMAGE_PAGES_FILE
from common.options import digest
from common.records import PageStatus, Status

from ..config import CrawlConfig, check_url
from ..extract import ImageRef, extract_page
from ..failures import failure_status
from ..journal import PageEntry, PageJournal, image_page_counts, load_done_urls
from ..optout import OptOut
from ..optout_middleware import response_opt_out
from ..stats import SKIPPED, list_entry, list_key, list_skips, read_lists, write_crawl_stats, write_lists
from ..upstream import cancel_queued_downloads, engine_closing, until_closing
from ..urllist import iter_url_list

log = logging.getLogger(__name__)

#: Images go before new pages: finish what was found before exploring further.
IMAGE_PRIORITY = 10
#: Seconds between looks at the engine while it can take no more start requests.
BACKOUT_POLL_S = 0.005
#: How often a crawl looks whether its engine has started closing (to drop queued requests).
STOP_POLL_S = 0.25
_IMAGE_LINK = re.compile(r"\.(jpe?g|png|gif|webp|avif|bmp|tiff?|svg)$", re.IGNORECASE)


def _host_in(host: str, domains: set[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def image_item(ref: ImageRef, page_url: str | None, page_title: str | None) -> dict[str, Any]:
    """The fields of an image's row known from its page."""
    return {
        "url": ref.url,
        "page_url": page_url,
        "page_title": page_title,
        "alt": ref.alt,
        "title_attr": ref.title_attr,
        "figcaption": ref.figcaption,
        "context": ref.context,
        "license": ref.license,
        "license_url": ref.license_url,
        "license_source": ref.license_source,
        "chrome": ref.chrome,
    }


#: What a browser decodes an undeclared, non-UTF-8 page as (the HTML standard's default for
#: most locales). Scrapy would guess with charset_normalizer, which reads a short French page
#: as cp1250 ("crème" -> "crčme").
UNDECLARED_ENCODING = "cp1252"


def with_undeclared_encoding(response: TextResponse) -> TextResponse:
    """``response`` decoded as a browser would when neither a BOM, nor its Content-Type, nor a
    meta tag names an encoding and the body is not UTF-8: as windows-1252."""
    body = response.body
    ctype = (response.headers.get(b"Content-Type") or b"").decode("latin-1")
    if read_bom(body)[0] or http_content_type_encoding(ctype) or html_body_declared_encoding(body):
        return response
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return response.replace(encoding=UNDECLARED_ENCODING)
    return response


def unrequestable(item: dict[str, Any], error: Exception) -> dict[str, Any]:
    """The row of an image whose URL passed :func:`check_url` but Scrapy cannot request."""
    return {**item, "status": Status.BAD_URL.value, "error": f"unusable URL: {error}"[:500]}


def refusal(item: dict[str, Any], opt_out: OptOut | None) -> dict[str, Any] | None:
    """The image's final row when it must not be fetched (its page opted out, its URL is unusable)."""
    if opt_out:
        return {**item, "status": opt_out.signal, "error": f"page opted out ({opt_out.describe()})", **opt_out.row_fields()}
    if why := check_url(item["url"]):
        return {**item, "status": Status.BAD_URL.value, "error": why}
    return None


class ImagesSpider(scrapy.Spider):
    """Crawl pages from seed URLs, following in-scope links, and fetch every image found.

    A page's depth is its shortest link distance from a seed: pages are requested
    shallowest first, and when a shorter path to a page turns up later, the page's links are
    followed again from the shorter depth, so ``--max-depth`` never refuses a page that is
    within reach.
    """

    name = "images"
    #: A crawl worker's number (its part and journal names); None: the one process of an embedded crawl.
    worker_id: int | None = None
    #: Where a crawl worker records a part's URLs before the part is renamed (crawler.pipelines.PartWriter).
    part_commit: Any = None
    #: Scrapy components this spider switches off: {setting: (import path, ...)}, merged
    #: into the project's dicts in from_crawler.
    components_off: dict[str, tuple[str, ...]] = {}

    def __init__(self, config: CrawlConfig | None = None, **kwargs: Any):
        super().__init__()
        self.config = config if config is not None else CrawlConfig.from_spider_args(kwargs)
        self.crawl_dir = Path(self.config.work) / "crawl"
        self.crawl_dir.mkdir(parents=True, exist_ok=True)
        self.outstanding: set[str] = set()  # image URLs sent on their way, no item yet
        self.page_depth: dict[str, int] = {}  # admitted pages -> shortest depth known
        self.page_decisions: dict[str, set[str]] = defaultdict(set)  # refused pages by status
        self.agent_token = self.config.user_agent.split("/")[0].split()[0].lower()
        self.scope = {urlsplit(s).hostname or "" for s in self.config.seeds} | set(self.config.allow_domains)
        self.started_at = datetime.now(timezone.utc)
        self._open_state()

    def _open_state(self) -> None:
        """What earlier runs finished, from WORK/crawl (a crawl worker reads it from its frontier instead)."""
        remove_stale_temps(self.crawl_dir)  # parts and files of a run that was killed
        # Image URLs recorded in a part (by this run or an earlier one) or on their way to one.
        self.known: set[str] = load_done_urls(self.crawl_dir)
        self.journal = PageJournal(self.crawl_dir)
        if self.known:
            log.info("resuming: %d image URLs already recorded in %s", len(self.known), self.crawl_dir)

    @classmethod
    def from_crawler(cls, crawler, *args: Any, **kwargs: Any) -> "ImagesSpider":
        spider = super().from_crawler(crawler, *args, **kwargs)
        # capcrawl's options decide Scrapy's settings (command-line -s still wins).
        crawler.settings.setdict(spider.config.scrapy_settings(), priority="spider")
        for name, paths in spider.components_off.items():  # merged into, not replacing, the project's dict
            crawler.settings.set(name, {**crawler.settings.getdict(name), **dict.fromkeys(paths)}, priority="spider")
        crawler.signals.connect(spider._close_once, signal=signals.spider_closed)
        crawler.signals.connect(spider._watch_for_stop, signal=signals.spider_opened)
        crawler.signals.connect(spider._stop_watching, signal=signals.spider_closed)
        crawler.signals.connect(spider._bytes_received, signal=signals.bytes_received)
        spider.page_maxsize = crawler.settings.getint("DOWNLOAD_MAXSIZE")
        return spider

    def _watch_for_stop(self) -> None:
        self._stop_watch = asyncio.get_running_loop().create_task(self._drop_queued_when_stopping())

    async def _drop_queued_when_stopping(self) -> None:
        """Once the engine closes (a deadline, Ctrl-C), requests still queued for a host are not
        sent: they stay pending for the next run (crawler.upstream.cancel_queued_downloads)."""
        await until_closing(self.crawler, STOP_POLL_S)
        while True:  # until the spider is closed: requests still on their way in queue up too
            if n := cancel_queued_downloads(self.crawler):
                log.info("stopping: %d queued requests left for the next run", n)
            await asyncio.sleep(STOP_POLL_S)

    def _stop_watching(self) -> None:
        task = getattr(self, "_stop_watch", None)
        if task is not None and not task.done():
            task.cancel()

    def _bytes_received(self, data: bytes, request: scrapy.Request, spider: scrapy.Spider) -> None:
        """Cut a body that streams past its cap (no Content-Length to refuse it up front)."""
        got = request.meta.get("cc_bytes", 0) + len(data)
        request.meta["cc_bytes"] = got
        limit = request.meta.get("download_maxsize") or self.page_maxsize
        if limit and got > limit:
            request.meta["cc_too_large"] = f"body passed {limit} bytes while streaming"
            raise StopDownload(fail=True)

    def _count(self, key: str, n: int = 1) -> None:
        self.crawler.stats.inc_value(key, n)

    def _close_once(self, spider: scrapy.Spider | None = None, reason: str = "") -> None:
        """The journal closed and the stats written, once: at the spider's close, or sooner by
        :meth:`stop_now`."""
        if getattr(self, "_stats_written", False):
            return
        self._stats_written = True
        self._on_closed(self, reason)

    def stop_now(self) -> None:
        """A stop at once (a second Ctrl-C): what is finished is kept as it is now (the pipeline
        has just saved its rows), and nothing that the cancelled downloads return is recorded."""
        self._close_once(self, "shutdown")

    def _on_closed(self, spider: scrapy.Spider, reason: str) -> None:
        """After the pipeline flushed its last part: close the journal and write the stats."""
        self.journal.close()
        self.write_page_counts()
        write_crawl_stats(
            self.crawl_dir,
            mode=self.config.mode,
            pages=self.page_status_counts(),
            skipped=self.skipped_counts(),
            pending=self.pending_count(),
            scrapy_stats=self.crawler.stats.get_stats(),
            finish_reason=reason,
            started_at=self.started_at,
            options_digest=digest(self.config),
            options=self.config.to_dict(),
            lists=self.list_counts(),
        )

    def write_page_counts(self) -> None:
        """WORK/crawl/image_pages.parquet: on how many pages of each host an image appears."""
        table = image_page_counts(self.journal.entries)
        if table.num_rows:
            atomic_write_parquet(table, self.crawl_dir / IMAGE_PAGES_FILE)

    # --- counts for the stats -------------------------------------------------------

    def list_counts(self) -> dict[str, dict[str, Any]] | None:
        """stats.json's ``lists`` (None: a crawl from seeds keeps the earlier ones as they are)."""
        return None

    def pending_count(self) -> int:
        """Image URLs on their way that a rerun fetches (pages wait in the journal)."""
        return len(self.outstanding)

    def page_status_counts(self) -> dict[str, int]:
        counts = self.journal.status_counts()
        for status, urls in self.page_decisions.items():
            if urls:
                counts[status] = counts.get(status, 0) + len(urls)
        return counts

    def skipped_counts(self) -> dict[str, int]:
        stats = self.crawler.stats.get_stats()
        skipped = {k[len(SKIPPED):]: v for k, v in stats.items() if k.startswith(SKIPPED)}
        skipped["data_uri"] = self.journal.data_uris()
        return skipped

    # --- pages ---------------------------------------------------------------------

    async def start(self) -> AsyncIterator[Any]:
        engine = self.crawler.engine
        for request in self._start_requests():
            # Scrapy takes start requests back to back, without waiting, while the engine
            # needs backing out (its downloader full, or the item pipeline behind, as when the
            # image workers are slower than the network): a URL list would then go into the
            # scheduler's memory whole (1.9 GB for a million URLs). So wait for room first;
            # once the engine is closing (a deadline, Ctrl-C), the rest waits for a rerun.
            while engine.needs_backout():
                if engine_closing(self.crawler):
                    return
                await asyncio.sleep(BACKOUT_POLL_S)
            yield request

    def _start_requests(self) -> Iterator[scrapy.Request]:
        """Seeds, minus pages a previous run finished (whose links are followed from the journal)."""
        queue = deque((url, 0) for url in self.config.seeds)
        while queue:
            url, depth = queue.popleft()  # breadth first: each page at its shortest depth
            if not self._admit_page(url, depth):
                continue
            if self.journal.is_complete(url, self.known):
                entry = self.journal.entries[url]
                queue.extend((link, depth + 1) for link in entry.links)
            elif (request := self._page_request(url, depth)) is not None:
                yield request

    def _admit_page(self, url: str, depth: int) -> bool:
        """Scope, depth and page-count checks; counts the refusals once per URL.

        A page already admitted and now reached by a shorter path gets the shorter depth
        (and, if it was parsed already, its links are followed again from there).
        """
        known = self.page_depth.get(url)
        if known is not None:
            if depth < known:
                self._shorter_path(url, depth)
            return False
        if check_url(url) is not None:
            self.page_decisions[PageStatus.BAD_URL.value].add(url)
            return False
        if depth > 0 and _IMAGE_LINK.search(urlsplit(url).path):
            return False  # a link to an image file, not a page (a seed is a page: MediaWiki's File:X.jpg)
        if depth > 0 and not _host_in(urlsplit(url).hostname or "", self.scope):
            self.page_decisions[PageStatus.OFFSITE.value].add(url)
            return False
        if depth > self.config.max_depth:
            self.page_decisions[PageStatus.MAX_DEPTH.value].add(url)
            return False
        if len(self.page_depth) >= self.config.max_pages:
            self.page_decisions[PageStatus.MAX_PAGES.value].add(url)
            return False
        self.page_decisions[PageStatus.MAX_DEPTH.value].discard(url)  # a shorter path reached it
        self.page_decisions[PageStatus.MAX_PAGES.value].discard(url)
        self.page_depth[url] = depth
        return True

    def _shorter_path(self, url: str, depth: int) -> None:
        self.page_depth[url] = depth
        self._count("capcrawl/pages_reached_shorter")
        entry = self.journal.entries.get(url)
        if entry is None:
            return  # not parsed yet: it will be parsed at the shorter depth
        self.journal.add(PageEntry(entry.url, depth, entry.status, entry.links, entry.images, entry.data_uris))
        self._pending_links.extend((link, depth + 1) for link in entry.links)

    @property
    def _pending_links(self) -> deque:
        if not hasattr(self, "_links_queue"):
            self._links_queue: deque = deque()
        return self._links_queue

    def _follow(self, links: list[str], depth: int) -> Iterator[scrapy.Request]:
        """Requests for the pages behind ``links`` (found at ``depth - 1``), and for pages a
        shorter path reached meanwhile."""
        queue = self._pending_links
        queue.extend((link, depth) for link in links)
        while queue:
            link, d = queue.popleft()
            if self._admit_page(link, d):
                if self.journal.is_complete(link, self.known):  # finished by an earlier run
                    queue.extend((nxt, d + 1) for nxt in self.journal.entries[link].links)
                elif (request := self._page_request(link, d)) is not None:
                    yield request

    def _page_request(self, url: str, depth: int) -> scrapy.Request | None:
        """The page's request; None (the page counted as ``bad_url``) when Scrapy cannot make one."""
        try:
            return scrapy.Request(
                url,
                callback=self.parse_page,
                errback=self.page_failed,
                meta={"cc_page": url, "cc_depth": depth},
                priority=-depth,  # shallower pages first
                dont_filter=True,
            )
        except (ValueError, TypeError) as e:
            log.info("page %s: bad_url (%s)", url[:200], e)
            self.page_decisions[PageStatus.BAD_URL.value].add(url)
            return None

    def parse_page(self, response: Response) -> Iterator[Any]:
        page_url = response.meta["cc_page"]
        depth = self.page_depth.get(page_url, response.meta["cc_depth"])
        if not isinstance(response, TextResponse):
            self.journal.add(PageEntry(page_url, depth, PageStatus.NOT_HTML.value, [], []))
            return
        if depth > 0 and not _host_in(urlsplit(response.url).hostname or "", self.scope):
            self.journal.add(PageEntry(page_url, depth, PageStatus.OFFSITE.value, [], []))  # redirected out of scope
            return
        try:
            response = with_undeclared_encoding(response)
            info = extract_page(response.selector, response.url, self.agent_token, response.encoding)
            # Opt-outs the page declares (headers, meta tags) cover the images found on it: their
            # rows would carry the page's text. Its links are still followed.
            opt_out = response_opt_out(response, self.agent_token, response.selector)
        except Exception:  # a page no rule foresaw: counted, and the crawl goes on
            log.exception("page %s could not be read; recorded as parse_error", page_url)
            self.journal.add(PageEntry(page_url, depth, PageStatus.PARSE_ERROR.value, [], []))
            return
        for ref in info.images:
            yield from self._image(ref, response.url, info.title, opt_out)
        status = PageStatus(opt_out.signal) if opt_out else PageStatus.OK
        self.journal.add(PageEntry(page_url, depth, status.value, info.links, [i.url for i in info.images], info.data_uris))
        yield from self._follow(info.links, depth + 1)

    def page_failed(self, failure: Failure) -> None:
        request = failure.request
        found = failure_status(failure, page=True)
        if found is None:
            return  # cancelled by shutdown: fetched again on resume
        status, error = found
        url = request.meta["cc_page"]
        self.journal.add(PageEntry(url, self.page_depth.get(url, request.meta["cc_depth"]), status, [], []))
        log.info("page %s: %s (%s)", request.url, status, error)

    # --- images --------------------------------------------------------------------

    def _image(self, ref: ImageRef, page_url: str | None, page_title: str | None, opt_out: OptOut | None) -> Iterator[Any]:
        if ref.url in self.known:
            return
        self.known.add(ref.url)
        yield from self._fetch_or_refuse(image_item(ref, page_url, page_title), opt_out)

    def _fetch_or_refuse(self, item: dict[str, Any], opt_out: OptOut | None = None) -> Iterator[Any]:
        url = item["url"]
        if refused := refusal(item, opt_out):
            yield refused
            return
        try:
            request = self._image_request(item)
        except (ValueError, TypeError) as e:  # a URL check_url let through and Scrapy refuses
            yield unrequestable(item, e)
            return
        self.outstanding.add(url)
        yield request

    def _image_request(self, item: dict[str, Any]) -> scrapy.Request:
        return scrapy.Request(
            item["url"],
            callback=self.parse_image,
            errback=self.image_failed,
            priority=IMAGE_PRIORITY,
            dont_filter=True,
            meta={"cc_item": item, "download_maxsize": self.config.max_image_bytes},
        )

    def parse_image(self, response: Response) -> Iterator[dict[str, Any]]:
        item = dict(response.meta["cc_item"])
        self.outstanding.discard(item["url"])
        item["final_url"] = response.url
        if opt_out := response_opt_out(response, self.agent_token):  # X-Robots-Tag, Content-Usage, tdm-reservation
            yield {**item, "status": opt_out.signal, "error": f"{opt_out.describe()} (downloaded bytes discarded)", **opt_out.row_fields()}
            return
        ctype = (response.headers.get(b"Content-Type") or b"").decode("latin-1") or None
        yield {**item, "status": Status.OK.value, "body": response.body, "content_type": ctype}

    def image_failed(self, failure: Failure) -> Iterator[dict[str, Any]]:
        item = dict(failure.request.meta["cc_item"])
        found = failure_status(failure, page=False)
        if found is None:
            return  # cancelled by shutdown: stays pending, fetched on resume
        self.outstanding.discard(item["url"])
        status, error = found
        if isinstance(failure.value, HttpError):
            item["final_url"] = failure.value.response.url
        elif failure.request.url != item["url"]:
            # It failed (or was refused: robots.txt, an opt-out, a private address) at the end
            # of a redirect: the row names where, and says that the URL itself was requested.
            item["final_url"] = failure.request.url
            error = f"redirected to {failure.request.url}: {error}"[:500]
        evidence: OptOut | None = getattr(failure.value, "evidence", None)  # robots.txt and opt-out refusals
        yield {**item, "status": status, "error": error, **(evidence.row_fields() if evidence else {})}


class ImageListSpider(ImagesSpider):
    """Download every URL of a list (img2dataset's job), with the same respect and safety rules."""

    name = "image_list"
    # No pages: no URL is derived from another (so none grows) and no HTML refreshes.
    # These middlewares would only cost CPU per image. (RefererMiddleware stays: the
    # redirect middleware asks for it.)
    components_off = {
        "DOWNLOADER_MIDDLEWARES": ("scrapy.downloadermiddlewares.redirect.MetaRefreshMiddleware",),
    }

    def _start_requests(self) -> Iterator[Any]:
        cfg = self.config
        # What earlier passes over this list counted (WORK may hold other lists' rows too).
        self.lists_before = read_lists(self.crawl_dir)
        before = self.lists_before.get(list_key(cfg.url_list), {})
        read_before = int(before.get("lines_read", 0))
        self.list_pass = {"lines": 0, "duplicate_url": 0, "recorded_before": int(before.get("recorded_before", 0)),
                          "read_before": read_before}
        state = self.list_pass
        # The URLs of the list met so far in this pass, as 64-bit string hashes: ~55 bytes a URL
        # instead of ~150 for the strings (bench/README.md, 1M URLs). Two distinct URLs of one
        # list share a hash with a probability of about n^2 / 2^65 (3e-8 for a million); the
        # second would be counted as a duplicate_url.
        listed: set[int] = set()
        for line, (url, caption) in enumerate(iter_url_list(cfg.url_list, cfg.input_format, cfg.url_col, cfg.caption_col)):
            state["lines"] = line + 1
            h = hash(url)
            if h in listed:
                state["duplicate_url"] += 1
                continue
            listed.add(h)
            if url in self.known:
                # Recorded before. By this list's own earlier pass when that pass read this far;
                # otherwise by another list or run into the same WORK: a duplicate all the same.
                if line >= read_before:
                    state["recorded_before"] += 1
                continue
            yield from self._fetch_or_refuse({"url": url, "caption_in": caption})
        state["read_all"] = True

    def pending_count(self) -> int:
        """The URLs on their way and, when the pass stopped before the list's end (Ctrl-C, a
        deadline), the lines not read yet: a rerun reads them (each one a URL to fetch, or a
        repeat to count). Counting them reads the rest of the list once."""
        state = getattr(self, "list_pass", None)
        if state is None or state.get("read_all"):
            return len(self.outstanding)
        cfg = self.config
        rest = iter_url_list(cfg.url_list, cfg.input_format, cfg.url_col, cfg.caption_col)
        return len(self.outstanding) + sum(1 for _ in itertools.islice(rest, state["lines"], None))

    def before_part_published(self) -> None:
        """Keep how far this pass read the list before a part goes into place: after a kill the
        next pass knows that the URLs of its rows came from this list, not an earlier one."""
        write_lists(self.crawl_dir, self.list_counts())

    def list_counts(self) -> dict[str, dict[str, Any]]:
        """Every list downloaded into WORK, with what its passes counted (this one's updated)."""
        lists = dict(getattr(self, "lists_before", {}))
        if (done := getattr(self, "list_pass", None)) is not None:
            cfg = self.config
            lists[list_key(cfg.url_list)] = list_entry(cfg.url_list, max(done["read_before"], done["lines"]),
                                                       done["duplicate_url"], done["recorded_before"])
        return lists

    def skipped_counts(self) -> dict[str, int]:
        """``duplicate_url``: the lines of every list into WORK whose URL an earlier line, list or
        run had already recorded (each list's latest pass; a rerun recounts its own)."""
        return list_skips(self.list_counts())

    def page_status_counts(self) -> dict[str, int]:
        return {}

    def write_page_counts(self) -> None:
        pass  # no pages
