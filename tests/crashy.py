"""Worker functions for the pool tests: one kills its process on a marker (recovery from dead
image workers), one raises on it, one reports the batches it was sent."""

from __future__ import annotations

import os

from crawler.imageproc import ImageOptions, ImageResult, process_batch

MARKER = b"KILL-THE-WORKER"


def crash_on_marker(items: list[tuple[bytes, str | None]], opts: ImageOptions) -> list[ImageResult]:
    if any(data == MARKER for data, _ in items):
        os._exit(1)  # what the kernel's OOM killer does to a worker, as far as the pool can tell
    return process_batch(items, opts)


def raise_on_marker(items: list[tuple[bytes, str | None]], opts: ImageOptions) -> list[ImageResult]:
    if any(data == MARKER for data, _ in items):
        raise MemoryError("cannot allocate the resized image")  # the task fails, the worker lives
    return process_batch(items, opts)


def batch_sizes(items: list[tuple[bytes, str | None]], opts: ImageOptions) -> list[ImageResult]:
    """Each item's result says how many items its batch had and which item it was."""
    return [ImageResult(status="ok", error=f"{len(items)}:{data.decode()}") for data, _ in items]


def gc_threshold(items: list[tuple[bytes, str | None]], opts: ImageOptions) -> list[ImageResult]:
    """Each item's result carries the worker's garbage-collector thresholds."""
    import gc

    return [ImageResult(status="ok", error=repr(gc.get_threshold())) for _ in items]
