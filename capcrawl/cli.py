"""The ``capcrawl`` command line: a thin layer that parses options into each stage's config and
calls the stage's entry function (or the pipeline).

Every option is declared once, on its stage's config dataclass (:mod:`common.options`); the
parsers below are built from those declarations.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from common.errors import INTERRUPTS, ConfigError
from common.options import add_options, from_namespace
from crawler.config import CLUSTER, CRAWL_ONLY, LIST_ONLY, CrawlConfig
from crawler.frontier import EXIT_FRONTIER_LOST, FrontierError
from shards.config import RemoveConfig, ShardsConfig

from .summary import print_crawl_summary, print_filter_summary, print_removal_summary, print_shards_summary

log = logging.getLogger("capcrawl")

IMAGE_COMMANDS = ("crawl", "download", "run")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _say_interrupted() -> None:
    print("capcrawl: interrupted; run the same command again to resume.", file=sys.stderr)


def _filter_config_class() -> type:
    from filter.config import FilterConfig  # imports nothing heavy until a config is built

    return FilterConfig


def build_parser() -> argparse.ArgumentParser:
    FilterConfig = _filter_config_class()
    from filter.config import CLUSTER_OPTIONS as FILTER_CLUSTER_OPTIONS  # `run` filters in its own process
    parser = _Parser(prog="capcrawl", description="Crawl the web politely into CLIP-filtered, deduplicated image-caption shards.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for Scrapy's debug log)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("crawl", help="crawl seed pages and collect every image with its text")
    add_options(p, CrawlConfig, skip=LIST_ONLY)

    p = sub.add_parser("download", help="download a URL list (txt/csv/tsv/parquet/jsonl), img2dataset-style")
    add_options(p, CrawlConfig, skip=CRAWL_ONLY)

    p = sub.add_parser("filter", help="score image/text pairs with CLIP, fill missing captions")
    add_options(p, FilterConfig)

    p = sub.add_parser("shards", help="deduplicate and write WebDataset shards")
    add_options(p, ShardsConfig)

    p = sub.add_parser("run", help="crawl, filter and write shards in one go (resumable)")
    groups: dict = {}
    add_options(p, CrawlConfig, skip=LIST_ONLY + CLUSTER, groups=groups)
    add_options(p, FilterConfig, skip=("work", *FILTER_CLUSTER_OPTIONS), groups=groups)
    add_options(p, ShardsConfig, skip=("work", "site_chrome"), groups=groups)  # --keep-site-chrome: the filter's

    p = sub.add_parser("remove", help="apply a takedown list to existing shards")
    add_options(p, RemoveConfig)

    p = sub.add_parser("report", help="write OUT/report/index.html: what was crawled, kept and dropped, with thumbnails")
    p.add_argument("out", metavar="OUT", help="the OUT of an earlier `capcrawl shards` or `capcrawl run`")
    p.add_argument("--work", help="the run's WORK (default: the one recorded in OUT/manifest.json, if it still exists)")

    p = sub.add_parser("demo", help="build a demo site on loopback and run the whole pipeline on it, offline")
    p.add_argument("--dir", default="capcrawl-demo", help="where the demo writes (default %(default)s)")
    p.add_argument("--model-cache", help="where the tiny model is trained/cached (default DIR/model)")
    return parser


# --- commands ------------------------------------------------------------------------


def _crawl_config(args: argparse.Namespace) -> CrawlConfig:
    return from_namespace(CrawlConfig, args, progress=not args.quiet)


def cmd_crawl(args: argparse.Namespace) -> int:
    import crawler

    cfg = _crawl_config(args)
    if cfg.worker_processes:
        from .cluster import run_workers

        code, stats = run_workers(cfg, args.argv)
        print_crawl_summary(stats, cfg.crawl_dir)
        return code
    if cfg.executor == "ray":
        from .ray_executor import download

        stats = download(cfg, _scrapy_log_level(args))
    else:
        stats = crawler.run(cfg, _scrapy_log_level(args))
    print_crawl_summary(stats, cfg.crawl_dir)
    if stats.get("failed_shards"):
        n = len(stats["failed_shards"])
        print(f"capcrawl: {n} input shard{'s' if n > 1 else ''} failed on every try (see the log above); "
              "run the same command again to retry.", file=sys.stderr)
        return 1
    return _interrupted(stats)


cmd_download = cmd_crawl


def cmd_filter(args: argparse.Namespace) -> int:
    import filter as clip_filter

    config = from_namespace(_filter_config_class(), args)
    if config.executor == "ray":
        from .ray_executor import filter_parts

        print_filter_summary(filter_parts(config))
    else:
        print_filter_summary(clip_filter.run(config))
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    import shards

    config = from_namespace(ShardsConfig, args)
    print_shards_summary(shards.run(config), config.out)
    _refresh_report(config.out)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import INTERRUPTED, run_pipeline

    crawl_cfg = _crawl_config(args)
    shards_cfg = from_namespace(ShardsConfig, args)
    filter_cfg = None if args.no_filter else from_namespace(_filter_config_class(), args)
    result = run_pipeline(crawl_cfg, filter_cfg, shards_cfg, log_level=_scrapy_log_level(args))
    if result.code == INTERRUPTED:
        _say_interrupted()
    return result.code


def cmd_remove(args: argparse.Namespace) -> int:
    import shards

    config = from_namespace(RemoveConfig, args)
    print_removal_summary(shards.remove(config))
    _refresh_report(config.out)  # a report must not keep showing what was taken down
    return 0


def _refresh_report(out: Path) -> None:
    """Rewrite OUT's report when it has one, so that it describes OUT as it is now."""
    from .report import refresh_report

    path = refresh_report(out)
    if path is not None:
        print(f"report: {path}")


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    print(f"report: {write_report(args.out, args.work)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.dir), quiet=args.quiet, model_cache=Path(args.model_cache) if args.model_cache else None)


def _interrupted(stats: dict) -> int:
    """130 (and a note) when the crawl was stopped by Ctrl-C or a signal, else 0."""
    from .pipeline import INTERRUPTED, crawl_interrupted

    if crawl_interrupted(stats):
        _say_interrupted()
        return INTERRUPTED
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "crawl": cmd_crawl,
    "download": cmd_download,
    "filter": cmd_filter,
    "shards": cmd_shards,
    "run": cmd_run,
    "remove": cmd_remove,
    "report": cmd_report,
    "demo": cmd_demo,
}


def _log_level(args: argparse.Namespace) -> int:
    """-v count to a logging level: WARNING, INFO (-v), DEBUG (-vv)."""
    return {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)


def _scrapy_log_level(args: argparse.Namespace) -> str:
    """The same level by name, for Scrapy's LOG_LEVEL and its loggers."""
    return logging.getLevelName(_log_level(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # `crawl --workers N` starts N copies of this command line
    level = _log_level(args)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.root.handlers:
        handler.setLevel(level)
    if args.command in IMAGE_COMMANDS and not getattr(args, "worker_processes", 0):
        from crawler.workers import start_worker_server

        start_worker_server()
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"capcrawl: error: {e}", file=sys.stderr)
        return 2
    except FrontierError as e:
        print(f"capcrawl: error: {e}", file=sys.stderr)
        return EXIT_FRONTIER_LOST
    except KeyboardInterrupt:
        _say_interrupted()
        return 130


def run() -> None:
    """The ``capcrawl`` command: :func:`main`, then a quicker interpreter exit.

    CPython's exit tears down every module and runs several full garbage collections over
    what is left; after a crawl (a thousand modules: Scrapy, Twisted, aiohttp, pyarrow) that
    took ~0.1 s. Collecting once here and then freezing the survivors (``gc.freeze``) leaves
    those passes nothing to walk. Threads are still joined, atexit handlers run (logging
    flushes there) and objects are released as their modules go, but an object that is part
    of a reference cycle and still alive now is never finalized: every writer must be closed
    before :func:`main` returns, as capcrawl's all are (Python does not promise ``__del__`` at
    exit either). In-process callers (the tests) use :func:`main` and are not affected.
    """
    # SIGTERM (a scheduler, `kill`) stops a command as Ctrl-C does: temporary files removed, exit
    # 130 (the crawl installs Scrapy's own handlers for both while it runs).
    INTERRUPTS.install()
    code = main()
    for sig in (signal.SIGINT, signal.SIGTERM):  # the work is done or stopped: exit as it is
        signal.signal(sig, signal.SIG_IGN)
    if INTERRUPTS.count and code == 0:
        # The interrupt reached a callback that swallows exceptions (Python prints "Exception
        # ignored"): what ran may have missed a step; a rerun finishes it.
        _say_interrupted()
        code = 130
    gc.collect()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
