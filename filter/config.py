"""The filter stage's validated configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from crawler.records import CRAWL_DIR, SCORED_DIR

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
#: LAION-5B's English cut-off for ViT-B/32 (cosine). Model-specific: other models need their own.
DEFAULT_THRESHOLD = 0.28
DEFAULT_LABEL_TEMPLATE = "a photo of {}."
DEFAULT_BATCH_SIZE = 256
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
GENERATE_MODES = ("auto", "yes", "no")


@dataclass(frozen=True)
class FilterConfig:
    """Everything :func:`filter.stage.run_filter` needs; build it with ``filter_config_from_args``."""

    work: Path
    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = 2
    threshold: float = DEFAULT_THRESHOLD
    fill_threshold: float | None = None  # None: same as threshold
    label_bank: tuple[str, ...] = field(default_factory=tuple)  # phrases, already read from --label-bank
    label_template: str = DEFAULT_LABEL_TEMPLATE
    embeddings: bool = True
    generate: str = "auto"  # CoCa captions: auto = on for CoCa models
    shard_index: int = 0
    num_shards: int = 1
    model_cache_dir: str | None = None  # where pretrained tags are downloaded/cached

    @property
    def effective_fill_threshold(self) -> float:
        return self.threshold if self.fill_threshold is None else self.fill_threshold

    @property
    def crawl_dir(self) -> Path:
        return Path(self.work) / CRAWL_DIR

    @property
    def scored_dir(self) -> Path:
        return Path(self.work) / SCORED_DIR
