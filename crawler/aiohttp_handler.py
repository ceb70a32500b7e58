"""Scrapy's aiohttp download handler as capcrawl uses it (see :mod:`crawler.http`)."""

from __future__ import annotations

from scrapy.core.downloader.handlers._aiohttp import AiohttpDownloadHandler


class AiohttpHandler(AiohttpDownloadHandler):
    """Without the 'experimental' warning: capcrawl's test suite runs every crawl through it."""

    experimental = False
