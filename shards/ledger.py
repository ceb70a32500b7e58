"""Which input records OUT has already decided on: published as a sample, dropped, or taken down.

A record is one crawl row: the same image URL fetched at the same moment with the same bytes.
Its id is 64 bits mixed from its ``url``, ``fetched_at`` (ms) and ``sha256``; a match on the
id is confirmed on the URL, so a hash collision can never make a new record look decided.

Every ``shards`` run skips the records OUT has decided on (and counts them as
``already_published`` / ``already_decided``) before it deduplicates the rest. A record dropped
for a reason a run's options decide (``--licenses``, ``--faces drop``; see
``common.records.REVISITED_DROPS``) is decided again by every run. So a run that
was killed after publishing some shards, and then run again, neither writes those samples
twice nor counts them as duplicates of themselves, and a rerun with nothing new adds no drops:
the manifest's counts describe the dataset, however many runs it took.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.phash import hex_to_uint64
from common.records import pylist_slices

_MIX_URL = np.uint64(0x9E3779B97F4A7C15)
_MIX_TIME = np.uint64(0xC2B2AE3D27D4EB4F)
ID_COLUMNS = ("url", "sha256", "fetched_at")


def _url_hashes(urls: pa.ChunkedArray) -> np.ndarray:
    """64-bit hashes of the URLs; stable within this process (Python's string hash), which is
    all the ledger needs: both sides are hashed afresh on every run."""
    parts = [
        np.fromiter((hash(u) & 0xFFFFFFFFFFFFFFFF if u is not None else 0 for u in chunk), dtype=np.uint64, count=len(chunk))
        for chunk in pylist_slices(urls)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def record_ids(table: pa.Table) -> np.ndarray:
    """The id of every row of ``table`` (which has the columns of :data:`ID_COLUMNS`)."""
    n = table.num_rows
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    sha_prefix, _ = hex_to_uint64(pc.utf8_slice_codeunits(table.column("sha256"), 0, 16))
    if "fetched_at" in table.column_names:
        ms = table.column("fetched_at").cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64)
    else:
        ms = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return sha_prefix ^ (_url_hashes(table.column("url")) * _MIX_URL) ^ (ms * _MIX_TIME)


@dataclass
class Ledger:
    """Sorted record ids with their URLs, for membership tests confirmed on the URL."""

    ids: np.ndarray  # uint64, sorted
    urls: list[str | None]  # aligned with ids

    @classmethod
    def build(cls, ids: np.ndarray, urls: list[str | None]) -> "Ledger":
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], [urls[i] for i in order.tolist()])

    @classmethod
    def empty(cls) -> "Ledger":
        return cls(np.zeros(0, dtype=np.uint64), [])

    def __len__(self) -> int:
        return int(self.ids.size)

    def contains(self, ids: np.ndarray, urls: "pa.ChunkedArray | list[str | None]") -> np.ndarray:
        """Per query row: whether the ledger holds that record (``urls``: the query rows' URLs)."""
        found = np.zeros(ids.size, dtype=bool)
        if not self.ids.size or not ids.size:
            return found
        pos = np.searchsorted(self.ids, ids)
        hit = np.flatnonzero((pos < self.ids.size) & (self.ids[np.minimum(pos, self.ids.size - 1)] == ids))
        hit_urls = [urls[q] for q in hit.tolist()] if isinstance(urls, list) else urls.take(pa.array(hit)).to_pylist()
        for q, url in zip(hit.tolist(), hit_urls):  # confirm on the URL (equal ids are adjacent)
            p = int(pos[q])
            while p < self.ids.size and self.ids[p] == ids[q]:
                if self.urls[p] == url:
                    found[q] = True
                    break
                p += 1
        return found


def dropped_records(out: Path, log_dir: str, skip_reasons: tuple[str, ...] = ()) -> pa.Table:
    """url / sha256 / fetched_at of every record an earlier run logged as dropped, but for those
    dropped for one of ``skip_reasons``."""
    tables = []
    for path in sorted((out / log_dir).glob("run-*.parquet")):
        names = pq.read_schema(path).names
        wanted = [c for c in ID_COLUMNS if c in names]
        if skip_reasons and "reason" in names:
            table = pq.read_table(path, columns=[*wanted, "reason"])
            table = table.filter(pc.invert(pc.fill_null(pc.is_in(table.column("reason"), pa.array(skip_reasons)), False)))
            tables.append(table.select(wanted))
        else:
            tables.append(pq.read_table(path, columns=wanted))
    return _concat(tables)


def removed_records(path: Path) -> pa.Table:
    """url / sha256 / fetched_at of every sample ``capcrawl remove`` took out of OUT."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            rows.append({"url": r.get("url"), "sha256": r.get("sha256"), "fetched_at": r.get("fetched_at")})
    if not rows:
        return _concat([])
    table = pa.Table.from_pylist(rows, schema=pa.schema([("url", pa.string()), ("sha256", pa.string()), ("fetched_at", pa.string())]))
    ts = pa.array([_parse_ts(v) for v in table.column("fetched_at").to_pylist()], pa.timestamp("ms", tz="UTC"))
    return table.set_column(2, "fetched_at", ts)


def _parse_ts(value: str | None):
    from datetime import datetime

    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _concat(tables: list[pa.Table]) -> pa.Table:
    schema = pa.schema([("url", pa.string()), ("sha256", pa.string()), ("fetched_at", pa.timestamp("ms", tz="UTC"))])
    if not tables:
        return schema.empty_table()
    from common.records import conform

    return pa.concat_tables([conform(t, schema) for t in tables])


def ledger_of(*tables: pa.Table) -> Ledger:
    """A ledger of the records of ``tables`` (each with url / sha256 / fetched_at)."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return Ledger.empty()
    ids = np.concatenate([record_ids(t) for t in tables])
    urls = [u for t in tables for u in t.column("url").to_pylist()]
    return Ledger.build(ids, urls)
