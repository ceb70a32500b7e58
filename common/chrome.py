"""Site chrome: navigation icons, logos, spacers and admonition icons are no samples.

Two signals, both recorded by the crawl: the image's place in the page's markup (``chrome``:
inside nav, the page's header or footer, a prev/next link, an admonition's icon cell; see
crawler/chrome.py), and how many of its host's pages show it (``WORK/crawl/image_pages.parquet``,
see :data:`common.records.IMAGE_PAGES_SCHEMA`). The filter (``site_chrome``) and
``shards --no-filter`` apply the same rule, :func:`chrome_reason`.

The defaults, chosen as a dataset builder would: a picture that illustrates content appears on
one page, or on a handful (an article and the index that teases it). An image on a quarter or
more of a host's pages is part of its template. The share needs enough pages to mean anything:
the rule applies from :data:`MIN_HOST_PAGES` crawled pages of that host and :data:`MIN_PAGES`
pages showing the image.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq

from common.layout import IMAGE_PAGES_FILE

#: An image on at least this share of its host's pages is template chrome ...
MAX_SHARE = 0.25
#: ... when the host has at least this many crawled pages ...
MIN_HOST_PAGES = 8
#: ... and the image is on at least this many of them.
MIN_PAGES = 4


def page_host(page_url: str | None) -> str:
    return (urlsplit(page_url).hostname or "").lower() if page_url else ""


class PageCounts:
    """On how many pages of a host an image URL appears, from ``WORK/crawl/image_pages.parquet``."""

    def __init__(self, counts: dict[tuple[str, str], tuple[int, int]] | None = None) -> None:
        self._counts = counts or {}

    @classmethod
    def load(cls, crawl_dir: str | Path) -> "PageCounts":
        path = Path(crawl_dir) / IMAGE_PAGES_FILE
        if not path.is_file():
            return cls()
        t = pq.read_table(path, columns=["url", "host", "page_count", "host_pages"])
        cols = [t.column(c).to_pylist() for c in ("url", "host", "page_count", "host_pages")]
        return cls({(u, h): (n, total) for u, h, n, total in zip(*cols)})

    def __len__(self) -> int:
        return len(self._counts)

    def of(self, url: str, page_url: str | None) -> tuple[int, int] | None:
        """``(page_count, host_pages)`` of ``url`` on ``page_url``'s host, None when not known."""
        return self._counts.get((url, page_host(page_url)))


def chrome_reason(markup: str | None, page_count: int | None, host_pages: int | None) -> str | None:
    """Why an image is site chrome (``"nav"``, ``"repeated:12/40"``...), None when it is content."""
    if markup:
        return markup
    if page_count and host_pages and host_pages >= MIN_HOST_PAGES and page_count >= MIN_PAGES:
        if page_count >= MAX_SHARE * host_pages:
            return f"repeated:{page_count}/{host_pages}"
    return None
