"""Memory of a crawl's in-memory page journal per crawled page (crawl from seeds, not URL lists).

The spider keeps every crawled page's entry (its links and image URLs) in memory: the shortest
depth of a page found again by a shorter path is handed on to its links, a resumed crawl tells
finished pages from unfinished ones by their images, and site chrome is counted from them at
the end. This measures that cost for synthetic pages (fresh strings, nothing shared between
pages, so an upper bound for sites whose navigation links repeat), plus Scrapy's request
fingerprints (one 20-byte digest per request URL in a set).

    .venv/bin/python bench/journal_memory.py [--pages 100000] [--images 30] [--links 40]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crawler.journal import PageEntry  # noqa: E402


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--links", type=int, default=40)
    a = ap.parse_args()
    base = rss_mib()
    entries: dict[str, PageEntry] = {}
    for p in range(a.pages):
        host = f"example-site-{p % 500}.org"
        url = f"https://www.{host}/articles/2024/{p:08d}/some-article-title.html"
        images = [f"https://cdn.{host}/images/2024/{p:08d}/photo-{i:02d}-large.jpg" for i in range(a.images)]
        links = [f"https://www.{host}/articles/2024/{(p * 7 + i) % a.pages:08d}/some-article-title.html" for i in range(a.links)]
        entries[url] = PageEntry(url, 2, "ok", links, images)
    gc.collect()
    journal = rss_mib() - base
    fingerprints = {hashlib.sha1(str(i).encode()).digest() for i in range(1_000_000)}
    fp = rss_mib() - base - journal
    print(f"journal: {a.pages} pages x ({a.images} images + {a.links} links): {journal:.0f} MiB, "
          f"{journal / a.pages * 1024:.1f} KiB a page, {journal / a.pages * 1e6 / 1024:.1f} GiB per million pages")
    print(f"request fingerprints: {len(fingerprints)} in a set: {fp:.0f} MiB per million requests")


if __name__ == "__main__":
    main()
