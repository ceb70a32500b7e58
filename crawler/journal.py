"""What a crawl has finished, kept in WORK so that a rerun resumes where it stopped.

Image URLs are finished once their row is in a part (parts are renamed into place only
when complete), so a crash loses at most the rows not yet in a part. Pages are journaled
one JSON line each when parsed: their links and images let a rerun skip a finished page
while still following its links. This survives kill -9, unlike Scrapy's JOBDIR queue,
whose in-flight requests are already marked seen when the process dies.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .records import list_parts, read_columns

PAGES_FILE = "pages.jsonl"


@dataclass
class PageEntry:
    url: str
    depth: int
    status: str
    links: list[str]
    images: list[str]


def load_done_urls(crawl_dir: Path) -> set[str]:
    """Image URLs that already have a row in a finished part."""
    done: set[str] = set()
    for part in list_parts(crawl_dir):
        done.update(read_columns(part, ["url"]).column("url").to_pylist())
    return done


class PageJournal:
    """Append-only log of parsed pages (one JSON object a line, flushed per page)."""

    def __init__(self, crawl_dir: Path):
        self.path = crawl_dir / PAGES_FILE
        self.entries: dict[str, PageEntry] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        d = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a kill
                    self.entries[d["url"]] = PageEntry(**d)
        crawl_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def add(self, entry: PageEntry) -> None:
        self.entries[entry.url] = entry
        self._fh.write(json.dumps(entry.__dict__, ensure_ascii=False) + "\n")
        self._fh.flush()

    def is_complete(self, url: str, done: set[str]) -> bool:
        e = self.entries.get(url)
        return e is not None and all(i in done for i in e.images)

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.entries.values():
            counts[e.status] = counts.get(e.status, 0) + 1
        return counts

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
