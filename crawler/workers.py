"""Where image worker processes come from: a fork server that has imported the image code.

Forking a worker from it costs milliseconds, where each spawned worker spent ~0.3 CPU s
importing (Pillow, numpy, simplejpeg, OpenCV, pyarrow, ...). The server is a fresh
single-threaded process, so forking it is safe although the crawl process runs threads.
Where there is no fork server (Windows), workers are spawned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import multiprocessing.context

# multiprocessing is imported where it is used: the ``capcrawl`` entry point imports this
# module before it knows whether the command processes images.

PRELOAD = ["crawler.worker_preload"]

#: ``gc.set_threshold`` for capcrawl's processes. A crawl allocates container objects at a
#: high rate (Scrapy's requests, Deferreds, futures, headers and meta dicts, one set per
#: URL) and keeps thousands alive (the scheduler's queue), so at Python's default of 700
#: allocations per young collection the collector ran over a thousand times and its older
#: generations walked that whole heap again and again (0.93 s of collecting in one download
#: of bench/vs_img2dataset.sh's 3,000 images). At 20,000 the crawl process took 2.99-3.28 s
#: of user CPU for that download against 3.43-4.01 s, and the download's wall time ~4% less;
#: 100,000 measured the same, 5,000 half the gain (bench/README.md). Cyclic garbage is still
#: collected, after at most 20,000 allocations instead of 700: a few MB at most. The
#: ``capcrawl`` command sets it first thing (capcrawl/__main__.py), and the fork server's
#: preload sets it for the workers it forks (crawler/worker_preload.py).
GC_THRESHOLD = (20_000, 20, 20)


def worker_context() -> multiprocessing.context.BaseContext:
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_worker_server() -> None:
    """Start the fork server now, so that its imports overlap the crawl process's own start-up
    (Scrapy's imports and set-up) instead of holding up the first worker (~0.3 s)."""
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
