"""The ``capcrawl`` command line: a thin layer that validates options and calls each stage's entry function."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from .config import LIST_FORMATS, CrawlConfig
from .http import HTTP_CLIENTS
from .imageproc import IMAGE_FORMATS, RESAMPLE_FILTERS, RESIZE_MODES
from .records import ConfigError
from .workers import IMAGE_COMMANDS

log = logging.getLogger("capcrawl")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _size(text: str) -> int:
    """Bytes from '20MB', '512k', '1000'."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 20MB)") from None


def add_crawl_arguments(p: argparse.ArgumentParser, crawl: bool = True) -> None:
    """Options shared by crawl, download and run."""
    d = CrawlConfig(work="")
    g = p.add_argument_group("crawl")
    if crawl:
        g.add_argument("--max-pages", type=int, default=d.max_pages, help="pages to fetch at most (default %(default)s)")
        g.add_argument("--max-depth", type=int, default=d.max_depth, help="link depth from the seeds (default %(default)s)")
        g.add_argument("--allow-domain", action="append", default=[], metavar="D",
                       help="also follow links to D and its subdomains (repeatable); default scope: the seeds' hosts")
    g.add_argument("--user-agent", default=d.user_agent, help="names capcrawl and a contact URL by default")
    g.add_argument("--concurrency", type=int, default=d.concurrency, help="requests in flight (default %(default)s)")
    g.add_argument("--per-host-concurrency", type=int, default=d.per_host_concurrency, help="per host (default %(default)s)")
    g.add_argument("--timeout", type=float, default=d.timeout, help="seconds per download (default %(default)s)")
    g.add_argument("--deadline", type=float, default=d.deadline, help="stop the run after this many seconds (0: none)")
    g.add_argument("--retries", type=int, default=d.retries, help="retries for 5xx, 429 and timeouts (default %(default)s)")
    g.add_argument("--allow-private-addresses", action="store_true",
                   help="allow hosts on private, loopback or link-local addresses (off: refused, status private_address)")
    g.add_argument("--ignore-robots", action="store_true", help="do NOT obey robots.txt (only for sites you own)")
    g.add_argument("--no-autothrottle", dest="autothrottle", action="store_false", help="switch AutoThrottle off")
    g.add_argument("--http-client", choices=HTTP_CLIENTS, default=d.http_client,
                   help="aiohttp on asyncio (default, less CPU) or Twisted's HTTP/1.1 client")
    i = p.add_argument_group("images")
    i.add_argument("--image-size", type=int, default=d.image_size, help="target size in pixels (default %(default)s)")
    i.add_argument("--resize-mode", choices=RESIZE_MODES, default=d.resize_mode)
    i.add_argument("--resize-only-if-bigger", action="store_true", help="never upscale")
    i.add_argument("--resample", choices=RESAMPLE_FILTERS, default=d.resample,
                   help="area: pixel averaging when shrinking (as img2dataset), Lanczos when enlarging (default)")
    i.add_argument("--image-format", choices=tuple(IMAGE_FORMATS), default=d.image_format)
    i.add_argument("--quality", type=int, default=d.quality, help="JPEG/WebP quality (default %(default)s)")
    i.add_argument("--min-image-size", type=int, default=d.min_image_size, help="smaller sides are too_small")
    i.add_argument("--max-image-bytes", type=_size, default=d.max_image_bytes, help="cut larger bodies while streaming (default 20MB)")
    i.add_argument("--max-pixels", type=int, default=d.max_pixels, help="more pixels is a decompression_bomb")
    i.add_argument("--image-workers", type=int, default=0, help="image worker processes (default: one per core)")
    i.add_argument("--part-rows", type=int, default=d.part_rows, help="rows per crawl part (default %(default)s)")


def crawl_config_from_args(args: argparse.Namespace, seeds: list[str] | None = None, url_list: str | None = None) -> CrawlConfig:
    cfg = CrawlConfig(
        work=args.work,
        seeds=seeds or [],
        url_list=url_list,
        input_format=getattr(args, "input_format", None),
        url_col=getattr(args, "url_col", "url"),
        caption_col=getattr(args, "caption_col", None),
        max_pages=getattr(args, "max_pages", CrawlConfig.max_pages),
        max_depth=getattr(args, "max_depth", CrawlConfig.max_depth),
        allow_domains=getattr(args, "allow_domain", []),
        user_agent=args.user_agent,
        concurrency=args.concurrency,
        per_host_concurrency=args.per_host_concurrency,
        timeout=args.timeout,
        deadline=args.deadline,
        retries=args.retries,
        allow_private_addresses=args.allow_private_addresses,
        ignore_robots=args.ignore_robots,
        autothrottle=args.autothrottle,
        http_client=args.http_client,
        image_size=args.image_size,
        resize_mode=args.resize_mode,
        resize_only_if_bigger=args.resize_only_if_bigger,
        resample=args.resample,
        image_format=args.image_format,
        quality=args.quality,
        min_image_size=args.min_image_size,
        max_image_bytes=args.max_image_bytes,
        max_pixels=args.max_pixels,
        workers=args.image_workers,
        part_rows=args.part_rows,
        progress=not getattr(args, "quiet", False),
    )
    cfg.validate()
    if cfg.url_list:
        from .urllist import validate_list

        validate_list(cfg.url_list, cfg.input_format, cfg.url_col, cfg.caption_col)
    return cfg


def _add_filter(p: argparse.ArgumentParser) -> None:
    from filter.cli import add_filter_arguments

    add_filter_arguments(p.add_argument_group("filter (CLIP)"))


def _add_shards(p: argparse.ArgumentParser) -> None:
    from shards.cli import add_shards_arguments

    add_shards_arguments(p.add_argument_group("shards"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="capcrawl", description="Crawl the web politely into CLIP-filtered, deduplicated image-caption shards.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for Scrapy's debug log)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("crawl", help="crawl seed pages and collect every image with its text")
    p.add_argument("seeds", nargs="+", metavar="SEED", help="URL, or a text file of URLs (one a line, # comments)")
    p.add_argument("--work", required=True, help="work directory (records go to WORK/crawl)")
    add_crawl_arguments(p)

    p = sub.add_parser("download", help="download a URL list (txt/csv/tsv/parquet/jsonl), img2dataset-style")
    p.add_argument("url_list", metavar="URL_LIST")
    p.add_argument("--work", required=True)
    p.add_argument("--input-format", choices=LIST_FORMATS, help="default: from the file extension")
    p.add_argument("--url-col", default="url", help="URL column for csv/tsv/parquet/jsonl (default %(default)s)")
    p.add_argument("--caption-col", help="caption column, kept as caption_in")
    add_crawl_arguments(p, crawl=False)

    p = sub.add_parser("filter", help="score image/text pairs with CLIP, fill missing captions")
    p.add_argument("--work", required=True)
    _add_filter(p)

    p = sub.add_parser("shards", help="deduplicate and write WebDataset shards")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    _add_shards(p)

    p = sub.add_parser("run", help="crawl, filter and write shards in one go (resumable)")
    p.add_argument("seeds", nargs="+", metavar="SEED")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    add_crawl_arguments(p)
    _add_filter(p)
    _add_shards(p)

    p = sub.add_parser("remove", help="apply a takedown list to existing shards")
    p.add_argument("out", metavar="OUT")
    from shards.cli import add_remove_arguments

    add_remove_arguments(p)

    p = sub.add_parser("demo", help="build a demo site on loopback and run the whole pipeline on it, offline")
    p.add_argument("--dir", default="capcrawl-demo", help="where the demo writes (default %(default)s)")
    p.add_argument("--model-cache", help="where the tiny model is trained/cached (default DIR/model)")
    return parser


# --- commands ------------------------------------------------------------------------


def cmd_crawl(args: argparse.Namespace) -> int:
    from .stage import run_crawl

    cfg = crawl_config_from_args(args, seeds=args.seeds)
    stats = run_crawl(cfg, _scrapy_log_level(args))
    print_crawl_summary(stats, Path(cfg.work) / "crawl")
    return _interrupted(stats)


def cmd_download(args: argparse.Namespace) -> int:
    from .stage import run_crawl

    cfg = crawl_config_from_args(args, url_list=args.url_list)
    stats = run_crawl(cfg, _scrapy_log_level(args))
    print_crawl_summary(stats, Path(cfg.work) / "crawl")
    return _interrupted(stats)


def cmd_filter(args: argparse.Namespace) -> int:
    from filter.cli import filter_config_from_args
    from filter.stage import run_filter

    print_filter_summary(run_filter(filter_config_from_args(args, work=args.work)))
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from shards import run_shards
    from shards.cli import shards_config_from_args

    print_shards_summary(run_shards(shards_config_from_args(args, work=args.work, out=args.out)), Path(args.out))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from shards import run_shards
    from shards.cli import shards_config_from_args

    from .stage import run_crawl

    crawl_cfg = crawl_config_from_args(args, seeds=args.seeds)
    shards_cfg = shards_config_from_args(args, work=args.work, out=args.out, require_inputs=False)
    filter_cfg = None
    if not args.no_filter:
        # Every stage's options, the model's weights included, are checked before the crawl starts.
        from filter.cli import filter_config_from_args
        from filter.model import resolve_checkpoint, resolve_model_name

        Path(args.work).mkdir(parents=True, exist_ok=True)
        filter_cfg = filter_config_from_args(args, work=args.work)
        resolve_checkpoint(resolve_model_name(filter_cfg.model), filter_cfg.pretrained, filter_cfg.model_cache_dir)
    stats = run_crawl(crawl_cfg, _scrapy_log_level(args))
    print_crawl_summary(stats, Path(crawl_cfg.work) / "crawl")
    if _interrupted(stats):
        return 130  # the later stages wait for a complete crawl: rerun to resume
    if filter_cfg is not None:
        from filter.stage import run_filter

        print_filter_summary(run_filter(filter_cfg))
    print_shards_summary(run_shards(shards_cfg), Path(args.out))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from shards import run_remove
    from shards.cli import remove_config_from_args

    manifest = run_remove(remove_config_from_args(args, out=args.out))
    last = (manifest.get("removals") or [{}])[-1]
    _print_table("remove", {k: v for k, v in last.items() if k != "shards_rewritten"})
    print(f"  shards rewritten: {', '.join(last.get('shards_rewritten', [])) or 'none'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.dir), quiet=args.quiet, model_cache=Path(args.model_cache) if args.model_cache else None)


def _interrupted(stats: dict[str, Any]) -> int:
    """130 (and a note) when the crawl was stopped by Ctrl-C or a signal, else 0."""
    if stats.get("finish_reason") == "shutdown":
        print("capcrawl: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "crawl": cmd_crawl,
    "download": cmd_download,
    "filter": cmd_filter,
    "shards": cmd_shards,
    "run": cmd_run,
    "remove": cmd_remove,
    "demo": cmd_demo,
}


def _log_level(args: argparse.Namespace) -> int:
    """-v count to a logging level: WARNING, INFO (-v), DEBUG (-vv)."""
    return {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)


def _scrapy_log_level(args: argparse.Namespace) -> str:
    """The same level by name, for Scrapy's LOG_LEVEL and its loggers."""
    return logging.getLevelName(_log_level(args))


def _print_table(title: str, stats: dict[str, Any]) -> None:
    print(f"\n== {title} ==")
    for key, value in _flatten(stats):
        print(f"  {key:<40} {value}")


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.extend(_flatten(v, f"{prefix}{k}/"))
        elif not isinstance(v, list):
            out.append((prefix + str(k), v))
    return out


def print_filter_summary(stats: dict[str, Any]) -> None:
    _print_table("filter", {k: v for k, v in stats.items() if k not in ("this_run", "schema_version")})


def print_shards_summary(manifest: dict[str, Any], out: Path) -> None:
    run = (manifest.get("runs") or [{}])[-1]
    _print_table(f"shards: {out}", run.get("stages", {}).get("shards", {}))
    shards = manifest.get("shards", [])
    print(f"  {'shards in OUT':<40} {len(shards)}")
    if run.get("dedup_log"):
        print(f"  {'dedup log':<40} {out / run['dedup_log']}")


def print_crawl_summary(stats: dict[str, Any], where: Path) -> None:
    images: dict[str, int] = stats.get("images", {})
    pages: dict[str, int] = stats.get("pages", {})
    print(f"\n== crawl: {where} ==")
    print(f"  {'images':<24} {sum(images.values()):>8}")
    for k, v in sorted(images.items(), key=lambda kv: (kv[0] != "ok", -kv[1])):
        print(f"    {k:<22} {v:>8}")
    if pages:
        print(f"  {'pages':<24} {sum(pages.values()):>8}")
        for k, v in sorted(pages.items(), key=lambda kv: (kv[0] != "ok", -kv[1])):
            print(f"    {k:<22} {v:>8}")
    for k, v in stats.get("skipped", {}).items():
        if v:
            print(f"  skipped {k:<16} {v:>8}")
    if stats.get("pending"):
        print(f"  {'pending (rerun resumes)':<24} {stats['pending']:>8}")
    if not images.get("ok"):
        print("  no image was fetched: the counts above say why.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = _log_level(args)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.root.handlers:
        handler.setLevel(level)
    if args.command in IMAGE_COMMANDS:
        from .workers import start_worker_server

        start_worker_server()
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"capcrawl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("capcrawl: interrupted; run the same command again to resume.", file=sys.stderr)
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
    code = main()
    gc.collect()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
