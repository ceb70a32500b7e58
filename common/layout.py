"""Where each stage's files live and how they are named (the file half of the contract).

::

    WORK/crawl/part-NNNNN.parquet          crawl records (CRAWL_SCHEMA); part-wNN-NNNNN.parquet from crawl worker NN
    WORK/crawl/pages.jsonl                 the page journal (pages-wNN.jsonl per worker)
    WORK/crawl/image_pages.parquet         per image URL: pages of its host that show it (IMAGE_PAGES_SCHEMA)
    WORK/crawl/part-sNNNNN-MMMMM.parquet   crawl records downloaded by a cluster task for input shard NNNNN
    WORK/crawl/_input/shard-NNNNN.parquet  a URL list cut into input shards (url, caption), cut.json describes the cut
    WORK/crawl/_input/shard-NNNNN.done     an input shard's completion marker (its counts, JSON)
    WORK/crawl/_tasks/shard-NNNNN/         an input shard's own work directory while its task runs
    WORK/crawl/stats.json                  counts; _SUCCESS when the crawl finished with nothing pending
    WORK/crawl/lists.json                  how far each URL list was read, kept before every part goes into place
    WORK/crawl/.capcrawl.lock              held (flock) while a command writes WORK/crawl
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
LISTS_FILE = "lists.json"

INPUT_DIR = "_input"
TASKS_DIR = "_tasks"
CUT_FILE = "cut.json"

_PART = re.compile(r"^part-(?:w(?P<worker>\d+)-)?(?P<index>\d+)\.parquet$")
_SHARD_PART = re.compile(r"^part-s(?P<shard>\d+)-(?P<index>\d+)\.parquet$")


def part_name(index: int, worker: int | None = None) -> str:
    """``part-00042.parquet``, or ``part-w03-00042.parquet`` for crawl worker 3."""
    return f"part-{index:05d}.parquet" if worker is None else f"part-w{worker:02d}-{index:05d}.parquet"


def parse_part_name(name: str) -> tuple[int | None, int] | None:
    """``(worker or None, index)`` of a part file name; None for other names."""
    m = _PART.match(name)
    if not m:
        return None
    return (int(m["worker"]) if m["worker"] is not None else None, int(m["index"]))


def shard_part_name(shard: int, index: int) -> str:
    """``part-s00003-00042.parquet``: part 42 of input shard 3, as a cluster task publishes it."""
    return f"part-s{shard:05d}-{index:05d}.parquet"


def parse_shard_part_name(name: str) -> tuple[int, int] | None:
    """``(shard, index)`` of a shard part's file name; None for other names."""
    m = _SHARD_PART.match(name)
    return (int(m["shard"]), int(m["index"])) if m else None


def input_shard_name(shard: int) -> str:
    """``shard-00003.parquet``: input shard 3 of a cut URL list."""
    return f"shard-{shard:05d}.parquet"


def shard_done_name(shard: int) -> str:
    """``shard-00003.done``: input shard 3's completion marker."""
    return f"shard-{shard:05d}.done"


def shard_task_dir(crawl_dir: str | Path, shard: int) -> Path:
    """``WORK/crawl/_tasks/shard-00003``: where input shard 3's task crawls before it publishes its parts."""
    return Path(crawl_dir) / TASKS_DIR / f"shard-{shard:05d}"


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
