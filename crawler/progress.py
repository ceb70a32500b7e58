"""A live progress line on a terminal (pages, images ok, failures by kind, rate)."""

from __future__ import annotations

import sys
import time

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import create_looping_call

PREFIX = "capcrawl/images/"


def _format(stats: dict, elapsed: float) -> str:
    ok = stats.get(PREFIX + "ok", 0)
    fails = {k[len(PREFIX):]: v for k, v in stats.items() if k.startswith(PREFIX) and k != PREFIX + "ok"}
    top = ", ".join(f"{k} {v}" for k, v in sorted(fails.items(), key=lambda kv: -kv[1])[:4])
    pages = stats.get("response_received_count", 0)
    rate = ok / elapsed if elapsed > 0 else 0.0
    return f"responses {pages} | images ok {ok} | failed {sum(fails.values())}" + (f" ({top})" if top else "") + f" | {rate:.1f} img/s"


class ProgressLine:
    """Rewrites one stderr line every second while the crawl runs (only on a terminal)."""

    def __init__(self, crawler):
        if not crawler.settings.getbool("CAPCRAWL_PROGRESS", True) or not sys.stderr.isatty():
            raise NotConfigured
        self.stats = crawler.stats
        self.start = time.monotonic()
        self.loop = None

    @classmethod
    def from_crawler(cls, crawler) -> "ProgressLine":
        ext = cls(crawler)
        crawler.signals.connect(ext.opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.closed, signal=signals.spider_closed)
        return ext

    def opened(self, spider=None) -> None:
        self.loop = create_looping_call(self.tick)  # asyncio's or Twisted's, whichever runs
        self.loop.start(1.0, now=False)

    def tick(self) -> None:
        sys.stderr.write("\r\033[K" + _format(self.stats.get_stats(), time.monotonic() - self.start))
        sys.stderr.flush()

    def closed(self, spider=None, reason: str = "") -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        self.tick()
        sys.stderr.write("\n")
