"""Helpers for the filter tests: crawl parts built from rendered shapes, options parsed like the CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
from pathlib import Path

import numpy as np

from crawler.records import CRAWL_DIR, CRAWL_SCHEMA, Status, atomic_write_parquet, part_name, table_from_rows
from filter.cli import add_filter_arguments, filter_config_from_args
from filter.config import FilterConfig
from filter.tiny import TINY_THRESHOLD, render_shape


def shape_jpeg(shape: str, color: str, size: int = 192, seed: int = 0) -> bytes:
    """A rendered shape as the crawler would store it (JPEG)."""
    buf = io.BytesIO()
    render_shape(shape, color, size, np.random.default_rng(seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def crawl_row(shape: str | None, color: str | None, n: int, **text: str | None) -> dict:
    """An ``ok`` crawl row (or with ``status=...`` / ``image=...`` overrides) for a rendered shape."""
    url = text.pop("url", None) or f"https://shapes.example/img/{n:04d}.jpg"
    image = text.pop("image", None)
    if image is None and shape:
        image = shape_jpeg(shape, color, seed=n)
    status = text.pop("status", Status.OK.value)
    row = {
        "url": url,
        "page_url": "https://shapes.example/page.html",
        "status": status,
        "image": image if status == Status.OK.value else None,
        "image_format": "jpeg",
        "sha256": hashlib.sha256(image or b"").hexdigest(),
        "fetched_at": dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc),
    }
    row.update(text)
    return row


def write_part(work: Path, index: int, rows: list[dict]) -> Path:
    """``WORK/crawl/part-NNNNN.parquet`` in CRAWL_SCHEMA."""
    return atomic_write_parquet(table_from_rows(rows, CRAWL_SCHEMA), Path(work) / CRAWL_DIR / part_name(index))


def filter_config(work: Path, *argv: str) -> FilterConfig:
    """Parse ``argv`` through the real option parser, then validate, exactly as the CLI does."""
    parser = argparse.ArgumentParser()
    add_filter_arguments(parser)
    return filter_config_from_args(parser.parse_args(list(argv)), str(work))


def tiny_args(tiny: tuple[Path, Path], *extra: str) -> list[str]:
    """Options selecting the tiny model on CPU through the public --model/--pretrained path."""
    config_json, checkpoint = tiny
    return [
        "--model", str(config_json), "--pretrained", str(checkpoint), "--device", "cpu",
        "--threshold", str(TINY_THRESHOLD), "--workers", "0", "--batch-size", "16", *extra,
    ]
