"""What a crawl has finished, kept in WORK so that a rerun resumes where it stopped.

Image URLs are finished once their row is in a part (parts are renamed into place only
when complete), so a crash loses at most the rows not yet in a part. Pages are journaled
one JSON line each when parsed: their links and images let a rerun skip a finished page
while still following its links. This survives kill -9, unlike Scrapy's JOBDIR queue,
whose in-flight requests are already marked seen when the process dies.

A page can appear more than once in a journal (when a shorter path to it was found after it
was parsed, its depth is journaled again); the last line wins.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from common.layout import journal_files, journal_name, list_parts
from common.records import IMAGE_PAGES_SCHEMA, PageStatus, read_columns

#: Page statuses whose images were read from the page (their image lists count for chrome).
PARSED = (PageStatus.OK.value, PageStatus.NOAI.value, PageStatus.TDMREP.value, PageStatus.CONTENT_USAGE.value)


@dataclass
class PageEntry:
    url: str
    depth: int
    status: str
    links: list[str]
    images: list[str]
    data_uris: int = 0  # inline data: images on the page (never samples, counted)


def load_done_urls(crawl_dir: Path) -> set[str]:
    """Image URLs that already have a row in a finished part."""
    done: set[str] = set()
    for part in list_parts(crawl_dir):
        done.update(read_columns(part, ["url"]).column("url").to_pylist())
    return done


def read_journal(path: Path) -> Iterator[PageEntry]:
    """Entries of one journal file in order (a line cut short by a kill is skipped)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                d = json.loads(line)
                yield PageEntry(**d)
            except (ValueError, TypeError):
                continue


class PageJournal:
    """Append-only log of parsed pages (one JSON object a line, flushed per page)."""

    def __init__(self, crawl_dir: Path, worker: int | None = None):
        crawl_dir.mkdir(parents=True, exist_ok=True)
        self.crawl_dir = crawl_dir
        self.path = crawl_dir / journal_name(worker)
        self.entries: dict[str, PageEntry] = {}
        self._read_to: dict[Path, int] = {}  # journal file -> bytes read
        self.refresh()
        self._fh = open(self.path, "a", encoding="utf-8")
        if self._fh.tell() and self._read_to.get(self.path, 0) < self._fh.tell():
            self._fh.write("\n")  # end a line cut short by a kill, so that the next one stands alone
        self._read_to[self.path] = self._fh.tell()

    def refresh(self) -> int:
        """Read the lines added to every journal since the last read (one per crawl worker: they
        share one frontier); a line still being written is left for later. Returns lines read."""
        read = 0
        for path in journal_files(self.crawl_dir):
            if path == self.path and hasattr(self, "_fh"):
                continue  # this journal's own lines are added as they are written
            start = self._read_to.get(path, 0)
            with open(path, "rb") as fh:
                fh.seek(start)
                data = fh.read()
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                try:
                    entry = PageEntry(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # a line cut short by a kill
                self.entries[entry.url] = entry
                read += 1
            self._read_to[path] = start + end
        return read

    def add(self, entry: PageEntry) -> None:
        if self._fh.closed:
            return  # a page parsed after a stop at once (a second Ctrl-C): fetched again next run
        self.entries[entry.url] = entry
        self._fh.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
        self._fh.flush()

    def is_complete(self, url: str, done: set[str]) -> bool:
        e = self.entries.get(url)
        return e is not None and all(i in done for i in e.images)

    def status_counts(self) -> dict[str, int]:
        return dict(Counter(e.status for e in self.entries.values()))

    def data_uris(self) -> int:
        return sum(e.data_uris for e in self.entries.values())

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


def image_page_counts(entries: dict[str, PageEntry]) -> "pyarrow.Table":  # noqa: F821
    """Per (image URL, page host): pages of that host showing the image, and the host's parsed pages."""
    import pyarrow as pa

    host_pages: Counter[str] = Counter()
    counts: Counter[tuple[str, str]] = Counter()
    for e in entries.values():
        if e.status not in PARSED:
            continue
        host = (urlsplit(e.url).hostname or "").lower()
        host_pages[host] += 1
        for image in set(e.images):
            counts[(image, host)] += 1
    rows = sorted(counts.items())
    return pa.table(
        {
            "url": [u for (u, _), _ in rows],
            "host": [h for (_, h), _ in rows],
            "page_count": pa.array([n for _, n in rows], pa.int32()),
            "host_pages": pa.array([host_pages[h] for (_, h), _ in rows], pa.int32()),
        },
        schema=IMAGE_PAGES_SCHEMA,
    )
