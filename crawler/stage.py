"""The crawl stage's one entry function: run Scrapy with capcrawl's spider and settings."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Any

from common.errors import INTERRUPTS, ConfigError
from common.fileio import locked_dir

from .config import CrawlConfig
from .stats import read_stats

log = logging.getLogger(__name__)


def scrapy_settings(config: CrawlConfig, log_level: str = "WARNING"):
    """crawler/settings.py overlaid with the configuration (what `scrapy crawl` would use)."""
    from scrapy.settings import Settings

    from .http import http_client_settings
    from .upstream import without_twisted_exceptions

    settings = Settings()
    settings.setmodule("crawler.settings", priority="project")
    settings.setdict(config.scrapy_settings(), priority="cmdline")
    settings.setdict(http_client_settings(config.http_client), priority="cmdline")
    if config.cluster:
        from .hostgate import HOST_GATE_HANDLER, INNER_SETTING

        # Every download of a crawl worker takes its host's turn from the frontier first.
        handlers = settings.getwithbase("DOWNLOAD_HANDLERS")
        settings.set(INNER_SETTING, handlers["http"], priority="cmdline")
        settings.set("DOWNLOAD_HANDLERS", {"http": HOST_GATE_HANDLER, "https": HOST_GATE_HANDLER}, priority="cmdline")
    if not settings.getbool("TWISTED_REACTOR_ENABLED"):
        settings.set("RETRY_EXCEPTIONS", without_twisted_exceptions(settings.getlist("RETRY_EXCEPTIONS")), priority="cmdline")
    settings.set("LOG_LEVEL", log_level, priority="cmdline")
    if log_level not in ("DEBUG", "INFO"):
        # Nobody sees the versions line then, but Scrapy would still collect it, and its
        # platform field runs `uname -p` in a forked child.
        settings.set("LOG_VERSIONS", [], priority="cmdline")
    settings.set("LOG_INSTALL_ROOT_HANDLER", False, priority="cmdline")  # the caller configured logging
    return settings


def check_upstream_or_fail() -> None:
    """Refuse to crawl on a Scrapy whose internals the respect rules rely on have changed."""
    from .upstream import check_upstream

    if problems := check_upstream(optional=False):
        raise ConfigError(
            "this Scrapy does not match what capcrawl's robots.txt and politeness code was written for ("
            + "; ".join(problems) + "); install scrapy>=2.19,<2.20 (pip install 'scrapy>=2.19,<2.20')."
        )


def run(config: CrawlConfig, log_level: str = "WARNING") -> dict[str, Any]:
    """Crawl seeds (or download a URL list) into WORK/crawl; returns WORK/crawl/stats.json.

    Writes the stats file and, when nothing is left to do, the stage's ``_SUCCESS`` marker.
    Runs an asyncio event loop (and, with ``--http-client twisted``, Twisted's reactor), so
    call it once per process.
    """
    check_upstream_or_fail()
    # One crawl writes WORK/crawl at a time (the crawl workers of one frontier share it).
    with locked_dir(config.crawl_dir, "WORK", shared=bool(config.cluster)):
        return _run(config, log_level)


def _run(config: CrawlConfig, log_level: str) -> dict[str, Any]:
    from .spiders.images import ImageListSpider, ImagesSpider
    from .upstream import set_scrapy_log_levels

    if config.ignore_robots:
        log.warning("!!! --ignore-robots: robots.txt will NOT be obeyed. Only do this for sites you own. !!!")
    frontier = join_frontier(config) if config.cluster else None
    handlers = _signal_handlers()
    try:
        process = _crawl_process()(scrapy_settings(config, log_level))
        set_scrapy_log_levels(log_level)
        if frontier is not None:
            from .spiders.cluster import ClusterImagesSpider

            process.crawl(ClusterImagesSpider, config=config, frontier=frontier)
        else:
            process.crawl(ImageListSpider if config.url_list else ImagesSpider, config=config)
        process.start()
    finally:
        # Scrapy's handlers outlive its loop: `run` would ignore a Ctrl-C in its later stages.
        _restore_signal_handlers(handlers)
        if frontier is not None:
            frontier.leave()
    if frontier is not None and frontier.failure:
        from .frontier import FrontierError

        raise FrontierError(f"worker {frontier.worker_id}: {frontier.failure}. Nothing is lost: run the same "
                            "command again (with Redis reachable) to resume.")
    return read_stats(config.crawl_dir)


def _signal_handlers() -> dict[int, Any]:
    """SIGINT's and SIGTERM's handlers now (none outside the main thread, which cannot set them)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


def _crawl_process() -> type:
    """Scrapy's AsyncCrawlerProcess, stopping at once on a second Ctrl-C (or SIGTERM) without
    losing what is finished or recording what is not.

    Scrapy's first signal stops the crawl gracefully (the downloads under way finish); its second
    cancels every task, so the downloads under way fail with CancelledError, which the crawl
    would record as errors, and the spider never writes its stats. Here the second signal first
    saves the pipeline's finished rows and writes stats.json (finish reason ``shutdown``, so the
    command exits 130), then lets Scrapy cancel; nothing is recorded after that, so the URLs
    still under way stay pending for the next run.
    """
    from scrapy.crawler import AsyncCrawlerProcess

    class CrawlProcess(AsyncCrawlerProcess):
        def _signal_shutdown_reactorless(self, signum: int, frame: Any) -> None:
            INTERRUPTS.note()  # the command's handler, given back after the crawl, counts it
            super()._signal_shutdown_reactorless(signum, frame)

        def _signal_shutdown(self, signum: int, frame: Any) -> None:  # --http-client twisted
            INTERRUPTS.note()
            super()._signal_shutdown(signum, frame)

        async def stop(self) -> None:
            # Scrapy's stop, given while a crawler opens its spider (the first second: resume
            # state, robots.txt), marks the crawler stopped without stopping its engine, which
            # then runs to the end and, asking for a stop that is already done, never closes.
            for crawler in list(self.crawlers):
                while crawler in self.crawlers and crawler.crawling and not _engine_running(crawler):
                    await asyncio.sleep(0.05)
            await super().stop()

        def _signal_kill_reactorless(self, signum: int, frame: Any) -> None:
            if (loop := self._reactorless_loop) is not None:
                loop.call_soon_threadsafe(self._stop_now)
            super()._signal_kill_reactorless(signum, frame)

        def _signal_kill(self, signum: int, frame: Any) -> None:  # --http-client twisted
            from twisted.internet import reactor

            reactor.callFromThread(self._stop_now)
            super()._signal_kill(signum, frame)

        def _stop_now(self) -> None:
            from .pipelines import STOP_NOW

            # The tasks left are cancelled on purpose: asyncio's notes on them are noise now.
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
            for crawler in list(self.crawlers):
                crawler.signals.send_catch_log(signal=STOP_NOW)
                if (stop := getattr(crawler.spider, "stop_now", None)) is not None:
                    stop()

    return CrawlProcess


def _engine_running(crawler: Any) -> bool:
    engine = getattr(crawler, "_engine", None)
    return engine is not None and engine.running


def join_frontier(config: CrawlConfig) -> "Frontier":  # noqa: F821
    """Connect this worker to the crawl's frontier in Redis and take a worker id (see crawler.frontier)."""
    from common.layout import list_parts, parse_part_name
    from common.options import digest

    from .frontier import Frontier
    from .spiders.cluster import SCOPE_FIELDS

    if any((parse_part_name(p.name) or (0,))[0] is None for p in list_parts(config.crawl_dir)):
        raise ConfigError(f"{config.crawl_dir} holds a crawl made without --frontier; finish it the same way, "
                          "or give the cluster crawl another --work.")
    frontier = Frontier(config.frontier, config.crawl_dir, config.lease_timeout, config.worker_id)
    wid = frontier.connect(digest(config, SCOPE_FIELDS))
    log.info("crawl worker %d on the frontier at %s", wid, config.frontier)
    return frontier
