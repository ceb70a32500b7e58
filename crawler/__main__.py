"""The ``capcrawl`` command (and ``python -m crawler``).

For the commands that process images (crawl, download, run) the image workers' fork server
is started first, before the command-line module imports Pillow and pyarrow: the server's
own imports (the same, plus imagehash and scipy's DCT; ~0.4 s) then overlap those and
Scrapy's, and the crawl's first worker does not wait for them (~0.15 s less start-up).

The garbage collector's young generation is also made larger (:data:`GC_THRESHOLD`) before
anything else runs.
"""

from __future__ import annotations

import gc
import sys

#: ``gc.set_threshold`` for capcrawl's processes. A crawl allocates container objects at a
#: high rate (Scrapy's requests, Deferreds, futures, headers and meta dicts, one set per
#: URL) and keeps thousands alive (the scheduler's queue), so at Python's default of 700
#: allocations per young collection the collector ran thousands of times and its older
#: generations walked that whole heap again and again. At 20,000 the crawl process spent
#: ~0.7 CPU s less on bench/vs_img2dataset.sh's 3,000 images (3.0 against 3.7-4.0 s user
#: time; wall ~4% less); 100,000 measured the same, 5,000 half the gain. Cyclic garbage
#: is still collected, after at most 20,000 allocations instead of 700: a few MB at most.
GC_THRESHOLD = (20_000, 20, 20)


def _command(argv: list[str]) -> str | None:
    """The sub-command: the first word that is not an option (the global options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def run() -> None:
    gc.set_threshold(*GC_THRESHOLD)
    argv = sys.argv[1:]
    from crawler.workers import IMAGE_COMMANDS, start_worker_server

    if _command(argv) in IMAGE_COMMANDS and not {"-h", "--help"} & set(argv):
        start_worker_server()
    from crawler.cli import run as cli_run

    cli_run()


if __name__ == "__main__":
    run()
