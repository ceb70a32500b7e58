"""OUT/manifest.json: what OUT holds and how it got there (every shards run and removal).

``totals`` describe the dataset as it is, however many runs (killed ones included) it took:
samples from the shards' stats, drops from the dedup logs (each input record is decided
once, see :mod:`shards.ledger`), removals from the removal log, and the input counts from
the latest run over each input directory.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.records import REVISITED_DROPS, SCHEMA_VERSION
from shards.ledger import ID_COLUMNS, ledger_of, record_ids
from shards.outdir import (DEDUP_LOG_DIR, MANIFEST_FILE, REMOVALS_FILE, list_shards, read_index, read_json, stats_path,
                           tar_path, write_json)


def capcrawl_version() -> str:
    """Installed capcrawl version, or "unknown" when running from a source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("capcrawl")
    except PackageNotFoundError:
        return "unknown"


def shard_entries(out: Path) -> list[dict[str, Any]]:
    """One entry per complete shard, from its _stats.json."""
    entries = []
    for name in list_shards(out):
        stats = read_json(stats_path(out, name), {}) or {}
        entries.append(
            {
                "name": name,
                "tar": tar_path(out, name).name,
                "samples": stats.get("samples"),
                "bytes": tar_path(out, name).stat().st_size,
                "removed": stats.get("removed", {}),
                "face_count": stats.get("face_count", 0),
                "face_action": stats.get("face_action", {}),
            }
        )
    return entries


def _sum(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d or {})
    return dict(sorted(total.items()))


def dropped_by_reason(out: Path) -> dict[str, int]:
    """Drops by reason over every dedup log in OUT, each record counted once.

    Duplicates and blocklist matches are decided once. A record dropped for a reason every run
    decides again (``REVISITED_DROPS``: a licence policy, ``--faces drop``, no caption)
    counts under its latest reason, and not at all once a later run published it or dropped it
    as a duplicate.
    """
    counts: Counter[str] = Counter()
    latest: dict[int, str] = {}  # record id -> its latest revisited reason
    urls: dict[int, str | None] = {}
    settled: list[np.ndarray] = []  # ids of records dropped for good
    for path in sorted((out / DEDUP_LOG_DIR).glob("run-*.parquet")):
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=[c for c in (*ID_COLUMNS, "reason") if c in names])
        again = pc.fill_null(pc.is_in(table.column("reason"), pa.array(REVISITED_DROPS)), False)
        final = table.filter(pc.invert(again))
        counts.update(final.column("reason").to_pylist())
        if final.num_rows and "sha256" in names:
            settled.append(record_ids(final))
        revisited = table.filter(again)
        if revisited.num_rows:
            for rid, url, reason in zip(record_ids(revisited).tolist(), revisited.column("url").to_pylist(),
                                        revisited.column("reason").to_pylist()):
                latest[rid], urls[rid] = reason, url
    if latest:
        ids = np.fromiter(latest, dtype=np.uint64, count=len(latest))
        gone = np.isin(ids, np.concatenate(settled)) if settled else np.zeros(ids.size, dtype=bool)
        tables = [read_index(out, name, False)[0] for name in list_shards(out)]
        if tables:
            gone |= ledger_of(*tables).contains(ids, [urls[i] for i in ids.tolist()])
        counts.update(latest[i] for i, g in zip(ids.tolist(), gone.tolist()) if not g)
    return dict(sorted(counts.items()))


def removed_by_reason(out: Path) -> dict[str, int]:
    counts: Counter[str] = Counter()
    path = out / REMOVALS_FILE
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                counts[json.loads(line).get("reason", "blocklisted")] += 1
            except ValueError:
                continue
    return dict(sorted(counts.items()))


#: Image and page statuses that mean a site's owner (or the law) said no, and capcrawl listened.
RESPECT_STATUSES = ("robots", "noai", "tdmrep", "content_usage", "content_signal", "ai_txt", "blocked", "private_address")


def license_mix(out: Path) -> dict[str, int]:
    """Samples in OUT by licence ("unknown" for none)."""
    counts: Counter[str] = Counter()
    for name in list_shards(out):
        path = out / f"{name}.parquet"
        if path.is_file():
            counts.update(v or "unknown" for v in pq.read_table(path, columns=["license"]).column("license").to_pylist())
    return dict(sorted(counts.items()))


def respected(out: Path, stages: dict[str, Any], totals: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """What was honoured: opt-outs per signal (images and pages), licence decisions, takedowns, faces."""
    crawl = stages.get("crawl") or {}
    images, pages = crawl.get("images", {}), crawl.get("pages", {})
    dropped = totals.get("dropped", {})
    blocklist = out / "blocklist.jsonl"
    return {
        "images_refused": {s: images[s] for s in RESPECT_STATUSES if images.get(s)},
        "pages_refused": {s: pages[s] for s in RESPECT_STATUSES if pages.get(s)},
        "licenses": {
            "policy": options.get("licenses") or None,
            "unknown_dropped": dropped.get("license_unknown", 0),
            "not_allowed_dropped": dropped.get("license_not_allowed", 0),
            "samples_by_license": license_mix(out),
        },
        "takedowns": {
            "blocklist_entries": sum(1 for line in blocklist.read_text().splitlines() if line.strip()) if blocklist.is_file() else 0,
            "removed": sum(totals.get("removed", {}).values()),
            "blocklisted_dropped": dropped.get("blocklisted", 0),
        },
        "faces": {
            "policy": options.get("faces"),
            "detected": bool(((stages.get("filter") or {}).get("faces") or {}).get("detected")),
            "faces_found": totals.get("face_count", 0),
            "samples_by_action": _sum([s.get("face_action", {}) for s in shard_entries(out)]),
            "samples_dropped": dropped.get("faces", 0),
        },
    }


def latest_inputs(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per input directory, the input counts of the latest run over it."""
    inputs: dict[str, dict[str, Any]] = {}
    for r in runs:
        shards = r["stages"]["shards"]
        key = r.get("input_dir") or str(r.get("options", {}).get("work"))
        inputs[key] = {k: shards.get(k) for k in ("input_rows", "status", "not_kept")}
    return inputs


def update_manifest(out: Path, *, run: dict[str, Any] | None = None, removal: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append a run or removal to the manifest, recompute the totals from OUT, write it atomically."""
    old = read_json(out / MANIFEST_FILE, {}) or {}
    runs = old.get("runs", []) + ([run] if run else [])
    removals = old.get("removals", []) + ([removal] if removal else [])
    shards = shard_entries(out)
    inputs = latest_inputs(runs)
    removed = removed_by_reason(out)
    samples = sum(s["samples"] or 0 for s in shards)
    manifest = {
        "capcrawl_version": capcrawl_version(),
        "schema_version": SCHEMA_VERSION,
        "updated_at": datetime.now(timezone.utc).isoformat(),
        "totals": {
            "samples": samples,
            "shards": len(shards),
            "written": samples + sum(removed.values()),
            "input_rows": sum(i["input_rows"] or 0 for i in inputs.values()),
            "status": _sum([i["status"] for i in inputs.values()]),
            "not_kept": _sum([i["not_kept"] for i in inputs.values()]),
            "dropped": dropped_by_reason(out),
            "removed": removed,
            "face_count": sum(s.get("face_count", 0) or 0 for s in shards),
        },
        "stages": runs[-1]["stages"] if runs else {},
        "respected": {},
        **{k: v for k, v in old.items() if k not in ("capcrawl_version", "schema_version", "updated_at", "totals", "stages",
                                                     "shards", "runs", "removals")},
        **(extra or {}),
        "shards": shards,
        "runs": runs,
        "removals": removals,
    }
    manifest["respected"] = respected(out, manifest["stages"], manifest["totals"], runs[-1].get("options", {}) if runs else {})
    write_json(out / MANIFEST_FILE, manifest)
    return manifest
