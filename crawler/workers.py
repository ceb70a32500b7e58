"""Where image worker processes come from: a fork server that has imported the image code.

Forking a worker from it costs milliseconds, where each spawned worker spent ~0.3 CPU s
importing (Pillow, numpy, imagehash, scipy's DCT, pyarrow, ...). The server is a fresh
single-threaded process, so forking it is safe although the crawl process runs threads.
Where there is no fork server (Windows), workers are spawned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import multiprocessing.context

# multiprocessing is imported where it is used: the commands that process no images (shards,
# filter, remove) import this module only for IMAGE_COMMANDS.

PRELOAD = ["crawler.worker_preload"]
#: The commands that process images, and so start the fork server.
IMAGE_COMMANDS = ("crawl", "download", "run")


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
