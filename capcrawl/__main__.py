"""The ``capcrawl`` command (and ``python -m capcrawl``).

For the commands that process images (crawl, download, run) the image workers' fork server
is started first, before the command-line module imports Pillow and pyarrow: the server's
own imports (the same, plus simplejpeg and OpenCV; ~0.3 s) then overlap those and
Scrapy's, and the crawl's first worker does not wait for them (~0.15 s less start-up).

Its first steps make the garbage collector's young generation larger
(:data:`crawler.workers.GC_THRESHOLD`) and hide pandas (:func:`hide_pandas`). ``scrapy crawl
images`` and in-process callers of :func:`capcrawl.cli.main` (the tests) keep Python's defaults.
"""

from __future__ import annotations

import gc
import sys
from importlib.machinery import ModuleSpec

from crawler.workers import GC_THRESHOLD, start_worker_server

#: The commands that process images, and so start the fork server (as capcrawl.cli's).
IMAGE_COMMANDS = ("crawl", "download", "run")


def _command(argv: list[str]) -> str | None:
    """The sub-command: the first word that is not an option (the global options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


#: The commands whose processes never load torch (the filter's): only these hide pandas, since
#: torch looks optional modules up and would take a hidden one for a broken install.
NO_PANDAS_COMMANDS = ("crawl", "download", "shards")


def hide_pandas() -> None:
    """Make ``import pandas`` fail in this process, unless something imported it already.

    When pandas is installed, pyarrow imports it the first time it turns a Python list into an
    array, only to ask whether the list is a pandas object: 0.35 s of CPU in every capcrawl
    process (`python -X importtime`), and in the crawl process it is spent while images wait.
    The crawl and shards commands never use pandas, and pyarrow treats a failed import as
    "not installed". (``sys.modules["pandas"] = None`` is not enough: pyarrow's compiled
    import then gets None.)
    """
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


class _NoPandas:
    """A meta path finder that finds pandas, and a loader that refuses to load it."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name == "pandas" or name.startswith("pandas."):
            return ModuleSpec(name, self)
        return None

    def create_module(self, spec: ModuleSpec) -> None:
        raise ModuleNotFoundError(f"{spec.name} is hidden in this capcrawl process (capcrawl.__main__.hide_pandas)", name=spec.name)

    def exec_module(self, module: object) -> None:  # never reached: create_module refuses
        raise ModuleNotFoundError("pandas is hidden in this capcrawl process", name="pandas")


def run() -> None:
    gc.set_threshold(*GC_THRESHOLD)
    argv = sys.argv[1:]
    if _command(argv) in NO_PANDAS_COMMANDS and not any(a.startswith("--executor") for a in argv):
        hide_pandas()
    # `crawl --workers N` only starts worker processes (each starts its own image workers).
    parent = any(a == "--workers" or a.startswith("--workers=") for a in argv)
    if _command(argv) in IMAGE_COMMANDS and not {"-h", "--help"} & set(argv) and not parent:
        start_worker_server()
    from capcrawl.cli import run as cli_run

    cli_run()


if __name__ == "__main__":
    run()
