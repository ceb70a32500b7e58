"""Streaming readers for URL lists (img2dataset's input formats): never the whole list in memory."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from common.errors import ConfigError
from common.text import clean_text


def iter_url_list(path: str | Path, fmt: str, url_col: str = "url", caption_col: str | None = None) -> Iterator[tuple[str, str | None]]:
    """Yield ``(url, caption)`` rows of a txt/csv/tsv/parquet/jsonl list, one at a time."""
    path = Path(path)
    if fmt == "txt":
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line, None
    elif fmt in ("csv", "tsv"):
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if fmt == "tsv" else ",")
            _check_columns(path, reader.fieldnames or [], url_col, caption_col)
            for row in reader:
                yield (row.get(url_col) or "").strip(), _cap(row.get(caption_col) if caption_col else None)
    elif fmt == "jsonl":
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    yield f"<line {n}: not JSON>", None
                    continue
                yield str(row.get(url_col) or "").strip(), _cap(row.get(caption_col) if caption_col else None)
    elif fmt == "parquet":
        pf = pq.ParquetFile(path)
        _check_columns(path, pf.schema_arrow.names, url_col, caption_col)
        cols = [url_col] + ([caption_col] if caption_col else [])
        for batch in pf.iter_batches(batch_size=4096, columns=cols):
            urls = batch.column(0).to_pylist()
            caps = batch.column(1).to_pylist() if caption_col else [None] * len(urls)
            for u, c in zip(urls, caps):
                yield (u or "").strip(), _cap(c)
    else:
        raise ConfigError(f"unknown input format {fmt!r}.")


def _cap(value: object) -> str | None:
    if value is None:
        return None
    return clean_text(str(value)) or None


def _check_columns(path: Path, names: list[str], url_col: str, caption_col: str | None) -> None:
    if url_col not in names:
        raise ConfigError(f"{path.name} has no column {url_col!r} (it has {', '.join(names)}); pass --url-col.")
    if caption_col and caption_col not in names:
        raise ConfigError(f"{path.name} has no column {caption_col!r} (it has {', '.join(names)}); pass --caption-col.")


def validate_list(path: str | Path, fmt: str, url_col: str, caption_col: str | None) -> None:
    """Fail at start-up (not mid-crawl) when the list lacks the named columns."""
    it = iter_url_list(path, fmt, url_col, caption_col)
    next(it, None)
