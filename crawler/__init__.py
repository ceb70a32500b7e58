"""The crawl stage: Scrapy spiders that collect every image with its text, or download a URL list.

Entry point: :func:`run` (``capcrawl crawl`` / ``capcrawl download``; ``scrapy crawl images``
reaches the same spider). Options: :class:`crawler.config.CrawlConfig`.
"""

from __future__ import annotations

from typing import Any


def run(config: "CrawlConfig", log_level: str = "WARNING") -> dict[str, Any]:  # noqa: F821
    """Crawl into WORK/crawl and return its stats (see :func:`crawler.stage.run`)."""
    from .stage import run as run_crawl

    return run_crawl(config, log_level)
