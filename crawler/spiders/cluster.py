"""The ``images`` spider as one worker of a crawl whose frontier lives in Redis (``--frontier``).

The embedded spider keeps its frontier in Scrapy's scheduler and its seen-set in memory, and
rebuilds both from WORK/crawl on a rerun. A worker instead takes work from the shared
frontier (:mod:`crawler.frontier`) as its downloader has room for it, and hands what a page
yields (its images and links) back to the frontier, from which any worker may take it. Page
extraction, the respect rules (robots, opt-outs, private addresses) and the image pipeline are
the embedded spider's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy.exceptions import CloseSpider
from scrapy.http import Response, TextResponse
from twisted.python.failure import Failure

from common.fileio import atomic_write_parquet
from common.layout import IMAGE_PAGES_FILE
from common.options import digest
from common.records import PageStatus

from ..config import CrawlConfig, check_url
from ..extract import extract_page
from ..optout_middleware import response_opt_out
from ..failures import failure_status
from ..frontier import Frontier, FrontierError, Leased
from ..journal import PageEntry, PageJournal, image_page_counts, read_journal
from ..stats import SKIPPED, write_crawl_stats
from ..upstream import engine_closing, scraper_idle
from .images import _IMAGE_LINK, ImagesSpider, _host_in, image_item, refusal, unrequestable, with_undeclared_encoding

log = logging.getLogger(__name__)

#: Seconds between looks at the frontier while it has nothing for this worker.
POLL = 0.1
#: Entries leased in one round trip at most.
LEASE_BATCH = 64
#: Close reason of a worker whose frontier failed (the CLI exits 75: run it again).
FRONTIER_LOST = "frontier_lost"


class ClusterImagesSpider(ImagesSpider):
    """One crawl worker: leases pages and images from the frontier, fetches them, returns what they yield."""

    name = "images_worker"

    def __init__(self, config: CrawlConfig | None = None, frontier: Frontier | None = None, **kwargs: Any):
        if frontier is None:
            raise ValueError("a crawl worker needs a connected Frontier")
        self.frontier = frontier
        super().__init__(config, **kwargs)

    def _open_state(self) -> None:
        self.worker_id = self.frontier.worker_id
        self.part_commit = self.frontier
        self.known = set()  # the seen-set is in Redis
        self.journal = PageJournal(self.crawl_dir, worker=self.worker_id)
        self.inflight = 0  # leased pages and images sent on their way, not finished
        self.lost = False

    @classmethod
    def from_crawler(cls, crawler, *args: Any, **kwargs: Any) -> ClusterImagesSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        from scrapy import signals

        crawler.signals.connect(spider._close_client, signal=signals.engine_stopped)
        return spider

    # --- the loop that feeds the downloader ---------------------------------------------------

    async def start(self) -> AsyncIterator[Any]:
        frontier = self.frontier
        next_check = time.monotonic() + frontier.lease_timeout
        try:
            await self._admit_seeds()
            while True:
                frontier.check()
                if time.monotonic() >= next_check:  # busy or not, a dead worker's work goes back in time
                    next_check = time.monotonic() + frontier.lease_timeout
                    for wid in frontier.status().dead:
                        frontier.recover(wid)
                room = self._room()
                got = await frontier.lease(min(room, LEASE_BATCH)) if room > 0 else []
                for leased in got:
                    work = await self._work_for(leased)
                    if work is not None:
                        yield work
                if got:
                    continue
                if room > 0 and self._idle():
                    self._flush_part()
                    status = frontier.status()
                    for wid in status.dead:
                        frontier.recover(wid)
                    if status.finished:
                        log.info("worker %s: the frontier is empty and no worker holds work: done", self.worker_id)
                        return
                await asyncio.sleep(POLL)
        except FrontierError as e:
            self._lose(e)
            raise CloseSpider(FRONTIER_LOST) from e

    def _room(self) -> int:
        """How many more entries the downloader can take now (a second round queued behind the first)."""
        if engine_closing(self.crawler) or self.crawler.engine.needs_backout():
            return 0
        return 2 * self.config.concurrency - self.inflight

    def _idle(self) -> bool:
        return self.inflight == 0 and scraper_idle(self.crawler)

    def _flush_part(self) -> None:
        """With nothing in flight, put this worker's rows in a part: their leases end only then."""
        writer = getattr(self, "part_writer", None)
        if writer is not None and (writer.rows or writer.part_rows):
            try:
                writer.flush()
            except FileNotFoundError as e:  # its temporary file is gone: another worker took this one's work over
                raise self.frontier.fenced() from e

    async def _admit_seeds(self) -> None:
        cfg = self.config
        links = [(url, True) for url in cfg.seeds]  # a seed is a page, as in ImagesSpider (MediaWiki's File:X.jpg)
        await self.frontier.admit(None, -1, cfg.max_depth, cfg.max_pages, [], links)

    async def _work_for(self, leased: Leased) -> Any:
        """The request (or row) for one leased entry; refollows are done here and give nothing."""
        if leased.kind == "r":
            await self._refollow(leased)
            return None
        if leased.kind == "i" and "status" in leased.item:
            return dict(leased.item)  # refused when its page was parsed: the row, recorded here
        if leased.kind == "i":
            try:
                request = self._image_request(leased.item)
            except (ValueError, TypeError) as e:  # a URL check_url let through and Scrapy refuses
                return unrequestable(leased.item, e)
            self.inflight += 1
            self.outstanding.add(leased.url)
            return request
        request = self._page_request(leased.url, leased.depth)
        if request is None:  # counted as bad_url by _page_request; the page is finished
            self.journal.add(PageEntry(leased.url, leased.depth, PageStatus.BAD_URL.value, [], []))
            await self.frontier.done(leased, leased.depth)
            return None
        self.inflight += 1
        request.meta["cc_leased"] = leased
        return request

    async def _refollow(self, leased: Leased) -> None:
        """A parsed page was reached by a shorter path: follow its links again from there."""
        self.journal.refresh()
        entry = self.journal.entries.get(leased.url)
        if entry is not None:
            self._count("capcrawl/pages_reached_shorter")
            if entry.depth != leased.depth:
                self.journal.add(PageEntry(entry.url, leased.depth, entry.status, entry.links, entry.images,
                                           entry.data_uris))
            await self._admit_links(leased.url, leased.depth, entry.links)
        # else: still being parsed; the worker parsing it queues the refollow when it is done
        await self.frontier.done(leased, leased.depth)

    async def _admit_links(self, page_url: str, depth: int, links: list[str],
                           images: list[tuple[str, dict[str, Any], bool]] = ()) -> list[int]:
        cfg = self.config
        bad = {link for link in links if check_url(link) is not None}
        for link in bad:  # never requested: journaled here, as pages are
            self.journal.add(PageEntry(link, depth + 1, PageStatus.BAD_URL.value, [], []))
        admit = [(link, _host_in(urlsplit(link).hostname or "", self.scope)) for link in links
                 if link not in bad and not _IMAGE_LINK.search(urlsplit(link).path)]
        refused, shorter = await self.frontier.admit(page_url, depth, cfg.max_depth, cfg.max_pages, list(images), admit)
        if shorter:
            self._count("capcrawl/pages_reached_shorter", shorter)
        return refused

    # --- pages ---------------------------------------------------------------------------------

    async def parse_page(self, response: Response) -> AsyncIterator[Any]:
        leased: Leased = response.meta["cc_leased"]
        url, depth = leased.url, leased.depth
        try:
            if not isinstance(response, TextResponse):
                entry = PageEntry(url, depth, PageStatus.NOT_HTML.value, [], [])
            elif depth > 0 and not _host_in(urlsplit(response.url).hostname or "", self.scope):
                entry = PageEntry(url, depth, PageStatus.OFFSITE.value, [], [])  # redirected out of scope
            else:
                response = with_undeclared_encoding(response)
                info = extract_page(response.selector, response.url, self.agent_token, response.encoding)
                # as the embedded spider: the page's own opt-outs (headers, meta) cover its images
                opt_out = response_opt_out(response, self.agent_token, response.selector)
                images = []
                for ref in info.images:
                    item = image_item(ref, response.url, info.title)
                    row = refusal(item, opt_out)
                    images.append((ref.url, row or item, row is not None))
                for i in await self._admit_links(url, depth, info.links, images):
                    yield images[i][1]  # refused, new: this worker records it (it is leased to it)
                status = PageStatus(opt_out.signal) if opt_out else PageStatus.OK
                entry = PageEntry(url, depth, status.value, info.links, [i.url for i in info.images], info.data_uris)
            self.journal.add(entry)
            await self.frontier.done(leased, depth)
        except FrontierError as e:
            self._lose(e)
        except Exception:  # a bug must not hold the page's lease forever (the cluster would wait for it)
            log.exception("page %s could not be processed; recorded as parse_error", url)
            self.journal.add(PageEntry(url, depth, PageStatus.PARSE_ERROR.value, [], []))
            await self.frontier.done(leased, depth)
        finally:
            self.inflight -= 1

    async def page_failed(self, failure: Failure) -> AsyncIterator[Any]:
        self.inflight -= 1
        leased: Leased = failure.request.meta["cc_leased"]
        if failure.check(FrontierError):
            self._lose(failure.value)
            return
        found = failure_status(failure, page=True)
        if found is None:
            return  # cancelled by shutdown: still leased, handed back when the worker stops
        status, error = found
        self.journal.add(PageEntry(leased.url, leased.depth, status, [], []))
        log.info("page %s: %s (%s)", failure.request.url, status, error)
        try:
            await self.frontier.done(leased, leased.depth)
        except FrontierError as e:
            self._lose(e)
        return
        yield  # an async generator, as Scrapy takes errbacks

    # --- images ------------------------------------------------------------------------------

    def parse_image(self, response: Response):
        self.inflight -= 1
        yield from super().parse_image(response)

    def image_failed(self, failure: Failure):
        self.inflight -= 1
        if failure.check(FrontierError):
            self._lose(failure.value)
            return
        yield from super().image_failed(failure)

    # --- endings -------------------------------------------------------------------------------

    def _lose(self, e: BaseException) -> None:
        """The frontier failed: record nothing more (what is unfinished stays leased in Redis)."""
        if not self.lost:
            self.lost = True
            log.error("worker %s: %s", self.worker_id, self.frontier.failure or e)

    def _on_closed(self, spider: scrapy.Spider, reason: str) -> None:
        """After the pipeline's last part: hand back what is unfinished, then write the shared stats."""
        self.journal.close()
        frontier = self.frontier
        self._count("capcrawl/frontier/round_trips", frontier.ops)  # what this worker asked of Redis
        if frontier.failure:
            self._lose(FrontierError(frontier.failure))
            return
        try:
            frontier.hand_back()
            with frontier.locked("stats"):  # one writer at a time, each seeing every earlier worker's parts
                self.journal.refresh()
                status = frontier.status()
                table = image_page_counts(self.journal.entries)
                if table.num_rows:
                    atomic_write_parquet(table, self.crawl_dir / IMAGE_PAGES_FILE)
                pages = self.journal.status_counts()
                for name, n in frontier.counts().items():
                    if n:
                        pages[name] = pages.get(name, 0) + n
                stats = self.crawler.stats.get_stats()
                skipped = {k[len(SKIPPED):]: v for k, v in stats.items() if k.startswith(SKIPPED)}
                skipped["data_uri"] = self.journal.data_uris()
                write_crawl_stats(
                    self.crawl_dir,
                    mode=self.config.mode,
                    pages=pages,
                    skipped=skipped,
                    pending=status.pending + status.committing,
                    scrapy_stats=stats,
                    finish_reason=reason,
                    started_at=self.started_at,
                    options_digest=digest(self.config, SCOPE_FIELDS),
                    worker=self.worker_id,
                    worker_pages=self._own_page_counts(),
                )
        except FrontierError as e:
            self._lose(e)

    def _own_page_counts(self) -> dict[str, int]:
        """This worker's pages by status (its own journal, all its runs)."""
        last = {entry.url: entry.status for entry in read_journal(self.journal.path)}
        return dict(Counter(last.values()))

    async def _close_client(self) -> None:
        await self.frontier.aclose()


#: The options every worker of one crawl must share (kept in Redis; a worker with others is refused).
SCOPE_FIELDS = ("seeds", "max_pages", "max_depth", "allow_domains")
