"""Options of ``capcrawl shards`` and ``capcrawl remove``, validated once at start-up."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crawler.records import CRAWL_DIR, SCORED_DIR, ConfigError, emb_name, list_parts
from shards.near_index import MAX_DISTANCE, validate_distance
from shards.semantic import validate_threshold
from shards.writer import MAX_SAMPLES_PER_SHARD

DEFAULT_SAMPLES_PER_SHARD = MAX_SAMPLES_PER_SHARD
DEFAULT_NEAR_DUP_DISTANCE = 4


def _check_distance(distance: int) -> None:
    try:
        validate_distance(distance)
    except ValueError as e:
        raise ConfigError(f"--near-dup-distance must be an integer from 0 to {MAX_DISTANCE} (pHash bits), got {distance!r}.") from e


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"The output {out} exists and is not a directory; pass a directory for OUT.")


@dataclass(frozen=True)
class ShardsConfig:
    """What ``run_shards`` needs; build it with :func:`shards.cli.shards_config_from_args` or directly."""

    work: Path
    out: Path
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD
    near_dup_distance: int = DEFAULT_NEAR_DUP_DISTANCE
    semantic_dedup: float | None = None
    no_filter: bool = False
    max_shard_bytes: int | None = None  # optional size-based rollover (API only)

    def __post_init__(self) -> None:
        object.__setattr__(self, "work", Path(self.work))
        object.__setattr__(self, "out", Path(self.out))

    @property
    def input_dir(self) -> Path:
        return self.work / (CRAWL_DIR if self.no_filter else SCORED_DIR)

    def validate(self, require_inputs: bool = True) -> "ShardsConfig":
        """Raise ConfigError with one actionable sentence if anything is off; return self.

        ``require_inputs=False`` checks the options only (``capcrawl run`` validates before
        the earlier stages have written anything).
        """
        if isinstance(self.samples_per_shard, bool) or not isinstance(self.samples_per_shard, int) or not 1 <= self.samples_per_shard <= MAX_SAMPLES_PER_SHARD:
            raise ConfigError(
                f"--samples-per-shard must be an integer from 1 to {MAX_SAMPLES_PER_SHARD} (keys hold the index in 4 digits), got {self.samples_per_shard!r}."
            )
        _check_distance(self.near_dup_distance)
        if self.max_shard_bytes is not None and self.max_shard_bytes <= 0:
            raise ConfigError(f"max_shard_bytes must be positive, got {self.max_shard_bytes}.")
        if self.semantic_dedup is not None:
            self._check_semantic()
        _check_out(self.out)
        if require_inputs and not list_parts(self.input_dir):
            hint = "run `capcrawl crawl` first" if self.no_filter else "run `capcrawl filter` first, or pass --no-filter to shard crawl parts directly"
            raise ConfigError(f"No parts found in {self.input_dir}; {hint}.")
        return self

    def _check_semantic(self) -> None:
        try:
            validate_threshold(self.semantic_dedup)  # type: ignore[arg-type]
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--semantic-dedup must be a cosine similarity in (0, 1], such as 0.95, got {self.semantic_dedup!r}.") from e
        if self.no_filter:
            raise ConfigError("--semantic-dedup needs the filter's image embeddings; drop --no-filter or --semantic-dedup.")
        missing = [p.name for p in list_parts(self.input_dir) if not (p.parent / emb_name(p)).is_file()]
        if missing:
            raise ConfigError(
                f"--semantic-dedup needs image embeddings but {missing[0]} has no {emb_name(missing[0])}; re-run the filter without --no-embeddings or drop --semantic-dedup."
            )

    def options(self) -> dict[str, Any]:
        """The options as JSON-ready values, for the manifest."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class RemoveConfig:
    """What ``run_remove`` needs."""

    out: Path
    takedown: Path
    near_dup_distance: int = DEFAULT_NEAR_DUP_DISTANCE

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "takedown", Path(self.takedown))

    def validate(self) -> "RemoveConfig":
        _check_distance(self.near_dup_distance)
        if not self.out.is_dir():
            raise ConfigError(f"The output directory {self.out} does not exist; pass the OUT of an earlier `capcrawl shards`.")
        if not self.takedown.is_file():
            raise ConfigError(f"The takedown file {self.takedown} does not exist; pass a text file with one URL, domain:, sha256: or image path per line.")
        from shards.blocklist import parse_takedown  # validates every line

        parse_takedown(self.takedown, self.near_dup_distance)
        return self
