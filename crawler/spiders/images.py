"""The ``images`` spider (crawl pages from seeds) and ``image_list`` (download a URL list).

Both emit one item per image URL: either the downloaded bytes (processed by
``crawler.pipelines.ImagePipeline``) or a final status. Every image URL discovered ends
as a row; pages end as counted statuses in the journal and stats.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, AsyncIterator, Iterator
from urllib.parse import urlsplit

import scrapy
from scrapy import signals
from scrapy.exceptions import StopDownload
from scrapy.http import Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from ..config import CrawlConfig, check_url
from ..extract import ImageRef, extract_page
from ..failures import failure_status
from ..optout import OptOut
from ..optout_middleware import response_opt_out
from ..pipelines import write_crawl_stats
from ..journal import PageEntry, PageJournal, load_done_urls
from ..records import CRAWL_DIR, PageStatus, Status
from ..urllist import iter_url_list

log = logging.getLogger(__name__)

IMAGE_PRIORITY = 10
_IMAGE_LINK = re.compile(r"\.(jpe?g|png|gif|webp|avif|bmp|tiff?|svg)$", re.IGNORECASE)  # images before new pages: finish what was found before exploring further


def _host_in(host: str, domains: set[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


class ImagesSpider(scrapy.Spider):
    """Crawl pages from seed URLs, following in-scope links, and fetch every image found."""

    name = "images"
    #: Scrapy components this spider switches off: {setting: (import path, ...)}, merged
    #: into the project's dicts in from_crawler.
    components_off: dict[str, tuple[str, ...]] = {}

    def __init__(self, config: CrawlConfig | None = None, **kwargs: Any):
        super().__init__()
        self.config = config if config is not None else CrawlConfig.from_spider_args(kwargs)
        self.crawl_dir = Path(self.config.work) / CRAWL_DIR
        self.crawl_dir.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = load_done_urls(self.crawl_dir)
        self.images_seen: set[str] = set(self.done)
        self.outstanding: set[str] = set()  # image URLs sent on their way, no item yet
        self.journal = PageJournal(self.crawl_dir)
        self.pages_seen: set[str] = set()
        self.page_decisions: dict[str, set[str]] = defaultdict(set)
        self.skipped: Counter[str] = Counter()
        self.agent_token = self.config.user_agent.split("/")[0].split()[0].lower()
        self.scope = {urlsplit(s).hostname or "" for s in self.config.seeds} | {
            d.lower().lstrip(".") for d in self.config.allow_domains
        }
        if self.done:
            log.info("resuming: %d image URLs already recorded in %s", len(self.done), self.crawl_dir)

    @classmethod
    def from_crawler(cls, crawler, *args: Any, **kwargs: Any) -> "ImagesSpider":
        spider = super().from_crawler(crawler, *args, **kwargs)
        # capcrawl's options decide Scrapy's settings (command-line -s still wins).
        crawler.settings.setdict(spider.config.scrapy_settings(), priority="spider")
        for name, paths in spider.components_off.items():  # merged into, not replacing, the project's dict
            crawler.settings.set(name, {**crawler.settings.getdict(name), **dict.fromkeys(paths)}, priority="spider")
        crawler.signals.connect(spider._on_closed, signal=signals.spider_closed)
        crawler.signals.connect(spider._bytes_received, signal=signals.bytes_received)
        spider.page_maxsize = crawler.settings.getint("DOWNLOAD_MAXSIZE")
        return spider

    def _bytes_received(self, data: bytes, request: scrapy.Request, spider: scrapy.Spider) -> None:
        """Cut a body that streams past its cap (no Content-Length to refuse it up front)."""
        got = request.meta.get("cc_bytes", 0) + len(data)
        request.meta["cc_bytes"] = got
        limit = request.meta.get("download_maxsize") or self.page_maxsize
        if limit and got > limit:
            request.meta["cc_too_large"] = f"body passed {limit} bytes while streaming"
            raise StopDownload(fail=True)

    def _on_closed(self, spider: scrapy.Spider, reason: str) -> None:
        """After the pipeline flushed its last part: close the journal and write stats.json."""
        self.journal.close()
        write_crawl_stats(self, reason)

    # --- bookkeeping used by the pipeline's stats -------------------------------------

    def pending_count(self) -> int:
        return len(self.outstanding)

    def page_status_counts(self) -> dict[str, int]:
        counts = Counter(self.journal.status_counts())
        for status, urls in self.page_decisions.items():
            counts[status] += len(urls)
        return dict(sorted(counts.items()))

    # --- pages ---------------------------------------------------------------------

    async def start(self) -> AsyncIterator[Any]:
        for request in self._start_requests():
            yield request

    def _start_requests(self) -> Iterator[scrapy.Request]:
        """Seeds, minus pages a previous run finished (whose links are followed from the journal)."""
        queue = [(url, 0) for url in self.config.seeds]
        while queue:
            url, depth = queue.pop(0)
            if not self._admit_page(url, depth):
                continue
            if self.journal.is_complete(url, self.done):
                entry = self.journal.entries[url]
                queue.extend((link, depth + 1) for link in entry.links)
            else:
                yield self._page_request(url, depth)

    def _admit_page(self, url: str, depth: int) -> bool:
        """Scope, depth and page-count checks; counts the refusals once per URL."""
        if url in self.pages_seen:
            return False
        if _IMAGE_LINK.search(urlsplit(url).path):
            return False  # a link to an image file, not a page
        if depth > 0 and not _host_in(urlsplit(url).hostname or "", self.scope):
            self.page_decisions[PageStatus.OFFSITE.value].add(url)
            return False
        if depth > self.config.max_depth:
            self.page_decisions[PageStatus.MAX_DEPTH.value].add(url)
            return False
        if len(self.pages_seen) >= self.config.max_pages:
            self.page_decisions[PageStatus.MAX_PAGES.value].add(url)
            return False
        self.pages_seen.add(url)
        return True

    def _page_request(self, url: str, depth: int) -> scrapy.Request:
        return scrapy.Request(
            url,
            callback=self.parse_page,
            errback=self.page_failed,
            meta={"cc_page": url, "cc_depth": depth},
            dont_filter=True,
        )

    def parse_page(self, response: Response) -> Iterator[Any]:
        page_url, depth = response.meta["cc_page"], response.meta["cc_depth"]
        if not isinstance(response, TextResponse):
            self.journal.add(PageEntry(page_url, depth, PageStatus.NOT_HTML.value, [], []))
            return
        if depth > 0 and not _host_in(urlsplit(response.url).hostname or "", self.scope):
            self.journal.add(PageEntry(page_url, depth, PageStatus.OFFSITE.value, [], []))  # redirected out of scope
            return
        info = extract_page(response.selector, response.url, self.agent_token)
        # Opt-outs the page declares (headers, meta tags) cover the images found on it: their
        # rows would carry the page's text. Its links are still followed.
        opt_out = response_opt_out(response, self.agent_token, response.selector)
        self.skipped["data_uri"] += info.data_uris
        for ref in info.images:
            yield from self._image(ref, response.url, info.title, opt_out)
        status = PageStatus(opt_out.signal) if opt_out else PageStatus.OK
        self.journal.add(PageEntry(page_url, depth, status.value, info.links, [i.url for i in info.images]))
        for link in info.links:
            if self._admit_page(link, depth + 1):
                yield self._page_request(link, depth + 1)

    def page_failed(self, failure: Failure) -> None:
        request = failure.request
        found = failure_status(failure, page=True)
        if found is None:
            return  # cancelled by shutdown: fetched again on resume
        status, error = found
        self.journal.add(PageEntry(request.meta["cc_page"], request.meta["cc_depth"], status, [], []))
        log.info("page %s: %s (%s)", request.url, status, error)

    # --- images --------------------------------------------------------------------

    def _image(self, ref: ImageRef, page_url: str | None, page_title: str | None, opt_out: OptOut | None) -> Iterator[Any]:
        if ref.url in self.images_seen:
            return
        self.images_seen.add(ref.url)
        item = {
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
        }
        yield from self._fetch_or_refuse(item, opt_out)

    def _fetch_or_refuse(self, item: dict[str, Any], opt_out: OptOut | None = None) -> Iterator[Any]:
        url = item["url"]
        if opt_out:
            yield {**item, "status": opt_out.signal, "error": f"page opted out ({opt_out.describe()})", **opt_out.row_fields()}
        elif why := check_url(url):
            yield {**item, "status": Status.BAD_URL.value, "error": why}
        else:
            self.outstanding.add(url)
            yield scrapy.Request(
                url,
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
        evidence: OptOut | None = getattr(failure.value, "evidence", None)  # robots.txt and opt-out refusals
        yield {**item, "status": status, "error": error, **(evidence.row_fields() if evidence else {})}


class ImageListSpider(ImagesSpider):
    """Download every URL of a list (img2dataset's job), with the same respect and safety rules."""

    name = "image_list"
    # No pages: no URL is derived from another (so none grows) and no HTML refreshes.
    # These middlewares would only cost CPU per image. (RefererMiddleware stays: the
    # redirect middleware asks for it.)
    components_off = {
        "SPIDER_MIDDLEWARES": ("scrapy.spidermiddlewares.urllength.UrlLengthMiddleware",),
        "DOWNLOADER_MIDDLEWARES": ("scrapy.downloadermiddlewares.redirect.MetaRefreshMiddleware",),
    }

    def _start_requests(self) -> Iterator[Any]:
        cfg = self.config
        for url, caption in iter_url_list(cfg.url_list, cfg.input_format, cfg.url_col, cfg.caption_col):
            if url in self.images_seen:
                if url not in self.done:
                    self.skipped["duplicate_url"] += 1
                continue
            self.images_seen.add(url)
            yield from self._fetch_or_refuse({"url": url, "caption_in": caption})

    def page_status_counts(self) -> dict[str, int]:
        return {}
