"""OUT/manifest.json: what OUT holds and how it got there (every shards run and removal)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from crawler.records import SCHEMA_VERSION
from shards.outdir import MANIFEST_FILE, list_shards, read_json, stats_path, tar_path, write_json


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
            }
        )
    return entries


def _sum(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d or {})
    return dict(sorted(total.items()))


def update_manifest(out: Path, *, run: dict[str, Any] | None = None, removal: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append a run or removal to the manifest, refresh shards and totals, write it atomically."""
    old = read_json(out / MANIFEST_FILE, {}) or {}
    runs = old.get("runs", []) + ([run] if run else [])
    removals = old.get("removals", []) + ([removal] if removal else [])
    shards = shard_entries(out)
    shard_stats = [r["stages"]["shards"] for r in runs]
    manifest = {
        "capcrawl_version": capcrawl_version(),
        "schema_version": SCHEMA_VERSION,
        "updated_at": datetime.now(timezone.utc).isoformat(),
        "totals": {
            "samples": sum(s["samples"] or 0 for s in shards),
            "shards": len(shards),
            "input_rows": sum(s["input_rows"] for s in shard_stats),
            "written": sum(s["written"] for s in shard_stats),
            "not_kept": _sum([s["not_kept"] for s in shard_stats]),
            "dropped": _sum([s["dropped"] for s in shard_stats]),
            "removed": _sum([r["removed"] for r in removals]),
        },
        "stages": runs[-1]["stages"] if runs else {},
        "shards": shards,
        "runs": runs,
        "removals": removals,
    }
    write_json(out / MANIFEST_FILE, manifest)
    return manifest
