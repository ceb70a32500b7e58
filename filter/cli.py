"""Command-line options of ``capcrawl filter``: added to the CLI's parser, validated into a FilterConfig."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from crawler.records import ConfigError
from filter.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LABEL_TEMPLATE,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    DEFAULT_THRESHOLD,
    GENERATE_MODES,
    PRECISIONS,
    FilterConfig,
)


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the filter stage's own options (not ``--work``) to ``parser``."""
    g = parser.add_argument_group("filter (CLIP scoring)")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"open_clip architecture name, or a path to a model-config JSON (default {DEFAULT_MODEL})")
    g.add_argument("--pretrained", default=DEFAULT_PRETRAINED,
                   help="open_clip pretrained tag, a local checkpoint file, or 'none' for random weights "
                        f"(default {DEFAULT_PRETRAINED}); offline, pass a checkpoint file")
    g.add_argument("--model-cache-dir", default=None,
                   help="where pretrained tags are downloaded and looked up (default: the Hugging Face cache)")
    g.add_argument("--device", default="auto", help="auto (cuda when available), cpu, or cuda[:N] (default auto)")
    g.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto = fp16 autocast on CUDA, fp32 on CPU (default auto)")
    g.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"images per model batch (default {DEFAULT_BATCH_SIZE})")
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader worker processes decoding images (0 = in the main process)")
    g.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"keep a row when its caption's CLIP cosine is at least this (default {DEFAULT_THRESHOLD}, "
                        "LAION-5B's English value for ViT-B/32; the value is model-specific)")
    g.add_argument("--fill-threshold", type=float, default=None,
                   help="a replacement caption must score at least this to be used (default: --threshold)")
    g.add_argument("--label-bank", default=None,
                   help="file of candidate phrases, one per line, tried for images whose alt fails")
    g.add_argument("--label-template", default=DEFAULT_LABEL_TEMPLATE,
                   help=f"how a label-bank phrase is turned into a caption; {{}} is the phrase "
                        f"(default {DEFAULT_LABEL_TEMPLATE!r})")
    g.add_argument("--generate", default="auto", choices=GENERATE_MODES,
                   help="CoCa generated captions as candidates: auto = on for CoCa models "
                        "(needs the capcrawl[coca] extra, transformers<4.57)")
    g.add_argument("--no-embeddings", action="store_true", help="do not write emb-NNNNN.npy image embeddings")
    g.add_argument("--shard-index", type=int, default=0,
                   help="this machine's index among --num-shards; it scores parts whose number %% N == index")
    g.add_argument("--num-shards", type=int, default=1, help="machines sharing the parts (default 1)")


def _read_label_bank(path: str | None) -> tuple[str, ...]:
    if path is None:
        return ()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read --label-bank {path}; pass a UTF-8 text file with one phrase per line") from e
    phrases = tuple(dict.fromkeys(p.strip() for p in lines if p.strip() and not p.lstrip().startswith("#")))
    if not phrases:
        raise ConfigError(f"--label-bank {path} has no phrases; put one phrase per line")
    return phrases


def _check_range(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise ConfigError(f"{name} {value} is outside [{low}, {high}]; pass a cosine similarity in that range")


def filter_config_from_args(args: argparse.Namespace, work: str) -> FilterConfig:
    """Validate the parsed options into a FilterConfig (ConfigError with one actionable sentence)."""
    _check_range("--threshold", args.threshold, -1.0, 1.0)
    _check_range("--fill-threshold", args.fill_threshold, -1.0, 1.0)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be at least 1")
    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers} must be 0 (decode in the main process) or more")
    if args.num_shards < 1 or not 0 <= args.shard_index < args.num_shards:
        raise ConfigError(
            f"--shard-index {args.shard_index} must be in [0, --num-shards) with --num-shards >= 1 "
            f"(got --num-shards {args.num_shards})"
        )
    if "{}" not in args.label_template:
        raise ConfigError(f"--label-template {args.label_template!r} needs a {{}} where the phrase goes")
    if args.model.endswith(".json") and not Path(args.model).is_file():
        raise ConfigError(f"--model {args.model} does not exist; pass an open_clip model name or a config JSON file")
    from filter.model import autocast_dtype, resolve_device  # torch is imported only when filtering

    autocast_dtype(args.precision, resolve_device(args.device))
    if not Path(work).is_dir():
        raise ConfigError(f"work directory {work} does not exist; run capcrawl crawl first or pass the right --work")
    return FilterConfig(
        work=Path(work),
        model=args.model,
        pretrained=args.pretrained,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        workers=args.workers,
        threshold=args.threshold,
        fill_threshold=args.fill_threshold,
        label_bank=_read_label_bank(args.label_bank),
        label_template=args.label_template,
        embeddings=not args.no_embeddings,
        generate=args.generate,
        shard_index=args.shard_index,
        num_shards=args.num_shards,
        model_cache_dir=args.model_cache_dir,
    )
