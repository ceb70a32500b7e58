"""Item pipeline: image work in a process pool, rows into rolling parquet parts, stats at the end."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import os
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq

from common.fileio import publish, temp_path
from common.layout import list_parts, parse_part_name, part_name
from common.records import CRAWL_COLUMNS, CRAWL_SCHEMA, Status, table_from_rows

from .imageproc import ImageOptions, ImageResult, corrupt, init_worker, process_batch, warm_up
from .stats import IMAGES
from .upstream import widen_pool_pipes
from .workers import worker_context

log = logging.getLogger(__name__)

PART_MAX_BYTES = 256 * 1024 * 1024
#: Scrapy signal sent on a stop at once (a second Ctrl-C, crawler.stage): the pipeline saves
#: the rows it holds and records nothing after (the downloads still running are cancelled).
STOP_NOW = object()
# zstd for every column but the image bytes, which are JPEG/WebP/PNG already: compressing
# them again costs reactor CPU and saves nothing.
PART_COMPRESSION = {name: ("none" if name == "image" else "zstd") for name in CRAWL_SCHEMA.names}
# Image bytes are never repeated: trying a dictionary for them is wasted work.
_DICTIONARY_COLUMNS = [name for name in CRAWL_SCHEMA.names if name != "image"]
_RESULT_FIELDS = tuple(ImageResult.__dataclass_fields__)


class PartWriter:
    """Streams crawl rows into ``part-NNNNN.parquet`` files, rolling on rows or bytes.

    Rows go out in row groups of ``group_rows`` to a temporary file beside the part, which is
    renamed into place only when the part is complete (so a crash loses at most that part's
    rows, as before). Holding one row group rather than a whole part keeps the reactor
    process's memory flat and spreads the encoding work over the run. ``worker`` puts a crawl
    worker's id in its part names (``part-w03-00000.parquet``), so that workers sharing a
    directory never write the same name.

    ``before_publish()`` runs before each part is renamed into place (a URL list's spider keeps
    how far it read the list then: every row of the part comes from a line read by then).

    ``commit`` (a crawl worker's frontier) is told which URLs a part holds before it is renamed
    (``commit_part(index, urls)``) and that it was (``part_done(index)``): their leases last
    until then. A part whose commit fails is dropped, its rows still leased in the frontier.
    """

    def __init__(self, directory: Path, rows_per_part: int, max_bytes: int = PART_MAX_BYTES, group_rows: int = 256,
                 worker: int | None = None, commit: Any = None, before_publish: Callable[[], None] | None = None):
        self.directory = directory
        self.commit = commit
        self.before_publish = before_publish
        self.part_urls: list[str] = []  # URLs of the open part's rows (kept for a commit only)
        self.rows_per_part = rows_per_part
        self.max_bytes = max_bytes
        self.group_rows = group_rows
        self.worker = worker
        mine = [parsed[1] for p in list_parts(directory) if (parsed := parse_part_name(p.name)) and parsed[0] == worker]
        self.next_index = max(mine) + 1 if mine else 0
        self.rows: list[dict[str, Any]] = []  # the open row group
        self.nbytes = 0  # of the open part, written or buffered
        self.part_rows = 0  # rows of the open part already in its temporary file
        self.written = 0
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.commit is not None:
            self.part_urls.append(row["url"])
        self.nbytes += len(row.get("image") or b"") + 512
        if self.part_rows + len(self.rows) >= self.rows_per_part or self.nbytes >= self.max_bytes:
            self.flush()
        elif len(self.rows) >= self.group_rows:
            self._write_group()

    def _write_group(self) -> None:
        if not self.rows:
            return
        table = table_from_rows(self.rows, CRAWL_SCHEMA)
        if self._writer is None:
            self._tmp = temp_path(self.directory / part_name(self.next_index, self.worker))
            self._writer = pq.ParquetWriter(
                self._tmp, CRAWL_SCHEMA, compression=PART_COMPRESSION, use_dictionary=_DICTIONARY_COLUMNS
            )
        self._writer.write_table(table)
        self.part_rows += table.num_rows
        self.rows = []

    def flush(self) -> None:
        """Finish the open part (if it has rows) and rename it into place."""
        self._write_group()
        if self._writer is None:
            return
        self._writer.close()
        final = self.directory / part_name(self.next_index, self.worker)
        if self.before_publish is not None:
            self.before_publish()
        if self.commit is None:
            path = publish(self._tmp, final)
        else:
            path = self._publish_committed(final)
        log.debug("wrote %s (%d rows)", path, self.part_rows)
        self.written += self.part_rows
        self._next_part()

    def abort(self) -> None:
        """Drop the open part (a crawl worker whose frontier failed: its rows stay leased)."""
        if self._writer is not None:
            self._writer.close()
            self._tmp.unlink(missing_ok=True)
        self.rows = []
        self._next_part()

    def _next_part(self) -> None:
        self.next_index += 1
        self._writer, self._tmp = None, None
        self.part_rows, self.nbytes = 0, 0
        self.part_urls = []

    def _publish_committed(self, final: Path) -> Path:
        """Record the part's URLs, rename it, then say so; on any failure the part is dropped."""
        tmp = self._tmp
        try:
            self.commit.commit_part(self.next_index, self.part_urls)
            path = publish(tmp, final)  # FileNotFoundError: another worker took this one's work over
        except BaseException:
            tmp.unlink(missing_ok=True)
            self.part_rows = 0
            self._next_part()
            raise
        self.commit.part_done(self.next_index)
        return path


#: Pipe capacity asked for the worker pool's two queues (Linux's default is 64 KB): about a
#: whole batch of typical web images each way, bodies out and resized images back.
POOL_PIPE_BYTES = 1 << 20


class PoolBatcher:
    """Owns the image worker pool: sends images in small batches, one future per image back.

    A batch goes when it has ``batch_size`` images or ``batch_bytes`` of them, or ``max_wait``
    after its first image. 16 typical web images (~60 KB) make about one wide pipe's worth
    (:data:`POOL_PIPE_BYTES`); against 8 a batch, downloads of bench/vs_img2dataset.sh's 3,000
    images took ~1.6% less wall time (9 alternated pairs, bench/README.md). The byte cap ends
    a batch at the image that takes it past 2 MB, so that 16 large images do not travel as one
    message (a worker crash also sends fewer of them to the one-at-a-time retry).

    A worker that dies (out of memory on a hostile file, say) breaks the whole pool and
    every batch in it. The pool is then replaced, and each image it lost is retried alone,
    one at a time, in a separate one-worker pool: only an image that kills that worker too
    is recorded as ``corrupt``; the others come out as usual.
    """

    def __init__(
        self,
        workers: int,
        opts: ImageOptions,
        batch_size: int = 16,
        batch_bytes: int = 2 * POOL_PIPE_BYTES,
        max_wait: float = 0.004,
        work: Callable[[list[tuple[bytes, str | None]], ImageOptions], list[ImageResult]] = process_batch,
    ):
        self.workers = workers
        self.opts = opts
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.max_wait = max_wait
        self.work = work
        self.pending: list[tuple[bytes, str | None, asyncio.Future]] = []
        self.pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self.in_flight: set[asyncio.Future] = set()
        self.executor = self._new_pool(workers)
        self._quarantine: cf.ProcessPoolExecutor | None = None
        self._quarantine_lock = asyncio.Lock()

    @staticmethod
    def _new_pool(workers: int) -> cf.ProcessPoolExecutor:
        pool = cf.ProcessPoolExecutor(workers, mp_context=worker_context(), initializer=init_worker, initargs=(os.getpid(),))
        widen_pool_pipes(pool, POOL_PIPE_BYTES)
        for _ in range(workers):  # start the workers now, while robots.txt and the first pages download
            pool.submit(warm_up)
        return pool

    def _replace_broken_pool(self) -> None:
        try:
            self.executor.submit(int).cancel()  # raises BrokenProcessPool when the pool is broken
        except BrokenProcessPool:
            log.warning("an image worker died; starting new workers, retrying its images one by one")
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = self._new_pool(self.workers)

    async def process(self, data: bytes, content_type: str | None) -> ImageResult:
        """The result for one image, surviving a crashed worker (or a batch that raised: each
        of its images is tried again alone, so that only the one at fault is ``corrupt``)."""
        try:
            return await self.submit(data, content_type)
        except BrokenProcessPool:
            self._replace_broken_pool()
        except Exception as e:  # the batch's task raised (process_batch catches per image; this is rarer)
            log.warning("an image batch failed (%s: %s); its images are tried one by one", type(e).__name__, e)
        error = "an image worker crashed on this image (out of memory?)"
        async with self._quarantine_lock:  # suspects one at a time, so a crash names its image
            if self._quarantine is None:
                self._quarantine = self._new_pool(1)
            loop = asyncio.get_running_loop()
            try:
                return (await asyncio.wrap_future(self._quarantine.submit(self.work, [(data, content_type)], self.opts), loop=loop))[0]
            except BrokenProcessPool:
                self._quarantine.shutdown(wait=False, cancel_futures=True)
                self._quarantine = None
            except Exception as e:
                error = f"image processing failed: {type(e).__name__}: {e}"
        return corrupt(data, error)

    def submit(self, data: bytes, content_type: str | None) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append((data, content_type, fut))
        self.pending_bytes += len(data)
        if len(self.pending) >= self.batch_size or self.pending_bytes >= self.batch_bytes:
            self.flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait, self.flush)
        return fut

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pending:
            batch, self.pending, self.pending_bytes = self.pending, [], 0
            self._send(batch)

    def _send(self, batch: list[tuple[bytes, str | None, asyncio.Future]]) -> list[asyncio.Future]:
        loop = asyncio.get_running_loop()
        futures = [fut for _, _, fut in batch]
        for fut in futures:
            self.in_flight.add(fut)
            fut.add_done_callback(self.in_flight.discard)
        try:
            done = self.executor.submit(self.work, [(d, c) for d, c, _ in batch], self.opts)
        except BrokenProcessPool as e:
            for fut in futures:
                fut.set_exception(e)
            return futures
        done.add_done_callback(partial(_resolve_on, loop, batch))
        return futures

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self._quarantine is not None:
            self._quarantine.shutdown(wait=True, cancel_futures=True)


def _resolve_on(loop: asyncio.AbstractEventLoop, batch: list[tuple[bytes, str | None, asyncio.Future]],
                done: cf.Future) -> None:
    """Hand a finished batch to the event loop (from the pool's thread), unless a stop at once
    closed the loop already: nobody waits for those results any more."""
    if loop.is_closed():
        return
    try:
        loop.call_soon_threadsafe(_resolve, batch, done)
    except RuntimeError:  # closed between the check and the call
        pass


def _resolve(batch: list[tuple[bytes, str | None, asyncio.Future]], done: cf.Future) -> None:
    exc = done.exception()
    results = None if exc else done.result()
    for i, (_, _, fut) in enumerate(batch):
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(results[i])


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ImagePipeline:
    """Turns the spider's image items into crawl rows.

    Items carry either downloaded ``body`` bytes (decoded, checked, resized and hashed in
    worker processes) or a final ``status`` (robots, noai, http_404, ...).
    """

    def __init__(self, crawler):
        self.crawler = crawler
        self.stats = crawler.stats
        self.batcher: PoolBatcher | None = None
        self.writer: PartWriter | None = None
        self.frontier: Any = None  # a crawl worker's frontier (None: the embedded crawl)

    @classmethod
    def from_crawler(cls, crawler) -> "ImagePipeline":
        pipeline = cls(crawler)
        crawler.signals.connect(pipeline.stop_now, signal=STOP_NOW)
        return pipeline

    stopped = False  # by stop_now

    def stop_now(self) -> None:
        """Save the rows held (the open part) and record nothing more: whatever is still on its
        way is pending, fetched again by the next run."""
        if self.stopped or self.writer is None:
            return
        self.stopped = True
        self._save_rows()

    def open_spider(self, spider=None) -> None:
        spider = spider or self.crawler.spider
        cfg = spider.config
        self.batcher = PoolBatcher(cfg.workers, cfg.image_options())
        self.writer = PartWriter(spider.crawl_dir, cfg.part_rows, worker=spider.worker_id, commit=spider.part_commit,
                                 before_publish=getattr(spider, "before_part_published", None))
        self.frontier = spider.part_commit
        if self.frontier is not None:
            from .frontier import FrontierError

            self.commit_errors: tuple[type[BaseException], ...] = (FrontierError, FileNotFoundError)
            spider.part_writer = self.writer  # a worker flushes its part when it runs out of work
        self.blocklist = None
        if cfg.blocklist:
            from common.blocklist import BlockSet

            blocklist = BlockSet.read(cfg.blocklist)
            self.blocklist = blocklist if blocklist.has_content_entries else None

    async def process_item(self, item: dict[str, Any], spider=None) -> dict[str, Any]:
        body = item.pop("body", None)
        row = {k: item.get(k) for k in CRAWL_COLUMNS if k in item}
        if body is not None and not self.stopped:
            result = await self.batcher.process(body, item.get("content_type"))
            for name in _RESULT_FIELDS:
                value = getattr(result, name)
                if value is not None:
                    row[name] = value
            if self.blocklist is not None and row["status"] == Status.OK.value:
                self._apply_blocklist(row)
        row.setdefault("fetched_at", _utcnow())
        if self.stopped:
            return {"url": row["url"], "status": "pending"}
        if self.frontier is None:
            self.writer.add(row)
        elif not self._add_leased(row):
            return {"url": row["url"], "status": "lost"}
        self.stats.inc_value(IMAGES + row["status"])
        return {"url": row["url"], "status": row["status"]}

    def _apply_blocklist(self, row: dict[str, Any]) -> None:
        """A downloaded image whose bytes (sha256) or picture (pHash) are taken down: no bytes kept."""
        if (entry := self.blocklist.match_content(row.get("sha256"), row.get("phash"))) is not None:
            row.update(status=Status.BLOCKED.value, error=f"blocklist: {entry}", image=None, opt_out_signal="blocked",
                       opt_out_source="takedown blocklist", opt_out_value=entry)
            self.stats.inc_value("capcrawl/blocklist_discarded")

    def _add_leased(self, row: dict[str, Any]) -> bool:
        """A crawl worker's row: kept unless the frontier failed (then the URL stays leased, fetched on resume)."""
        if self.frontier.failure:
            return False
        try:
            self.writer.add(row)
        except self.commit_errors as e:
            if isinstance(e, FileNotFoundError):
                self.frontier.fenced()
            log.error("%s; the part's rows stay leased in the frontier", self.frontier.failure or e)
            return False
        return True

    async def close_spider(self, spider=None) -> None:
        spider = spider or self.crawler.spider
        if self.batcher is not None:
            self.batcher.flush()
            if self.batcher.in_flight:
                await asyncio.gather(*self.batcher.in_flight, return_exceptions=True)
        if self.writer is not None and not self.stopped:
            self._save_rows()
        if self.batcher is not None:
            self.batcher.close()

    def _save_rows(self) -> None:
        """The open part into place (a crawl worker's only while its frontier holds)."""
        if self.frontier is None:
            self.writer.flush()
        elif not self.frontier.failure:
            try:
                self.writer.flush()
            except self.commit_errors as e:
                log.error("the last part was dropped (%s); its rows stay leased in the frontier", e)
        else:
            self.writer.abort()
