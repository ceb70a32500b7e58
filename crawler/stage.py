"""The crawl stage's one entry function: run Scrapy with capcrawl's spider and settings."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .config import CrawlConfig
from .records import CRAWL_DIR, STATS_FILE

log = logging.getLogger(__name__)


def scrapy_settings(config: CrawlConfig, log_level: str = "WARNING"):
    """crawler/settings.py overlaid with the configuration (what `scrapy crawl` would use)."""
    from scrapy.settings import Settings

    from .http import http_client_settings, without_twisted_exceptions

    settings = Settings()
    settings.setmodule("crawler.settings", priority="project")
    settings.setdict(config.scrapy_settings(), priority="cmdline")
    settings.setdict(http_client_settings(config.http_client), priority="cmdline")
    if not settings.getbool("TWISTED_REACTOR_ENABLED"):
        settings.set("RETRY_EXCEPTIONS", without_twisted_exceptions(settings.getlist("RETRY_EXCEPTIONS")), priority="cmdline")
    settings.set("LOG_LEVEL", log_level, priority="cmdline")
    if log_level not in ("DEBUG", "INFO"):
        # Nobody sees the versions line then, but Scrapy would still collect it, and its
        # platform field runs `uname -p` in a forked child.
        settings.set("LOG_VERSIONS", [], priority="cmdline")
    settings.set("LOG_INSTALL_ROOT_HANDLER", False, priority="cmdline")  # the CLI configured logging
    return settings


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


def run_crawl(config: CrawlConfig, log_level: str = "WARNING") -> dict[str, Any]:
    """Crawl seeds (or download a URL list) into WORK/crawl; returns WORK/crawl/stats.json.

    Runs an asyncio event loop (and, with ``--http-client twisted``, Twisted's reactor), so
    call it once per process.
    """
    from scrapy.crawler import AsyncCrawlerProcess

    from .spiders.images import ImageListSpider, ImagesSpider

    process = AsyncCrawlerProcess(scrapy_settings(config, log_level))
    set_scrapy_log_levels(log_level)
    process.crawl(ImageListSpider if config.url_list else ImagesSpider, config=config)
    process.start()
    stats_path = Path(config.work) / CRAWL_DIR / STATS_FILE
    return json.loads(stats_path.read_text()) if stats_path.exists() else {}
