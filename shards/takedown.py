"""``capcrawl remove OUT --takedown FILE``: take samples out of published shards, and keep them out.

Order of work, so that a crash at any point is repaired by running the command again:
1. the entries join OUT/blocklist.jsonl (every later ``shards`` run applies it);
2. for each shard with a matching row, the removed samples join OUT/removals.jsonl (once:
   a rerun does not log them again), then the shard is rewritten: new tar first, then
   parquet, stats and index (matching reads the parquet, so a rerun finds what is left);
   other samples keep their keys;
3. the manifest is updated.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.fileio import atomic_write_parquet, publish
from common.records import DropReason
from shards.blocklist import BlockEntry, Blocklist, EntryKind, parse_takedown
from shards.card import write_card
from shards.config import RemoveConfig
from shards.manifest import update_manifest
from shards.outdir import (
    DEDUP_LOG_DIR,
    REMOVALS_FILE,
    append_jsonl,
    clean_incomplete,
    index_emb_path,
    list_shards,
    locked,
    parquet_path,
    read_json,
    stats_path,
    tar_path,
    write_index,
    write_json,
)
from shards.writer import add_member, open_tar, shard_stats

log = logging.getLogger(__name__)


def _member_key(name: str) -> str:
    return Path(name).name.split(".", 1)[0]


def rewrite_tar(out: Path, name: str, drop_keys: set[str]) -> None:
    """Copy a shard's tar without the members of ``drop_keys`` and rename it over the old one."""
    final = tar_path(out, name)
    tmp, new = open_tar(final)
    try:
        with tarfile.open(final, mode="r") as old, new:
            for member in old:
                if member.isfile() and _member_key(member.name) not in drop_keys:
                    add_member(new, member.name, old.extractfile(member).read())
        publish(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def rewrite_shard(out: Path, name: str, samples: pa.Table, drop: np.ndarray) -> None:
    """Remove the rows flagged in ``drop`` from every file of one shard."""
    drop_keys = set(samples.column("key").filter(pa.array(drop)).to_pylist())
    rewrite_tar(out, name, drop_keys)
    keep = pa.array(~drop)
    remaining = samples.filter(keep)
    atomic_write_parquet(remaining, parquet_path(out, name))
    old_stats = read_json(stats_path(out, name), {}) or {}
    removed = Counter(old_stats.get("removed", {}))
    removed[DropReason.BLOCKLISTED.value] += int(drop.sum())
    write_json(stats_path(out, name), shard_stats(name, remaining, dict(removed)))
    emb = np.load(index_emb_path(out, name)) if index_emb_path(out, name).is_file() else None
    write_index(out, name, remaining, emb[~drop] if emb is not None and emb.shape[0] == drop.size else None)


def _log_records(samples: pa.Table, matches: list[str | None], blocklist: Blocklist, now: str) -> list[dict[str, Any]]:
    kinds: dict[str, str] = {}
    for e in blocklist.entries:  # the kind of the takedown line itself, not of entries derived from it
        kinds.setdefault(e.entry, e.kind.value)
    columns = [samples.column(c).to_pylist() for c in ("key", "url", "sha256", "fetched_at")]
    return [
        {"key": key, "url": url, "sha256": sha, "fetched_at": at.isoformat() if at else None, "entry": m,
         "kind": kinds.get(m), "reason": DropReason.BLOCKLISTED.value, "removed_at": now}
        for key, url, sha, at, m in zip(*columns, matches)
        if m is not None
    ]


def derived_entries(samples: pa.Table, matches: list[str | None], max_distance: int, now: str) -> list[BlockEntry]:
    """sha256 and pHash entries for every removed sample, so that its exact and near copies
    (one dropped in its favour as a duplicate, or a later re-crawl under another URL) are
    blocked too. ``entry`` keeps the takedown line they come from."""
    out = []
    for sha, phash, m in zip(samples.column("sha256").to_pylist(), samples.column("phash").to_pylist(), matches):
        if m is None:
            continue
        if sha:
            out.append(BlockEntry(EntryKind.SHA256, sha.lower(), m, added_at=now))
        if phash:
            out.append(BlockEntry(EntryKind.PHASH, phash.lower(), m, max_distance, now))
    return out


def _logged_keys(out: Path) -> set[str]:
    path = out / REMOVALS_FILE
    keys = set()
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                keys.add(json.loads(line)["key"])
            except (ValueError, KeyError):
                continue
    return keys


_DUPLICATE_REASONS = (DropReason.DUPLICATE_SHA256.value, DropReason.NEAR_DUPLICATE.value,
                      DropReason.SEMANTIC_DUPLICATE.value)


def published_copies(out: Path, blocklist: Blocklist) -> dict[str, str]:
    """Samples whose copy the blocklist matches where OUT dropped it as their duplicate: key ->
    the takedown line. A takedown of the URL a copy was found at takes the published picture out
    too (the same picture, kept under another URL)."""
    found: dict[str, str] = {}
    for path in sorted((out / DEDUP_LOG_DIR).glob("run-*.parquet")):
        log_rows = pq.read_table(path, columns=["url", "sha256", "phash", "reason", "duplicate_of_key"])
        dups = log_rows.filter(pc.is_in(log_rows.column("reason"), pa.array(_DUPLICATE_REASONS)))
        for key, hit in zip(dups.column("duplicate_of_key").to_pylist(), blocklist.match(dups)):
            if hit is not None and key:
                found.setdefault(key, f"{hit} (a copy of this sample)")
    return found


def run_remove(config: RemoveConfig) -> dict[str, Any]:
    """Apply a takedown file to OUT; return the updated manifest."""
    out = config.out
    entries = parse_takedown(config.takedown, config.near_dup_distance)
    with locked(out):
        clean_incomplete(out)
        blocklist = Blocklist.load(out).extended(entries)
        blocklist.save(out)
        now = datetime.now(timezone.utc).isoformat()
        log_records: list[dict[str, Any]] = []
        rewritten = []
        logged = _logged_keys(out)
        copies = published_copies(out, blocklist)
        for name in list_shards(out):
            samples = pq.read_table(parquet_path(out, name))
            matches = [m or copies.get(k) for m, k in zip(blocklist.match(samples), samples.column("key").to_pylist())]
            drop = np.array([m is not None for m in matches], dtype=bool)
            if not drop.any():
                continue
            records = _log_records(samples, matches, blocklist, now)
            derived = derived_entries(samples, matches, config.near_dup_distance, now)
            if derived:  # copies and near copies of what was taken down stay out too
                blocklist = blocklist.extended(derived)
                blocklist.save(out)
            # logged before the shard is rewritten: a crash in between is repaired by a rerun,
            # which finds the samples still there and does not log them twice
            new = [r for r in records if r["key"] not in logged]
            if new:
                append_jsonl(out / REMOVALS_FILE, new)
                logged.update(r["key"] for r in new)
            rewrite_shard(out, name, samples, drop)
            rewritten.append(name)
            log_records.extend(records)
            log.info("shard %s: removed %d sample(s)", name, int(drop.sum()))
        removal = {
            "command": "remove",
            "at": now,
            "takedown": str(config.takedown),
            "entries": len(entries),
            "removed": {DropReason.BLOCKLISTED.value: len(log_records)} if log_records else {},
            "shards_rewritten": rewritten,
            "near_dup_distance": config.near_dup_distance,
        }
        manifest = update_manifest(out, removal=removal)
        write_card(out, manifest)
    log.info("remove: %d sample(s) removed from %d shard(s)", len(log_records), len(rewritten))
    return manifest
