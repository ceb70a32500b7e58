"""The crawl stage's one entry function: run Scrapy with capcrawl's spider and settings."""

from __future__ import annotations

import logging
from typing import Any

from common.errors import ConfigError

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
    from scrapy.crawler import AsyncCrawlerProcess

    from .spiders.images import ImageListSpider, ImagesSpider
    from .upstream import set_scrapy_log_levels

    check_upstream_or_fail()
    if config.ignore_robots:
        log.warning("!!! --ignore-robots: robots.txt will NOT be obeyed. Only do this for sites you own. !!!")
    frontier = join_frontier(config) if config.cluster else None
    try:
        process = AsyncCrawlerProcess(scrapy_settings(config, log_level))
        set_scrapy_log_levels(log_level)
        if frontier is not None:
            from .spiders.cluster import ClusterImagesSpider

            process.crawl(ClusterImagesSpider, config=config, frontier=frontier)
        else:
            process.crawl(ImageListSpider if config.url_list else ImagesSpider, config=config)
        process.start()
    finally:
        if frontier is not None:
            frontier.leave()
    if frontier is not None and frontier.failure:
        from .frontier import FrontierError

        raise FrontierError(f"worker {frontier.worker_id}: {frontier.failure}. Nothing is lost: run the same "
                            "command again (with Redis reachable) to resume.")
    return read_stats(config.crawl_dir)


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
