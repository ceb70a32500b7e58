"""Synthetic scored/crawl parts with real images, hashes and embeddings, for tests and benchmarks."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import atomic_write_bytes, atomic_write_parquet
from common.layout import CRAWL_DIR, SCORED_DIR, emb_name, part_name
from common.phash import perceptual_hash
from common.records import CRAWL_SCHEMA, SCORED_SCHEMA, Status, table_from_rows

_PIL_FORMAT = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
FETCHED_AT = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def make_image(seed: int, size: int = 64) -> "PIL.Image.Image":  # noqa: F821
    """A smooth random image: an upscaled 6x6 colour grid, so distinct seeds get distant pHashes."""
    from PIL import Image

    grid = np.random.default_rng(seed).integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(grid, "RGB").resize((size, size), Image.Resampling.BICUBIC)


def encode(image: "PIL.Image.Image", fmt: str = "jpg", quality: int = 90) -> bytes:  # noqa: F821
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt in ("jpg", "webp") else {}
    image.save(buf, format=_PIL_FORMAT[fmt], **kwargs)
    return buf.getvalue()


def image_record(data: bytes, url: str, fmt: str = "jpg", **fields: Any) -> dict[str, Any]:
    """An ok scored record for image bytes ``data`` (real sha256 and pHash); ``fields`` override."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        phash = perceptual_hash(im)
    record = {
        "url": url,
        "final_url": url,
        "page_url": None,
        "alt": f"alt text for {url}",
        "status": Status.OK.value,
        "image": data,
        "image_format": fmt,
        "width": width,
        "height": height,
        "original_width": width,
        "original_height": height,
        "sha256": hashlib.sha256(data).hexdigest(),
        "phash": phash,
        "fetched_at": FETCHED_AT,
        "caption": f"a caption for {url}",
        "caption_source": "alt",
        "clip_score": 0.3,
        "alt_score": 0.3,
        "kept": True,
    }
    record.update(fields)
    return record


def write_scored_part(work: Path, index: int, rows: list[dict[str, Any]], embeddings: np.ndarray | None = None) -> Path:
    """WORK/scored/part-NNNNN.parquet (+ emb-NNNNN.npy when ``embeddings`` is given)."""
    path = atomic_write_parquet(table_from_rows(rows, SCORED_SCHEMA), Path(work) / SCORED_DIR / part_name(index))
    if embeddings is not None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(embeddings, dtype=np.float16))
        atomic_write_bytes(buf.getvalue(), path.parent / emb_name(path))
    return path


def write_crawl_part(work: Path, index: int, rows: list[dict[str, Any]]) -> Path:
    """WORK/crawl/part-NNNNN.parquet from records (scored-only fields are ignored)."""
    return atomic_write_parquet(table_from_rows(rows, CRAWL_SCHEMA), Path(work) / CRAWL_DIR / part_name(index))
