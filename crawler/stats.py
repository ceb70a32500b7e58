"""``WORK/crawl/stats.json``: the crawl's counts, from one place.

Counts that describe the data are recomputed from what is on disk, so that runs and
resumes add up: images by status from the parts, pages by status from the page journals.
What happened on the way (back-offs, refused private addresses, retries, robots.txt
Crawl-delays) is counted by the crawl's components in Scrapy's stats collector under
``capcrawl/...`` and added to the previous runs' totals (``events``). ``this_run`` holds
the last run's own figures.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.fileio import atomic_write_json
from common.layout import DONE_FILE, LISTS_FILE, STATS_FILE, list_parts, parse_part_name
from common.records import SCHEMA_VERSION, read_columns

#: Prefix of every counter capcrawl's crawl components keep in Scrapy's stats collector.
PREFIX = "capcrawl/"
IMAGES = PREFIX + "images/"  # one per row written, by status (for the progress line)
SKIPPED = PREFIX + "skipped/"  # URLs that are no row, by why (duplicate_url, data_uri)
CRAWL_DELAY = PREFIX + "crawl_delay/"  # robots.txt Crawl-delay per host
#: Scrapy's own counters worth keeping as events.
SCRAPY_EVENTS = ("retry/count", "retry/max_reached", "robotstxt/request_count", "response_received_count")
#: Seeds kept in stats.json's ``options`` (their number is kept too): enough for a datasheet.
SEEDS_RECORDED = 20


def run_options(options: dict[str, Any]) -> dict[str, Any]:
    """The crawl's options for stats.json (``CrawlConfig.to_dict()``): the first seeds and their number."""
    seeds = list(options.get("seeds") or [])
    return {**options, "seeds": seeds[:SEEDS_RECORDED], "seed_count": len(seeds)}


def count_statuses(crawl_dir: Path, worker: int | None | bool = False) -> dict[str, int]:
    """Rows by status over the parts (of one crawl worker's parts only, when ``worker`` is given)."""
    counts: Counter[str] = Counter()
    for part in list_parts(crawl_dir):
        if worker is not False and (parse_part_name(part.name) or (None,))[0] != worker:
            continue
        counts.update(read_columns(part, ["status"]).column("status").to_pylist())
    return dict(sorted(counts.items()))


def list_key(path: str | Path) -> str:
    """A URL list's identity across runs: its absolute path, size and modification time."""
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def list_entry(path: str | Path, lines_read: int, duplicate_url: int, recorded_before: int) -> dict[str, Any]:
    """What stats.json's ``lists`` keeps of one URL list: the lines read so far, its repeats
    (recounted by every pass), and its URLs that WORK held before this list reached them."""
    return {"list": str(path), "lines_read": lines_read, "duplicate_url": duplicate_url,
            "recorded_before": recorded_before}


def list_skips(lists: dict[str, dict[str, Any]]) -> dict[str, int]:
    """``skipped`` of a WORK holding these lists: every line that is no row of its own."""
    return {"duplicate_url": sum(int(c.get("duplicate_url", 0)) + int(c.get("recorded_before", 0)) for c in lists.values())}


def read_lists(crawl_dir: Path) -> dict[str, dict[str, Any]]:
    """How far each URL list into WORK was read: stats.json's ``lists``, or lists.json's entry
    where that is further (lists.json is kept before every part, so it survives a kill -9)."""
    lists = dict(read_stats(crawl_dir).get("lists", {}))
    try:
        kept = json.loads((Path(crawl_dir) / LISTS_FILE).read_text())
    except (OSError, ValueError):
        kept = {}
    for key, entry in (kept.items() if isinstance(kept, dict) else ()):
        if int(entry.get("lines_read", 0)) > int(lists.get(key, {}).get("lines_read", -1)):
            lists[key] = entry
    return lists


def write_lists(crawl_dir: Path, lists: dict[str, dict[str, Any]]) -> None:
    atomic_write_json(lists, Path(crawl_dir) / LISTS_FILE)


def read_stats(crawl_dir: Path) -> dict[str, Any]:
    path = Path(crawl_dir) / STATS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def _events(scrapy_stats: dict[str, Any]) -> Counter[str]:
    events: Counter[str] = Counter()
    for key, value in scrapy_stats.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if key.startswith(PREFIX) and not key.startswith((IMAGES, SKIPPED, CRAWL_DELAY)):
            events[key[len(PREFIX):]] += value
        elif key in SCRAPY_EVENTS:
            events[key] += value
    return events


def write_crawl_stats(
    crawl_dir: Path,
    *,
    mode: str,
    pages: dict[str, int],
    skipped: dict[str, int],
    pending: int,
    scrapy_stats: dict[str, Any],
    finish_reason: str | None,
    started_at: datetime | None = None,
    options_digest: str | None = None,
    options: dict[str, Any] | None = None,
    worker: int | None = None,
    worker_pages: dict[str, int] | None = None,
    lists: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write WORK/crawl/stats.json (and ``_SUCCESS`` when the crawl is complete); return the stats.

    A crawl worker (``worker``) writes the whole crawl's counts (every worker's parts and
    journals; ``pending`` from the shared frontier), adds its run's events to the totals and
    keeps its own counts under ``workers[ID]`` beside the other workers' last ones.
    """
    previous = read_stats(crawl_dir)
    images = count_statuses(crawl_dir)
    this_run = _events(scrapy_stats)
    events = Counter(previous.get("events", {}))
    events.update(this_run)
    delays = dict(previous.get("crawl_delay", {}))
    delays.update({k[len(CRAWL_DELAY):]: v for k, v in scrapy_stats.items() if k.startswith(CRAWL_DELAY)})
    now = datetime.now(timezone.utc)
    complete = finish_reason == "finished" and pending == 0
    stats = {
        "schema_version": SCHEMA_VERSION,
        "mode": mode,
        "images": images,
        "images_total": sum(images.values()),
        "pages": dict(sorted(pages.items())),
        "skipped": dict(sorted((k, v) for k, v in skipped.items() if v)),
        "pending": pending,
        "finish_reason": finish_reason,
        "complete": complete,
        "events": dict(sorted(events.items())),
        "crawl_delay": dict(sorted(delays.items())),
        "options": run_options(options) if options is not None else previous.get("options"),
        "lists": lists if lists is not None else previous.get("lists", {}),
        "this_run": {
            "started_at": started_at.isoformat() if started_at else None,
            "seconds": round((now - started_at).total_seconds(), 3) if started_at else None,
            "rows_written": sum(v for k, v in scrapy_stats.items() if k.startswith(IMAGES)),
            "events": dict(sorted(this_run.items())),
        },
        "updated_at": now.isoformat(),
    }
    if worker is not None:
        stats["workers"] = _worker_counts(previous.get("workers", {}), crawl_dir, worker, worker_pages or {}, stats)
    atomic_write_json(stats, Path(crawl_dir) / STATS_FILE)
    done = Path(crawl_dir) / DONE_FILE
    if complete:
        atomic_write_json({"finished_at": now.isoformat(), "options": options_digest}, done)
    else:
        done.unlink(missing_ok=True)
    return stats


def _worker_counts(previous: dict[str, Any], crawl_dir: Path, worker: int, pages: dict[str, int],
                   stats: dict[str, Any]) -> dict[str, Any]:
    """Every worker's own counts: this one's now (its events summed over its runs), the others' as last written."""
    mine = previous.get(str(worker), {})
    events = Counter(mine.get("events", {}))
    events.update(stats["this_run"]["events"])
    images = count_statuses(crawl_dir, worker)
    workers = dict(previous)
    workers[str(worker)] = {
        "images": images,
        "images_total": sum(images.values()),
        "pages": dict(sorted(pages.items())),
        "events": dict(sorted(events.items())),
        "finish_reason": stats["finish_reason"],
        "this_run": stats["this_run"],
        "updated_at": stats["updated_at"],
    }
    return dict(sorted(workers.items(), key=lambda kv: int(kv[0])))
