"""crawl -> filter -> shards: the one sequence that ``capcrawl run`` and the demo both call."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crawler
import filter as clip_filter
import shards
from crawler.config import CrawlConfig
from filter.config import FilterConfig
from shards.config import ShardsConfig

from .summary import print_crawl_summary, print_filter_summary, print_shards_summary

log = logging.getLogger(__name__)

#: Exit code of a run stopped by Ctrl-C (or the crawl's deadline): rerun to resume.
INTERRUPTED = 130


@dataclass
class PipelineResult:
    """What each stage returned (None for a stage that did not run) and the exit code."""

    crawl: dict[str, Any]
    filter: dict[str, Any] | None
    manifest: dict[str, Any] | None
    code: int
    report: Path | None = None  # OUT/report/index.html


def check_model(config: FilterConfig) -> None:
    """Fail now, before anything is crawled, when the model's weights cannot be had."""
    from filter.model import resolve_checkpoint, resolve_model_name

    resolve_checkpoint(resolve_model_name(config.model, config.model_cache_dir), config.pretrained, config.model_cache_dir)


def with_out_blocklist(config: CrawlConfig, out: Path) -> CrawlConfig:
    """The crawl config, applying OUT's takedown blocklist unless the user named one."""
    from common.blocklist import BLOCKLIST_FILE

    path = out / BLOCKLIST_FILE
    if config.blocklist is None and path.is_file():
        return config.replace(blocklist=str(path))
    return config


def crawl_interrupted(stats: dict[str, Any]) -> bool:
    """The crawl was stopped by Ctrl-C or a signal (a rerun resumes it)."""
    return stats.get("finish_reason") == "shutdown"


def run_pipeline(
    crawl_config: CrawlConfig,
    filter_config: FilterConfig | None,
    shards_config: ShardsConfig,
    *,
    log_level: str = "WARNING",
    quiet: bool = False,
) -> PipelineResult:
    """Crawl, filter (unless ``filter_config`` is None: ``--no-filter``) and write shards.

    Every stage's options, the model's weights included, were checked when the configs were
    built and by :func:`check_model`; the later stages wait for a complete crawl.
    """
    if filter_config is not None:
        check_model(filter_config)
    crawl_config = with_out_blocklist(crawl_config, Path(shards_config.out))
    stats = crawler.run(crawl_config, log_level)
    if not quiet:
        print_crawl_summary(stats, crawl_config.crawl_dir)
    if crawl_interrupted(stats):
        return PipelineResult(stats, None, None, INTERRUPTED)
    fstats = None
    if filter_config is not None:
        fstats = clip_filter.run(filter_config)
        if not quiet:
            print_filter_summary(fstats)
    manifest = shards.run(shards_config)
    if not quiet:
        print_shards_summary(manifest, Path(shards_config.out))
    from .report import write_report

    report = write_report(shards_config.out, shards_config.work)
    print(f"\nreport: {report}")
    return PipelineResult(stats, fstats, manifest, 0, report)
