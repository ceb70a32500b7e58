"""Input shards: a URL list cut once into shards, each downloaded on its own, for a cluster executor.

The list is cut into ``WORK/crawl/_input/shard-NNNNN.parquet`` (columns ``url``, ``caption``)
once, with ``cut.json`` describing the cut. A URL repeated in the list goes to one shard only
and is counted as ``skipped/duplicate_url``, as the local download counts it; a URL already
recorded in WORK/crawl (by an earlier run or list) goes to none, and is counted as
``skipped/duplicate_url`` too.

A shard is downloaded by :func:`run_shard`: the crawl stage, in a fresh process (a Scrapy crawl
runs its event loop once per process), downloads the shard into the shard's own work directory
``WORK/crawl/_tasks/shard-NNNNN/``, so that its temporary files, journal and resume state are its
own. Its finished parts are then renamed into WORK/crawl as ``part-sNNNNN-MMMMM.parquet`` (one
name per shard and part: tasks never collide), and ``WORK/crawl/_input/shard-NNNNN.done``
(the shard's counts) marks it complete. A task that runs again (a retry, or a rerun after a
crash) first takes its published parts back, so that its crawl resumes where it stopped and no
URL is recorded twice.

This module imports no Ray: :mod:`capcrawl.ray_executor` runs :func:`run_shard` as Ray tasks.
``python -m capcrawl.input_shards TASK_DIR LOG_LEVEL PARENT_PID`` is the shard's process (its
config comes pickled on stdin).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from common.errors import ConfigError
from common.fileio import atomic_write_json, atomic_write_parquet, remove_stale_temps
from common.layout import (
    CRAWL_DIR,
    CUT_FILE,
    INPUT_DIR,
    STATS_FILE,
    TASKS_DIR,
    input_shard_name,
    list_parts,
    parse_part_name,
    parse_shard_part_name,
    shard_done_name,
    shard_part_name,
    shard_task_dir,
)
from crawler.config import CrawlConfig

log = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema([("url", pa.string()), ("caption", pa.string())])
TASK_LOG = "task.log"
#: How long a shard's process may take to stop after SIGINT before it is killed.
STOP_GRACE_S = 30.0


# --- cutting the list ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cut:
    """The input shards of one URL list: their indices and rows, and what the cut left out."""

    first: int  # index of the first shard (a later list's shards continue the numbering)
    rows: tuple[int, ...]  # URLs per shard
    duplicate_url: int  # repeats of a URL met earlier in the list
    already_recorded: int  # URLs recorded in WORK/crawl before the cut
    source: dict[str, Any]  # which list, read how, cut how

    @property
    def shards(self) -> list[int]:
        return list(range(self.first, self.first + len(self.rows)))

    def shard_rows(self, shard: int) -> int:
        return self.rows[shard - self.first]

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "rows": list(self.rows), "duplicate_url": self.duplicate_url,
                "already_recorded": self.already_recorded, "source": self.source}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Cut":
        return cls(int(d["first"]), tuple(d["rows"]), int(d["duplicate_url"]), int(d["already_recorded"]), d["source"])


def input_dir(config: CrawlConfig) -> Path:
    return config.crawl_dir / INPUT_DIR


def shard_path(config: CrawlConfig, shard: int) -> Path:
    return input_dir(config) / input_shard_name(shard)


def done_path(config: CrawlConfig, shard: int) -> Path:
    return input_dir(config) / shard_done_name(shard)


def read_marker(config: CrawlConfig, shard: int) -> dict[str, Any] | None:
    """The shard's completion marker, or None while it is not complete."""
    path = done_path(config, shard)
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def _source(config: CrawlConfig) -> dict[str, Any]:
    """What identifies a cut: the list file (path, size, mtime), how it is read and the shard size."""
    p = Path(config.url_list).resolve()
    st = p.stat()
    return {"url_list": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "input_format": config.input_format,
            "url_col": config.url_col, "caption_col": config.caption_col, "shard_rows": config.shard_rows}


def cut_url_list(config: CrawlConfig) -> Cut:
    """The list's input shards: cut now (streamed, written atomically), or the earlier cut of the same list.

    ``cut.json`` is written last: a cut interrupted half-way is made again. A different list
    (or ``--shard-rows``) is cut into new shards numbered after the earlier ones, once those are
    all complete.
    """
    from crawler.journal import load_done_urls
    from crawler.urllist import iter_url_list

    d = input_dir(config)
    source = _source(config)
    first = _next_free_shard(config)
    earlier = _read_cut(d)
    if earlier is not None:
        if earlier.source == source:
            return earlier
        unfinished = [s for s in earlier.shards if read_marker(config, s) is None]
        if unfinished:
            raise ConfigError(
                f"{config.work} holds an unfinished Ray download of {earlier.source['url_list']} "
                f"({len(unfinished)} shards to go); rerun that command to finish it, or pass another --work."
            )
    d.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(d)
    recorded = load_done_urls(config.crawl_dir)
    listed: set[str] = set()
    duplicates = already = 0
    rows: list[int] = []
    batch: list[tuple[str, str | None]] = []
    for url, caption in iter_url_list(config.url_list, config.input_format, config.url_col, config.caption_col):
        if url in listed:
            duplicates += 1
            continue
        listed.add(url)
        if url in recorded:
            already += 1
            continue
        batch.append((url, caption))
        if len(batch) == config.shard_rows:
            rows.append(_write_shard(config, first + len(rows), batch))
            batch = []
    if batch:
        rows.append(_write_shard(config, first + len(rows), batch))
    cut = Cut(first, tuple(rows), duplicates, already, source)
    atomic_write_json(cut.to_json(), d / CUT_FILE)
    log.info("cut %s into %d shards of up to %d URLs (%d repeats skipped)", config.url_list, len(rows),
             config.shard_rows, duplicates)
    return cut


def _read_cut(d: Path) -> Cut | None:
    path = d / CUT_FILE
    try:
        return Cut.from_json(json.loads(path.read_text())) if path.is_file() else None
    except (ValueError, KeyError, TypeError):
        return None


def _next_free_shard(config: CrawlConfig) -> int:
    """One more than the highest shard index WORK/crawl knows of (0 for a new work directory)."""
    seen = [-1]
    earlier = _read_cut(input_dir(config))
    if earlier is not None:
        seen.append(earlier.first + len(earlier.rows) - 1)
    seen += [parsed[0] for p in list_parts(config.crawl_dir) if (parsed := parse_shard_part_name(p.name))]
    return max(seen) + 1


def _write_shard(config: CrawlConfig, shard: int, rows: list[tuple[str, str | None]]) -> int:
    table = pa.table({"url": [u for u, _ in rows], "caption": [c for _, c in rows]}, schema=SHARD_SCHEMA)
    atomic_write_parquet(table, shard_path(config, shard))
    return len(rows)


# --- one shard's task -----------------------------------------------------------------------


class ShardFailed(RuntimeError):
    """A shard's download process failed (the executor retries the task)."""


def shard_config(config: CrawlConfig, shard: int, deadline_s: float = 0.0) -> CrawlConfig:
    """The crawl stage's config for one shard: its input file, its own work directory, run locally.

    Under a cluster every task is one crawl process; it starts one image worker unless
    ``--image-workers`` says otherwise (the cluster runs as many tasks at once as it has CPUs).
    """
    return config.replace(
        url_list=str(shard_path(config, shard)),
        input_format="parquet",
        url_col="url",
        caption_col="caption" if config.caption_col else None,
        work=str(shard_task_dir(config.crawl_dir, shard)),
        executor="local",
        ray_address=None,
        deadline=deadline_s,
        image_workers=config.image_workers or 1,
        progress=False,
    )


def run_shard(config: CrawlConfig, shard: int, log_level: str = "WARNING", deadline_at: float | None = None) -> dict[str, Any]:
    """Download one input shard (a cluster task): returns ``{"shard", "state": done|incomplete, ...}``.

    Raises :class:`ShardFailed` when the shard's process fails, after publishing what it
    finished; a retry resumes from there.
    """
    marker = read_marker(config, shard)
    if marker is not None:
        return {"shard": shard, "state": "done", "ran": False, "marker": marker}
    if deadline_at is not None and time.time() >= deadline_at:
        return {"shard": shard, "state": "incomplete", "finish_reason": "closespider_timeout"}
    started = time.monotonic()
    task_dir = shard_task_dir(config.crawl_dir, shard)
    own_dir = task_dir / CRAWL_DIR
    take_back_parts(config.crawl_dir, shard, own_dir)
    deadline_s = max(0.001, deadline_at - time.time()) if deadline_at is not None else 0.0
    code, tail = run_shard_process(shard_config(config, shard, deadline_s), log_level, task_dir)
    publish_parts(own_dir, config.crawl_dir, shard)
    if code != 0:
        raise ShardFailed(f"shard {shard}: its download process exited with {code}; {task_dir / TASK_LOG} ends:\n{tail}")
    stats = _read_json(own_dir / STATS_FILE)
    if not stats.get("complete"):
        return {"shard": shard, "state": "incomplete", "finish_reason": stats.get("finish_reason")}
    marker = {
        "shard": shard,
        "rows": sum(stats.get("images", {}).values()),
        "images": stats.get("images", {}),
        # None: the cut gave the shard each URL once and none already in WORK, so what its task
        # skipped were only its own earlier try's rows (counted as recorded by another list).
        "skipped": {},
        "events": stats.get("events", {}),
        "crawl_delay": stats.get("crawl_delay", {}),
        "parts": sorted(p.name for p in list_parts(config.crawl_dir) if (s := parse_shard_part_name(p.name)) and s[0] == shard),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "seconds": round(time.monotonic() - started, 3),  # this task's last try, process start to marker
    }
    atomic_write_json(marker, done_path(config, shard))
    shutil.rmtree(task_dir, ignore_errors=True)
    return {"shard": shard, "state": "done", "ran": True, "marker": marker}


def run_shard_process(config: CrawlConfig, log_level: str, task_dir: Path) -> tuple[int, str]:
    """Run the crawl stage on ``config`` in a fresh Python process; its exit code and the end of its log.

    The process's output goes to ``TASK_DIR/task.log`` (appended, one block per attempt). If
    this call is interrupted (the task is cancelled), the process gets SIGINT (the crawl stops
    cleanly, keeping finished parts) and is killed after :data:`STOP_GRACE_S`.
    """
    task_dir.mkdir(parents=True, exist_ok=True)
    log_path = task_dir / TASK_LOG
    cmd = [sys.executable, "-m", "capcrawl.input_shards", str(task_dir), log_level, str(os.getpid())]
    with open(log_path, "ab") as out:
        out.write(f"--- {datetime.now(timezone.utc).isoformat()} attempt in pid {os.getpid()}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
        try:
            proc.stdin.write(pickle.dumps(config))
            proc.stdin.close()
            code = proc.wait()
        finally:
            _stop(proc)
    return code, _tail(log_path)


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT, then SIGKILL after the grace period, for a process still running."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def _own_parts(crawl_dir: Path, shard: int) -> Iterator[tuple[Path, int]]:
    for p in list_parts(crawl_dir):
        parsed = parse_shard_part_name(p.name)
        if parsed is not None and parsed[0] == shard:
            yield p, parsed[1]


def publish_parts(own_dir: Path, crawl_dir: Path, shard: int) -> list[Path]:
    """Rename the shard's finished parts into WORK/crawl as ``part-sNNNNN-MMMMM.parquet``."""
    published = []
    for p in list_parts(own_dir):
        parsed = parse_part_name(p.name)
        if parsed is None or parsed[0] is not None:
            continue
        final = Path(crawl_dir) / shard_part_name(shard, parsed[1])
        os.replace(p, final)
        published.append(final)
    return published


def take_back_parts(crawl_dir: Path, shard: int, own_dir: Path) -> int:
    """Move the shard's published parts back into its own directory (so its crawl resumes)."""
    from common.layout import part_name

    own_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for p, index in _own_parts(Path(crawl_dir), shard):
        os.replace(p, own_dir / part_name(index))
        n += 1
    return n


def recorded_rows(crawl_dir: Path, shard: int) -> int:
    """Rows of the shard's published parts (from the parquet footers)."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p, _ in _own_parts(Path(crawl_dir), shard))


# --- the whole download's stats ------------------------------------------------------------


def download_stats(config: CrawlConfig, cut: Cut, finished_now: list[dict[str, Any]], finish_reason: str,
                   started_at: datetime) -> dict[str, Any]:
    """Write WORK/crawl/stats.json (and ``_SUCCESS`` when every shard is complete) for a sharded download.

    Images are counted from every part, as for a local download; the events of the shards
    completed by this run are added to the earlier runs'. ``pending`` counts the URLs of
    incomplete shards that have no row yet.
    """
    from common.options import digest
    from crawler.stats import CRAWL_DELAY, IMAGES, PREFIX, SCRAPY_EVENTS, list_entry, list_key, list_skips, read_stats, write_crawl_stats

    pending = sum(cut.shard_rows(s) - recorded_rows(config.crawl_dir, s)
                  for s in cut.shards if read_marker(config, s) is None)
    events: Counter[str] = Counter()
    for marker in finished_now:
        for key, value in marker.get("events", {}).items():
            events[key if key in SCRAPY_EVENTS else PREFIX + key] += value
        for status, n in marker.get("images", {}).items():
            events[IMAGES + status] += n
        for host, delay in marker.get("crawl_delay", {}).items():
            events[CRAWL_DELAY + host] = delay
    # As a local download counts them: this list's repeats and its URLs WORK already held, beside
    # the counts of every other list downloaded into WORK (stats.json "lists").
    lists = dict(read_stats(config.crawl_dir).get("lists", {}))
    lists[list_key(config.url_list)] = list_entry(config.url_list, cut.duplicate_url + cut.already_recorded + sum(cut.rows),
                                                  cut.duplicate_url, cut.already_recorded)
    skipped = list_skips(lists)
    for marker in finished_now:
        for key, n in marker.get("skipped", {}).items():
            skipped[key] = skipped.get(key, 0) + n
    return write_crawl_stats(
        config.crawl_dir,
        mode=config.mode,
        pages={},
        skipped=skipped,
        pending=pending,
        scrapy_stats=dict(events),
        finish_reason=finish_reason,
        started_at=started_at,
        options_digest=digest(config),
        lists=lists,
    )


def remove_finished_task_dirs(config: CrawlConfig, cut: Cut) -> None:
    """Work directories left by tasks that completed their shard but were stopped before cleaning up."""
    for s in cut.shards:
        d = shard_task_dir(config.crawl_dir, s)
        if d.is_dir() and read_marker(config, s) is not None:
            shutil.rmtree(d, ignore_errors=True)
    tasks = config.crawl_dir / TASKS_DIR
    if tasks.is_dir() and not any(tasks.iterdir()):
        tasks.rmdir()


# --- the shard's process ---------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """Get SIGTERM (a clean stop) when the task's process dies, e.g. killed by the cluster (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        raise SystemExit(f"the task's process {parent_pid} is gone")


def main(argv: list[str]) -> int:
    """``python -m capcrawl.input_shards TASK_DIR LOG_LEVEL PARENT_PID``, the shard's config pickled on stdin."""
    task_dir, log_level, parent_pid = argv
    _die_with_parent(int(parent_pid))
    config = pickle.loads(sys.stdin.buffer.read())
    if Path(config.work) != Path(task_dir):
        raise SystemExit(f"config work {config.work} is not the task's directory {task_dir}")
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    import crawler
    from crawler.workers import start_worker_server

    start_worker_server()
    stats = crawler.run(config, log_level)
    log.info("shard crawl in %s finished: %s, %d rows", task_dir, stats.get("finish_reason"), stats.get("images_total", 0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
