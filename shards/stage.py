"""``capcrawl shards``: dedup the kept records against each other and OUT, write new shards.

See :mod:`shards.dedup` for the survivor order, :mod:`shards.outdir` for the layout.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.chrome import PageCounts
from common.fileio import atomic_path
from common.layout import CRAWL_DIR, SCORED_DIR, STATS_FILE
from common.records import REVISITED_DROPS, DropReason, FaceAction
from shards.blocklist import Blocklist
from shards.card import write_card
from shards.config import ShardsConfig
from shards.faceblur import UndecodableImage, blur_faces_bytes
from shards.dedup import KEPT, HashSet, Verdicts, deduplicate, priority_rank
from shards.inputs import PART_COLUMN, ROW_COLUMN, Candidates, embedding_dim, iter_rows, load_candidates
from shards.manifest import update_manifest
from shards.ledger import Ledger, dropped_records, ledger_of, record_ids, removed_records
from shards.outdir import DEDUP_LOG_DIR, DEDUP_LOG_SCHEMA, REMOVALS_FILE, clean_incomplete, list_shards, locked, next_shard_number, read_index, read_json
from common.phash import hex_to_uint64
from shards.writer import ShardWriter

log = logging.getLogger(__name__)


@dataclass
class Existing:
    """Samples already in OUT: their keys and urls, the fields dedup compares, and their records."""

    keys: list[str]
    urls: list[str]
    hashes: HashSet
    published: Ledger = field(default_factory=Ledger.empty)


def load_existing(out: Path, with_embeddings: bool) -> Existing:
    """The persistent dedup index of every complete shard in OUT."""
    tables, embs = [], []
    for name in list_shards(out):
        table, emb = read_index(out, name, with_embeddings)
        tables.append(table)
        embs.append(emb)
    if not tables:
        return Existing([], [], HashSet(pa.array([], pa.string()), np.zeros(0, np.uint64), np.zeros(0, bool), None))
    index = pa.concat_tables(tables)
    phash, valid = hex_to_uint64(index.column("phash"))
    emb = _stack_index_embeddings(embs, [t.num_rows for t in tables]) if with_embeddings else None
    hashes = HashSet(index.column("sha256"), phash, valid, emb)
    return Existing(index.column("key").to_pylist(), index.column("url").to_pylist(), hashes, ledger_of(index))


def skip_decided(cands: Candidates, existing: Existing, out: Path) -> tuple[Candidates, int, int]:
    """The candidates OUT has not decided on yet, and how many were already published / decided.

    A record published by an earlier (possibly killed) run, or dropped or taken down before,
    is not a candidate again: it is neither written twice nor counted as a duplicate of itself.
    """
    if not cands.meta.num_rows:
        return cands, 0, 0
    decided_before = ledger_of(dropped_records(out, DEDUP_LOG_DIR, skip_reasons=REVISITED_DROPS),
                               removed_records(out / REMOVALS_FILE))
    if not (len(existing.published) or len(decided_before)):  # a first run into OUT: no ids to make
        return cands, 0, 0
    ids = record_ids(cands.meta)
    urls = cands.meta.column("url")
    published = existing.published.contains(ids, urls)
    decided = decided_before.contains(ids, urls)
    decided &= ~published
    if not (published.any() or decided.any()):
        return cands, 0, 0
    return cands.subset(~(published | decided)), int(published.sum()), int(decided.sum())


def _stack_index_embeddings(embs: list[np.ndarray | None], sizes: list[int]) -> np.ndarray | None:
    dims = {e.shape[1] for e in embs if e is not None}
    if len(dims) != 1:
        return None
    dim = dims.pop()
    return np.concatenate([e if e is not None else np.zeros((n, dim), np.float16) for e, n in zip(embs, sizes)])


def _candidate_hashes(cands: Candidates) -> HashSet:
    phash, valid = hex_to_uint64(cands.meta.column("phash"))
    return HashSet(cands.meta.column("sha256"), phash, valid, cands.embeddings)


def decide(cands: Candidates, existing: Existing, blocklist: Blocklist, config: ShardsConfig) -> Verdicts:
    """Drop reasons for every candidate: no caption, blocklisted, then the dedup stages."""
    verdicts = Verdicts.empty(cands.meta.num_rows, len(existing.keys))
    if config.no_filter and config.site_chrome:  # the filter applies the same rule itself (filter_reason site_chrome)
        chrome = cands.meta.column("chrome").to_pylist()
        rows = np.array([i for i, c in enumerate(chrome) if c], dtype=np.int64)
        verdicts.drop(rows, DropReason.SITE_CHROME, None, [chrome[i] for i in rows])
    no_caption = np.flatnonzero(~cands.has_caption & verdicts.kept)
    verdicts.drop(no_caption, DropReason.NO_CAPTION, None, [None] * no_caption.size)
    if config.faces == "drop":
        boxes = cands.meta.column("face_bboxes").to_pylist()
        rows = np.array([i for i, b in enumerate(boxes) if b and verdicts.reason[i] is None], dtype=np.int64)
        verdicts.drop(rows, DropReason.FACES, None, [f"{len(boxes[i])} face(s)" for i in rows])
    if (policy := config.license_policy) is not None:
        licenses = cands.meta.column("license").to_pylist()
        for reason in (DropReason.LICENSE_UNKNOWN, DropReason.LICENSE_NOT_ALLOWED):
            rows = np.array([i for i, lic in enumerate(licenses) if verdicts.reason[i] is None and policy.verdict(lic) == reason.value],
                            dtype=np.int64)
            verdicts.drop(rows, reason, None, [licenses[i] for i in rows])
    blocked = [b if verdicts.reason[i] is None else None for i, b in enumerate(blocklist.match(cands.meta))]
    return deduplicate(
        existing.hashes,
        _candidate_hashes(cands),
        priority_rank(cands.meta),
        verdicts=verdicts,
        blocked=blocked,
        max_distance=config.near_dup_distance,
        semantic_threshold=config.semantic_dedup,
    )


def _records(table: pa.Table) -> list[dict[str, Any]]:
    return table.drop_columns(["image"]).to_pylist()


def write_samples(
    config: ShardsConfig, cands: Candidates, verdicts: Verdicts, page_counts: PageCounts | None = None
) -> tuple[list[str | None], ShardWriter, int]:
    """Pass 2: write the kept candidates in input order.

    Returns each candidate's key (None if not written), the writer, and how many
    kept rows had no image bytes (skipped and counted; an ok row should always have them).
    """
    keys: list[str | None] = [None] * cands.meta.num_rows
    no_image = 0
    kept = np.flatnonzero(verdicts.kept)
    part_of = cands.meta.column(PART_COLUMN).to_numpy()[kept]
    row_of = cands.meta.column(ROW_COLUMN).to_numpy()[kept]
    writer = ShardWriter(
        config.out,
        next_shard_number(config.out),
        config.samples_per_shard,
        config.max_shard_bytes,
        embedding_dim(cands.parts, config.no_filter),
    )
    with writer:
        for part_index, part in enumerate(cands.parts):
            mine = part_of == part_index
            if not mine.any():
                continue
            positions = iter(kept[mine].tolist())
            for table, emb in iter_rows(part, row_of[mine], config.no_filter, page_counts=page_counts):
                images = table.column("image").to_pylist()
                # records first: zip stops on them without taking a position of the next batch
                for j, (record, pos) in enumerate(zip(_records(table), positions)):
                    if not images[j]:
                        log.warning("%s has status ok but no image bytes; skipped", record["url"])
                        no_image += 1
                        continue
                    image = apply_face_policy(record, images[j], config.faces)
                    keys[pos] = writer.write(record, image, None if emb is None else emb[j])
    return keys, writer, no_image


def _faces_detected(cands: Candidates) -> bool:
    """Whether the filter looked for faces in these rows (``face_bboxes`` is set on kept rows then)."""
    return cands.meta.num_rows == 0 or cands.meta.column("face_bboxes").null_count < cands.meta.num_rows


def apply_face_policy(record: dict[str, Any], image: bytes, policy: str) -> bytes:
    """The image to write under ``--faces`` (blurred where faces were found), and ``face_action``."""
    boxes = record.get("face_bboxes")
    if boxes is None:  # detection did not run (--no-filter, or the filter's --no-face-detection)
        record["face_action"] = FaceAction.UNCHECKED.value
        return image
    if not boxes:
        record["face_action"] = FaceAction.NONE.value
        return image
    if policy == "keep":
        record["face_action"] = FaceAction.KEPT.value
        return image
    record["face_action"] = FaceAction.BLURRED.value
    try:
        return blur_faces_bytes(image, boxes)
    except UndecodableImage:  # the filter decoded it; if it no longer decodes, never write it unblurred
        raise RuntimeError(f"{record.get('url')}: image with faces does not decode for blurring") from None


_LOG_SLICE = 1 << 16  # dropped rows per row group of the dedup log: a million drops never sit in memory twice


def write_dedup_log(out: Path, run: int, cands: Candidates, verdicts: Verdicts, keys: list[str | None], existing: Existing) -> Path | None:
    """OUT/dedup_log/run-NNNNN.parquet: one row per dropped candidate, written a slice at a time."""
    dropped = np.flatnonzero(~verdicts.kept)
    if not dropped.size:
        return None
    n_old = len(existing.keys)
    urls = cands.meta.column("url")
    part_names = pa.array([p.name for p in cands.parts], pa.string())
    path = out / DEDUP_LOG_DIR / f"run-{run:05d}.parquet"
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, DEDUP_LOG_SCHEMA, compression="zstd") as writer:
        for start in range(0, dropped.size, _LOG_SLICE):
            rows = dropped[start : start + _LOG_SLICE]
            row_list = rows.tolist()
            nodes = verdicts.dup_of[rows]
            new_urls = urls.take(pa.array(np.where(nodes >= n_old, nodes - n_old, 0))).to_pylist()
            targets = [
                (None, None) if node == KEPT
                else (existing.keys[node], existing.urls[node]) if node < n_old
                else (keys[node - n_old], new_urls[j])
                for j, node in enumerate(nodes.tolist())
            ]
            meta = cands.meta.take(pa.array(rows))
            writer.write_table(pa.table(
                {
                    "url": meta.column("url"),
                    "sha256": meta.column("sha256"),
                    "fetched_at": meta.column("fetched_at"),
                    "phash": meta.column("phash"),
                    "reason": pa.array([verdicts.reason[i] for i in row_list], pa.string()),
                    "duplicate_of_key": pa.array([t[0] for t in targets], pa.string()),
                    "duplicate_of_url": pa.array([t[1] for t in targets], pa.string()),
                    "detail": pa.array([verdicts.detail[i] for i in row_list], pa.string()),
                    "part": part_names.take(meta.column(PART_COLUMN)),
                    "row": meta.column(ROW_COLUMN),
                },
                schema=DEDUP_LOG_SCHEMA,
            ))
    return path


def _stage_stats(config: ShardsConfig) -> dict[str, Any]:
    crawl = read_json(config.work / CRAWL_DIR / STATS_FILE)
    filt = None if config.no_filter else read_json(config.work / SCORED_DIR / STATS_FILE)
    return {"crawl": crawl, "filter": filt}


def next_log_number(out: Path) -> int:
    """The number of this run's dedup log: one past the highest in OUT (a killed run's log is kept)."""
    numbers = [int(p.stem.split("-")[1]) for p in (out / DEDUP_LOG_DIR).glob("run-*.parquet") if p.stem.split("-")[1].isdigit()]
    return max(numbers, default=-1) + 1


def run_shards(config: ShardsConfig) -> dict[str, Any]:
    """Dedup and write new shards into ``config.out``; return the updated manifest."""
    config.check_inputs()
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    with locked(config.out):
        clean_incomplete(config.out)
        page_counts = PageCounts.load(config.work / CRAWL_DIR) if config.no_filter else None
        cands = load_candidates(config.input_dir, config.no_filter, config.semantic_dedup is not None, page_counts)
        existing = load_existing(config.out, config.semantic_dedup is not None)
        cands, already_published, already_decided = skip_decided(cands, existing, config.out)
        verdicts = decide(cands, existing, Blocklist.load(config.out), config)
        if config.faces != "keep" and not _faces_detected(cands):
            log.warning("no face detection ran on these rows (%s): faces are neither blurred nor dropped",
                        "--no-filter" if config.no_filter else "the filter ran with --no-face-detection")
        uncaptioned = int((~cands.has_caption).sum())
        if uncaptioned:
            log.warning(
                "%d of %d rows have no caption and are left out (dropped/no_caption); %s", uncaptioned, cands.meta.num_rows,
                "give URL lists a caption column (--caption-col) or run `capcrawl filter` to fill captions"
                if config.no_filter else "the filter found no caption for them",
            )
        keys, writer, no_image = write_samples(config, cands, verdicts, page_counts)
        log_path = write_dedup_log(config.out, next_log_number(config.out), cands, verdicts, keys, existing)
        written = sum(s.samples for s in writer.written)
        previous = read_json(config.out / "manifest.json", {}) or {}
        run = {
            "run": len(previous.get("runs", [])),
            "command": "shards",
            "started_at": started.isoformat(),
            "seconds": round(time.perf_counter() - clock, 3),
            "options": config.options(),
            "input_dir": str(config.input_dir.resolve()),
            "stages": {
                **_stage_stats(config),
                "shards": {
                    "input_rows": cands.input_rows,
                    "status": cands.status,
                    "not_kept": cands.not_kept,
                    "already_published": already_published,
                    "already_decided": already_decided,
                    "candidates": cands.meta.num_rows,
                    "existing_samples": len(existing.keys),
                    "dropped": dict(sorted(Counter(r for r in verdicts.reason if r is not None).items())),
                    "written": written,
                    "skipped_no_image": no_image,
                },
            },
            "new_shards": [s.name for s in writer.written],
            "dedup_log": str(log_path.relative_to(config.out)) if log_path else None,
        }
        manifest = update_manifest(config.out, run=run)
        write_card(config.out, manifest)
    log.info("shards: %d written to %d new shard(s), %d dropped", written, len(writer.written), sum(run["stages"]["shards"]["dropped"].values()))
    return manifest
