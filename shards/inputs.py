"""Read the shards stage's input: scored parts (+ embeddings), or crawl parts with --no-filter.

Pass 1 (:func:`load_candidates`) reads only the columns that decisions need
(:data:`DECISION_COLUMNS`: URLs, hashes, status, caption, licence, score, size,
faces, chrome), so the long text columns (context, page title, candidates) and the
images stay on disk; pass 2 (:func:`iter_rows`) re-reads one part at a time, with
every column and the images, for the rows to write.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.alttext import boilerplate_alt
from common.chrome import PageCounts, chrome_reason
from common.errors import ConfigError
from common.layout import emb_name, list_parts
from common.records import CRAWL_SCHEMA, SCORED_SCHEMA, CaptionSource, Status, conform

log = logging.getLogger(__name__)

PART_COLUMN = "_part"
ROW_COLUMN = "_row"
#: The columns pass 1 holds in memory for every candidate: what the drop decisions, the dedup
#: survivor order, the ledger and the dedup log read. At 10M rows they took 3.1 GB where every
#: column but the image took 6.0 GB (bench/shards_scale_bench.py).
DECISION_COLUMNS = (
    "url", "final_url", "page_url", "status", "kept", "filter_reason", "sha256", "phash", "fetched_at",
    "license", "clip_score", "original_width", "original_height", "caption", "caption_source", "chrome", "face_bboxes",
)
#: The crawl columns pass 1 needs to turn crawl rows into scored ones (--no-filter).
_CRAWL_DECISION_COLUMNS = tuple(c for c in DECISION_COLUMNS if c in CRAWL_SCHEMA.names) + ("alt", "caption_in")
META_SCHEMA = pa.schema([f for f in SCORED_SCHEMA if f.name in DECISION_COLUMNS])


@dataclass
class Candidates:
    """Rows that may become samples (status ok and kept), without image bytes."""

    parts: list[Path]
    meta: pa.Table  # META_SCHEMA columns (the decisions') + _part (int32) + _row (int64), in input order
    embeddings: np.ndarray | None  # row-aligned with meta, when requested
    input_rows: int = 0
    status: dict[str, int] = field(default_factory=dict)  # every input row by status
    not_kept: dict[str, int] = field(default_factory=dict)  # ok rows the filter rejected, by filter_reason

    def subset(self, keep: np.ndarray) -> "Candidates":
        """The candidates where ``keep`` is true (the input counts stay those of the whole input)."""
        rows = pa.array(np.flatnonzero(keep))
        emb = None if self.embeddings is None else self.embeddings[keep]
        return Candidates(self.parts, self.meta.take(rows), emb, self.input_rows, self.status, self.not_kept)

    @property
    def has_caption(self) -> np.ndarray:
        captions = pc.utf8_trim_whitespace(self.meta.column("caption"))
        return pc.fill_null(pc.greater(pc.utf8_length(captions), 0), False).to_numpy(zero_copy_only=False)


def _nonempty(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), False)


def crawl_to_scored(table: pa.Table, page_counts: PageCounts | None = None) -> pa.Table:
    """Turn crawl rows into scored rows with trusted captions: alt, else caption_in (kept = True).

    An alt that names nothing (:func:`common.alttext.boilerplate_alt`) is no caption
    (``alt_ignored`` says why), and ``chrome`` gets the site-chrome rule's verdict
    (:func:`common.chrome.chrome_reason`), as the filter does.
    """
    alts = table.column("alt").to_pylist()
    ignored = [boilerplate_alt(a) if a and a.strip() else None for a in alts]
    has_alt = pc.and_(_nonempty(table.column("alt")), pa.array([w is None for w in ignored], pa.bool_()))
    has_in = _nonempty(table.column("caption_in"))
    if page_counts is not None:
        counts = [page_counts.of(u, p) for u, p in zip(table.column("url").to_pylist(), table.column("page_url").to_pylist())]
        chrome = [chrome_reason(m, *(c or (None, None))) for m, c in zip(table.column("chrome").to_pylist(), counts)]
        table = table.set_column(table.schema.get_field_index("chrome"), "chrome", pa.array(chrome, pa.string()))
        table = table.append_column("page_count", pa.array([c[0] if c else None for c in counts], pa.int32()))
        table = table.append_column("host_pages", pa.array([c[1] if c else None for c in counts], pa.int32()))
    table = table.append_column("alt_ignored", pa.array(ignored, pa.string()))
    caption = pc.if_else(has_alt, table.column("alt"), pc.if_else(has_in, table.column("caption_in"), pa.scalar(None, pa.string())))
    source = pc.if_else(
        has_alt,
        pa.scalar(CaptionSource.ALT.value),
        pc.if_else(has_in, pa.scalar(CaptionSource.CAPTION_IN.value), pa.scalar(None, pa.string())),
    )
    table = table.append_column("caption", caption).append_column("caption_source", source)
    table = table.append_column("kept", pa.array(np.ones(table.num_rows, dtype=bool)))
    return table


def _input_columns(names: list[str], no_filter: bool, with_image: bool) -> list[str]:
    """The columns of a part to read: every one with the image (pass 2), the decisions' without (pass 1)."""
    source = CRAWL_SCHEMA if no_filter else SCORED_SCHEMA
    wanted = source.names if with_image else (_CRAWL_DECISION_COLUMNS if no_filter else DECISION_COLUMNS)
    return [n for n in names if n in source.names and n in wanted]


def read_part(path: Path, no_filter: bool, with_image: bool, page_counts: PageCounts | None = None) -> pa.Table:
    """One input part as scored rows: with ``with_image``, every column (SCORED_SCHEMA); else META_SCHEMA's."""
    pf = pq.ParquetFile(path, memory_map=True)
    table = pf.read(columns=_input_columns(pf.schema_arrow.names, no_filter, with_image))
    return _as_scored(table, no_filter, with_image, page_counts)


def _as_scored(table: pa.Table, no_filter: bool, with_image: bool, page_counts: PageCounts | None = None) -> pa.Table:
    if no_filter:
        crawl = CRAWL_SCHEMA if with_image else pa.schema([f for f in CRAWL_SCHEMA if f.name in _CRAWL_DECISION_COLUMNS])
        table = crawl_to_scored(conform(table, crawl), page_counts)
    return conform(table, SCORED_SCHEMA if with_image else META_SCHEMA)


def _embeddings_of(part: Path, num_rows: int) -> np.ndarray | None:
    """Memory-mapped embeddings of a scored part, or None if the filter wrote none."""
    path = part.parent / emb_name(part)
    if not path.is_file():
        return None
    emb = np.load(path, mmap_mode="r")
    if emb.ndim != 2 or emb.shape[0] != num_rows:
        raise ConfigError(f"{path} has shape {emb.shape} but {part.name} has {num_rows} rows; re-run the filter for that part.")
    return emb


def _candidate_mask(table: pa.Table) -> np.ndarray:
    ok = pc.equal(table.column("status"), Status.OK.value)
    kept = pc.fill_null(table.column("kept"), False)
    return pc.and_(pc.fill_null(ok, False), kept).to_numpy(zero_copy_only=False)


def load_candidates(input_dir: Path, no_filter: bool, with_embeddings: bool, page_counts: PageCounts | None = None) -> Candidates:
    """Pass 1: metadata of every ok, kept row of every part, counted by status and filter reason."""
    parts = list_parts(input_dir)
    tables, embs = [], []
    status: Counter[str] = Counter()
    not_kept: Counter[str] = Counter()
    for i, part in enumerate(parts):
        table = read_part(part, no_filter, with_image=False, page_counts=page_counts)
        status.update(table.column("status").to_pylist())
        rows = np.flatnonzero(_candidate_mask(table))
        ok_rows = pc.fill_null(pc.equal(table.column("status"), Status.OK.value), False).to_numpy(zero_copy_only=False)
        rejected = np.flatnonzero(ok_rows & ~_candidate_mask(table))
        not_kept.update(str(r) for r in table.column("filter_reason").take(pa.array(rejected)).to_pylist())
        sub = table.take(pa.array(rows))
        sub = sub.append_column(PART_COLUMN, pa.array(np.full(rows.size, i, dtype=np.int32)))
        tables.append(sub.append_column(ROW_COLUMN, pa.array(rows.astype(np.int64))))
        if with_embeddings:
            emb = _embeddings_of(part, table.num_rows)
            if emb is None:
                raise ConfigError(f"{part.name} has no {emb_name(part)}; semantic dedup needs the filter's embeddings.")
            embs.append(np.asarray(emb[rows], dtype=np.float16))
    meta = pa.concat_tables(tables) if tables else META_SCHEMA.empty_table()
    embeddings = _stack_embeddings(embs) if with_embeddings else None
    log.info("read %d rows from %d part(s) in %s; %d candidates", sum(status.values()), len(parts), input_dir, meta.num_rows)
    return Candidates(parts, meta, embeddings, sum(status.values()), dict(sorted(status.items())), dict(sorted(not_kept.items())))


def _stack_embeddings(embs: list[np.ndarray]) -> np.ndarray:
    dims = {e.shape[1] for e in embs}
    if len(dims) > 1:
        raise ConfigError(f"Embedding files have different widths {sorted(dims)}; score every part with the same model.")
    return np.concatenate(embs) if embs else np.zeros((0, 0), dtype=np.float16)


def iter_rows(
    part: Path, rows: np.ndarray, no_filter: bool, batch_rows: int = 256, page_counts: PageCounts | None = None
) -> Iterator[tuple[pa.Table, np.ndarray | None]]:
    """Pass 2: the given rows (ascending) of one part with their images (SCORED_SCHEMA) and
    embeddings, a record batch at a time, so memory holds one batch of images, not a part."""
    pf = pq.ParquetFile(part, memory_map=True)  # parts were just written: read them from the page cache, no copy
    columns = _input_columns(pf.schema_arrow.names, no_filter, with_image=True)
    emb = None if no_filter else _embeddings_of(part, pf.metadata.num_rows)
    start = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
        lo, hi = np.searchsorted(rows, [start, start + batch.num_rows])
        if hi > lo:
            picked = pa.Table.from_batches([batch])
            if hi - lo < batch.num_rows:  # all rows kept is the common case: no copy then
                picked = picked.take(pa.array(rows[lo:hi] - start))
            yield _as_scored(picked, no_filter, with_image=True, page_counts=page_counts), (
                np.asarray(emb[rows[lo:hi]], dtype=np.float16) if emb is not None else None
            )
        start += batch.num_rows


def embedding_dim(parts: list[Path], no_filter: bool) -> int | None:
    """Width of the parts' embeddings (from the first that has one), None if there are none."""
    if no_filter:
        return None
    for part in parts:
        path = part.parent / emb_name(part)
        if path.is_file():
            shape = np.load(path, mmap_mode="r").shape
            return int(shape[1]) if len(shape) == 2 else None
    return None
