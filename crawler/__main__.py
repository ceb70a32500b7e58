"""The ``capcrawl`` command (and ``python -m crawler``).

For the commands that process images (crawl, download, run) the image workers' fork server
is started before anything else is imported: its own imports (Pillow, pyarrow, imagehash,
scipy's DCT; ~0.4 s) then run beside the CLI's and Scrapy's instead of after them, and the
crawl's first worker does not wait for it.
"""

from __future__ import annotations

import sys

_IMAGE_COMMANDS = ("crawl", "download", "run")


def _command(argv: list[str]) -> str | None:
    """The sub-command: the first word that is not an option (the global options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def run() -> None:
    if _command(sys.argv[1:]) in _IMAGE_COMMANDS:
        from crawler.workers import start_worker_server

        start_worker_server()
    from crawler.cli import run as cli_run

    cli_run()


if __name__ == "__main__":
    run()
