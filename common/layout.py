"""Where each stage's files live and how they are named (the file half of the contract).

::

    WORK/crawl/part-NNNNN.parquet          crawl records (CRAWL_SCHEMA); part-wNN-NNNNN.parquet from crawl worker NN
    WORK/crawl/pages.jsonl                 the page journal (pages-wNN.jsonl per worker)
    WORK/crawl/image_pages.parquet         per image URL: pages of its host that show it (IMAGE_PAGES_SCHEMA)
    WORK/crawl/stats.json                  counts; _SUCCESS when the crawl finished with nothing pending
    WORK/scored/part-NNNNN.parquet         scored records (SCORED_SCHEMA), one per crawl part, same name
    WORK/scored/emb-NNNNN.npy              float16 image embeddings, row-aligned with the scored part
    WORK/scored/stats.json, _SUCCESS
    OUT/...                                see shards/outdir.py

A part is complete when it has its final name (parts are written under a temporary name and
renamed, :mod:`common.fileio`). ``_SUCCESS`` holds a small JSON document: when the stage
finished and a digest of the options it ran with.
"""

from __future__ import annotations

import re
from pathlib import Path

CRAWL_DIR = "crawl"
SCORED_DIR = "scored"
PART_GLOB = "part-*.parquet"
STATS_FILE = "stats.json"
DONE_FILE = "_SUCCESS"
PAGES_FILE = "pages.jsonl"
IMAGE_PAGES_FILE = "image_pages.parquet"

_PART = re.compile(r"^part-(?:w(?P<worker>\d+)-)?(?P<index>\d+)\.parquet$")


def part_name(index: int, worker: int | None = None) -> str:
    """``part-00042.parquet``, or ``part-w03-00042.parquet`` for crawl worker 3."""
    return f"part-{index:05d}.parquet" if worker is None else f"part-w{worker:02d}-{index:05d}.parquet"


def parse_part_name(name: str) -> tuple[int | None, int] | None:
    """``(worker or None, index)`` of a part file name; None for other names."""
    m = _PART.match(name)
    if not m:
        return None
    return (int(m["worker"]) if m["worker"] is not None else None, int(m["index"]))


def journal_name(worker: int | None = None) -> str:
    """``pages.jsonl``, or ``pages-w03.jsonl`` for crawl worker 3."""
    return PAGES_FILE if worker is None else f"pages-w{worker:02d}.jsonl"


def journal_files(crawl_dir: str | Path) -> list[Path]:
    """Every page journal in a crawl directory (one per crawl worker), in order."""
    d = Path(crawl_dir)
    return sorted(p for p in d.glob("pages*.jsonl") if p.is_file()) if d.is_dir() else []


def emb_name(part: str | Path) -> str:
    """Embedding file beside a scored part: ``part-00042.parquet`` -> ``emb-00042.npy``."""
    stem = Path(part).name.removesuffix(".parquet")
    return "emb-" + stem.removeprefix("part-") + ".npy"


def list_parts(directory: str | Path) -> list[Path]:
    """Finished parts in a stage directory, in name order (temporary files excluded)."""
    d = Path(directory)
    return sorted(p for p in d.glob(PART_GLOB) if p.is_file()) if d.is_dir() else []


def crawl_dir(work: str | Path) -> Path:
    return Path(work) / CRAWL_DIR


def scored_dir(work: str | Path) -> Path:
    return Path(work) / SCORED_DIR
