"""Argument parsing for ``capcrawl shards`` and ``capcrawl remove`` (the CLI itself lives elsewhere)."""

from __future__ import annotations

import argparse

from shards.config import DEFAULT_NEAR_DUP_DISTANCE, DEFAULT_SAMPLES_PER_SHARD, RemoveConfig, ShardsConfig
from shards.near_index import MAX_DISTANCE


def _add_distance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--near-dup-distance",
        type=int,
        default=DEFAULT_NEAR_DUP_DISTANCE,
        metavar="BITS",
        help=f"pHash Hamming distance at or under which two images are near duplicates (0..{MAX_DISTANCE}, default %(default)s)",
    )


def add_shards_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``capcrawl shards`` (WORK and OUT are added by the caller)."""
    parser.add_argument(
        "--samples-per-shard",
        type=int,
        default=DEFAULT_SAMPLES_PER_SHARD,
        metavar="N",
        help="samples per tar shard, at most 10000 (default %(default)s)",
    )
    _add_distance(parser)
    parser.add_argument(
        "--semantic-dedup",
        type=float,
        default=None,
        metavar="T",
        help="also drop images whose embedding cosine similarity to a kept one is >= T (e.g. 0.95); needs the filter's embeddings",
    )
    parser.add_argument(
        "--no-filter",
        action="store_true",
        help="shard the crawl parts directly (trusted URL-list captions: alt, else caption_in), skipping the CLIP filter",
    )


def shards_config_from_args(args: argparse.Namespace, work: str, out: str, require_inputs: bool = True) -> ShardsConfig:
    """Build and validate the shards options; raises ConfigError."""
    return ShardsConfig(
        work=work,
        out=out,
        samples_per_shard=args.samples_per_shard,
        near_dup_distance=args.near_dup_distance,
        semantic_dedup=args.semantic_dedup,
        no_filter=bool(args.no_filter),
    ).validate(require_inputs=require_inputs)


def add_remove_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``capcrawl remove`` (OUT is added by the caller)."""
    parser.add_argument(
        "--takedown",
        required=True,
        metavar="FILE",
        help="file with one entry per line: image or page URL, domain:HOST, sha256:HEX, phash:HEX or a local image path",
    )
    _add_distance(parser)


def remove_config_from_args(args: argparse.Namespace, out: str) -> RemoveConfig:
    """Build and validate the remove options; raises ConfigError."""
    return RemoveConfig(out=out, takedown=args.takedown, near_dup_distance=args.near_dup_distance).validate()
