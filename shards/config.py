"""Options of ``capcrawl shards`` and ``capcrawl remove``: declared once, validated on construction."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.layout import CRAWL_DIR, DONE_FILE, SCORED_DIR, STATS_FILE, emb_name, list_parts
from common.options import check_fields, describe, option, optional, parse_list, positive, replace_frozen
from shards.near_index import MAX_DISTANCE, validate_distance
from shards.semantic import validate_threshold
from shards.writer import MAX_SAMPLES_PER_SHARD

DEFAULT_SAMPLES_PER_SHARD = MAX_SAMPLES_PER_SHARD
DEFAULT_NEAR_DUP_DISTANCE = 4


def _distance(value: Any) -> str | None:
    try:
        validate_distance(value)
    except ValueError:
        return f"must be an integer from 0 to {MAX_DISTANCE} (pHash bits)"
    return None


def _samples_per_shard(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SAMPLES_PER_SHARD
    return None if ok else f"must be an integer from 1 to {MAX_SAMPLES_PER_SHARD} (keys hold the index in 4 digits)"


def _cosine(value: Any) -> str | None:
    try:
        validate_threshold(value)
    except (TypeError, ValueError):
        return "must be a cosine similarity in (0, 1], such as 0.95"
    return None


def _policy_list(text: str) -> tuple[str, ...]:
    """``--licenses``: a list that names at least one licence (an empty one is a mistake, not "no policy")."""
    entries = parse_list(text)
    if not entries:
        raise argparse.ArgumentTypeError(f"no licence id, pattern or preset in {text!r}; leave --licenses out for no policy")
    return entries


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"The output {out} exists and is not a directory; pass a directory for OUT.")


_DISTANCE_HELP = f"pHash Hamming distance at or under which two images are near duplicates (0..{MAX_DISTANCE}, default %(default)s)"


@dataclass(frozen=True)
class ShardsConfig:
    """What the shards stage needs; invalid values raise ConfigError when it is built."""

    work: Path = option(flag="--work", help="work directory holding scored/ (or crawl/ with --no-filter)", required=True)
    out: Path = option(flag="--out", help="output directory of the shards", required=True)
    samples_per_shard: int = option(DEFAULT_SAMPLES_PER_SHARD, "--samples-per-shard", "samples per tar shard, at most "
                                    "10000 (default %(default)s)", check=_samples_per_shard, metavar="N")
    near_dup_distance: int = option(DEFAULT_NEAR_DUP_DISTANCE, "--near-dup-distance", _DISTANCE_HELP, check=_distance,
                                    metavar="BITS")
    semantic_dedup: float | None = option(None, "--semantic-dedup", "also drop images whose embedding cosine similarity "
                                          "to a kept one is >= T (e.g. 0.95); needs the filter's embeddings",
                                          check=optional(_cosine), metavar="T")
    no_filter: bool = option(False, "--no-filter", "shard the crawl parts directly (trusted URL-list captions: alt, "
                             "else caption_in), skipping the CLIP filter", action="store_true")
    faces: str = option("blur", "--faces", "faces the filter found: blur them in the written image (default), drop "
                        "such samples (counted as faces), or keep them untouched; every sample records what was done "
                        "(face_action)", choices=("blur", "drop", "keep"))
    licenses: tuple[str, ...] = option((), "--licenses", "write only samples under these licences: SPDX ids, patterns "
                                       "(CC-BY-SA-*) or presets (open, commercial), comma-separated; a sample with an "
                                       "unknown licence is left out too (default: no policy)", parse=_policy_list,
                                       metavar="ID[,ID...]")
    site_chrome: bool = option(True, "--keep-site-chrome", "with --no-filter: keep navigation icons, logos and images "
                               "repeated across a site's pages (default: dropped as site_chrome)", action="store_false")
    max_shard_bytes: int | None = option(None, hidden=True, help="size-based rollover (API only)", check=optional(positive))

    def __post_init__(self) -> None:
        replace_frozen(self, work=Path(self.work), out=Path(self.out))
        check_fields(self)
        if self.licenses:
            from shards.licenses import LicensePolicy

            try:
                LicensePolicy.parse(self.licenses)
            except ValueError as e:
                raise ConfigError(f"--licenses: {e}.") from e
        if self.semantic_dedup is not None and self.no_filter:
            raise ConfigError("--semantic-dedup needs the filter's image embeddings; drop --no-filter or --semantic-dedup.")
        _check_out(self.out)

    @property
    def license_policy(self) -> "LicensePolicy | None":  # noqa: F821
        from shards.licenses import LicensePolicy

        return LicensePolicy.parse(self.licenses) if self.licenses else None

    @property
    def input_dir(self) -> Path:
        return self.work / (CRAWL_DIR if self.no_filter else SCORED_DIR)

    def check_inputs(self) -> None:
        """Raise ConfigError when the input parts are missing (checked when the stage starts)."""
        if not list_parts(self.input_dir):
            if (self.input_dir / DONE_FILE).is_file():  # the stage before finished, with nothing to hand on
                raise ConfigError(f"No parts in {self.input_dir}: the crawl recorded no image, so there is nothing to "
                                  f"shard (see {self.work / CRAWL_DIR / STATS_FILE}).")
            hint = "run `capcrawl crawl` first" if self.no_filter else "run `capcrawl filter` first, or pass --no-filter to shard crawl parts directly"
            raise ConfigError(f"No parts found in {self.input_dir}; {hint}.")
        if self.semantic_dedup is not None:
            missing = [p.name for p in list_parts(self.input_dir) if not (p.parent / emb_name(p)).is_file()]
            if missing:
                raise ConfigError(
                    f"--semantic-dedup needs image embeddings but {missing[0]} has no {emb_name(missing[0])}; re-run the "
                    "filter without --no-embeddings or drop --semantic-dedup."
                )

    def options(self) -> dict[str, Any]:
        """The options as JSON-ready values, for the manifest."""
        return describe(self)


@dataclass(frozen=True)
class RemoveConfig:
    """What ``capcrawl remove`` needs."""

    out: Path = option(flag="", help="the OUT of an earlier `capcrawl shards`", metavar="OUT")
    takedown: Path = option(flag="--takedown", help="file with one entry per line: image or page URL, domain:HOST, "
                            "sha256:HEX, phash:HEX or a local image path", metavar="FILE", required=True)
    near_dup_distance: int = option(DEFAULT_NEAR_DUP_DISTANCE, "--near-dup-distance", _DISTANCE_HELP, check=_distance,
                                    metavar="BITS")

    def __post_init__(self) -> None:
        replace_frozen(self, out=Path(self.out), takedown=Path(self.takedown))
        check_fields(self)
        if not self.out.is_dir():
            raise ConfigError(f"The output directory {self.out} does not exist; pass the OUT of an earlier `capcrawl shards`.")
        if not self.takedown.is_file():
            raise ConfigError(f"The takedown file {self.takedown} does not exist; pass a text file with one URL, domain:, sha256: or image path per line.")
        from shards.blocklist import parse_takedown  # validates every line

        parse_takedown(self.takedown, self.near_dup_distance)
