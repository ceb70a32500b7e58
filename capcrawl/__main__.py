"""The ``capcrawl`` command (and ``python -m capcrawl``).

For the commands that process images (crawl, download, run) the image workers' fork server
is started first, before the command-line module imports Pillow and pyarrow: the server's
own imports (the same, plus imagehash and scipy's DCT; ~0.4 s) then overlap those and
Scrapy's, and the crawl's first worker does not wait for them (~0.15 s less start-up).

Its first step makes the garbage collector's young generation larger
(:data:`crawler.workers.GC_THRESHOLD`). ``scrapy crawl images`` and in-process callers of
:func:`capcrawl.cli.main` (the tests) keep Python's defaults.
"""

from __future__ import annotations

import gc
import sys

from crawler.workers import GC_THRESHOLD, start_worker_server

#: The commands that process images, and so start the fork server (as capcrawl.cli's).
IMAGE_COMMANDS = ("crawl", "download", "run")


def _command(argv: list[str]) -> str | None:
    """The sub-command: the first word that is not an option (the global options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def run() -> None:
    gc.set_threshold(*GC_THRESHOLD)
    argv = sys.argv[1:]
    # `crawl --workers N` only starts worker processes (each starts its own image workers).
    parent = any(a == "--workers" or a.startswith("--workers=") for a in argv)
    if _command(argv) in IMAGE_COMMANDS and not {"-h", "--help"} & set(argv) and not parent:
        start_worker_server()
    from capcrawl.cli import run as cli_run

    cli_run()


if __name__ == "__main__":
    run()
