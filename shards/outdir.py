"""The layout of an output directory and the files every command shares in it.

    OUT/00000.tar  00000.parquet  00000_stats.json     one shard (the .tar is renamed last)
    OUT/index/00000.parquet  00000.npy                 dedup index of that shard (key, url, sha256, phash, fetched_at; embeddings)
    OUT/dedup_log/run-00000.parquet                    every sample a shards run dropped, why, and what it duplicates
    OUT/blocklist.jsonl  OUT/removals.jsonl            takedowns (see shards.blocklist, shards.takedown)
    OUT/manifest.json                                  run-level sums
    OUT/README.md                                      the dataset card (shards.card): `datasets` reads it; the datasheet
    OUT/.capcrawl.lock                                 held (flock) while a command writes OUT

A shard exists when its ``.tar`` exists: new shards rename the tar last, so a
crash leaves at most temporary files and tar-less siblings, which
:func:`clean_incomplete` removes.
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.errors import ConfigError
from common.fileio import atomic_write_bytes, atomic_write_json, atomic_write_parquet, locked_dir

log = logging.getLogger(__name__)

INDEX_DIR = "index"
DEDUP_LOG_DIR = "dedup_log"
MANIFEST_FILE = "manifest.json"
REMOVALS_FILE = "removals.jsonl"
INDEX_COLUMNS = ("key", "url", "sha256", "phash", "fetched_at")
#: OUT/dedup_log/run-NNNNN.parquet: one row per candidate a run dropped, and why.
DEDUP_LOG_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("sha256", pa.string()),
        ("fetched_at", pa.timestamp("ms", tz="UTC")),
        ("phash", pa.string()),
        ("reason", pa.string()),  # a DropReason value
        ("duplicate_of_key", pa.string()),  # the sample it duplicates (for dedup reasons)
        ("duplicate_of_url", pa.string()),
        ("detail", pa.string()),
        ("part", pa.string()),  # the input part and row it came from
        ("row", pa.int64()),
    ]
)
_SHARD_TAR = re.compile(r"^(\d{5,})\.tar$")
_SHARD_SIBLING = re.compile(r"^(\d{5,})(\.parquet|_stats\.json|\.npy)$")


def shard_name(number: int) -> str:
    return f"{number:05d}"


def tar_path(out: Path, name: str) -> Path:
    return out / f"{name}.tar"


def parquet_path(out: Path, name: str) -> Path:
    return out / f"{name}.parquet"


def stats_path(out: Path, name: str) -> Path:
    return out / f"{name}_stats.json"


def index_path(out: Path, name: str) -> Path:
    return out / INDEX_DIR / f"{name}.parquet"


def index_emb_path(out: Path, name: str) -> Path:
    return out / INDEX_DIR / f"{name}.npy"


def list_shards(out: Path) -> list[str]:
    """Names of the complete shards in OUT, in numeric order."""
    if not out.is_dir():
        return []
    names = [m.group(1) for p in out.iterdir() if (m := _SHARD_TAR.match(p.name))]
    return sorted(names, key=int)


def next_shard_number(out: Path) -> int:
    shards = list_shards(out)
    return int(shards[-1]) + 1 if shards else 0


def locked(out: Path) -> ContextManager[None]:
    """Hold an exclusive lock on OUT; fail at once if another command writes it."""
    return locked_dir(out, "OUT")


def clean_incomplete(out: Path) -> list[Path]:
    """Delete temporary files and the siblings of shards whose tar never got its final name."""
    complete = set(list_shards(out))
    removed = []
    for directory in (out, out / INDEX_DIR, out / DEDUP_LOG_DIR):
        if not directory.is_dir():
            continue
        for p in directory.iterdir():
            m = _SHARD_SIBLING.match(p.name)
            stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp")
            if p.is_file() and (stale_tmp or (m and m.group(1) not in complete)):
                p.unlink()
                removed.append(p)
    if removed:
        log.warning("removed %d leftover file(s) of an interrupted run in %s", len(removed), out)
    return removed


def read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return atomic_write_json(obj, path)


def append_jsonl(path: Path, records: list[dict]) -> None:
    """Append records to a JSON-lines log (rewritten atomically, so a crash never leaves half a line)."""
    old = path.read_bytes() if path.is_file() else b""
    new = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    atomic_write_bytes(old + new, path)


def write_index(out: Path, name: str, samples: pa.Table, embeddings: np.ndarray | None) -> None:
    """Write the dedup index of one shard (its embeddings too, when there are any)."""
    atomic_write_parquet(samples.select(list(INDEX_COLUMNS)), index_path(out, name))
    emb_file = index_emb_path(out, name)
    if embeddings is None:
        emb_file.unlink(missing_ok=True)
        return
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(embeddings, dtype=np.float16))
    atomic_write_bytes(buf.getvalue(), emb_file)


def read_index(out: Path, name: str, with_embeddings: bool) -> tuple[pa.Table, np.ndarray | None]:
    """The index of one shard, rebuilt from its parquet if the index file is missing."""
    path = index_path(out, name)
    if path.is_file() and set(INDEX_COLUMNS) <= set(pq.read_schema(path).names):
        table = pq.read_table(path, columns=list(INDEX_COLUMNS))
    else:
        log.warning("index of shard %s missing or old; rebuilding it from %s", name, parquet_path(out, name).name)
        table = pq.read_table(parquet_path(out, name), columns=list(INDEX_COLUMNS))
        write_index(out, name, table, None)
    emb = None
    if with_embeddings and index_emb_path(out, name).is_file():
        emb = np.load(index_emb_path(out, name))
        if emb.shape[0] != table.num_rows:
            log.warning("embeddings of shard %s do not match its index; ignoring them", name)
            emb = None
    return table, emb
