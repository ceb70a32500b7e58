"""A worker function that kills its process on a marker, to test recovery from dead image workers."""

from __future__ import annotations

import os

from crawler.imageproc import ImageOptions, ImageResult, process_batch

MARKER = b"KILL-THE-WORKER"


def crash_on_marker(items: list[tuple[bytes, str | None]], opts: ImageOptions) -> list[ImageResult]:
    if any(data == MARKER for data, _ in items):
        os._exit(1)  # what the kernel's OOM killer does to a worker, as far as the pool can tell
    return process_batch(items, opts)
