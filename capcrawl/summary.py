"""What the command line prints after each stage: short tables of the stage's counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def print_table(title: str, stats: dict[str, Any]) -> None:
    print(f"\n== {title} ==")
    for key, value in flatten(stats):
        print(f"  {key:<40} {value}")


def flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.extend(flatten(v, f"{prefix}{k}/"))
        elif not isinstance(v, list):
            out.append((prefix + str(k), v))
    return out


def print_crawl_summary(stats: dict[str, Any], where: Path) -> None:
    images: dict[str, int] = stats.get("images", {})
    pages: dict[str, int] = stats.get("pages", {})
    print(f"\n== crawl: {where} ==")
    print(f"  {'images':<24} {sum(images.values()):>8}")
    for k, v in sorted(images.items(), key=lambda kv: (kv[0] != "ok", -kv[1])):
        print(f"    {k:<22} {v:>8}")
    if pages:
        print(f"  {'pages':<24} {sum(pages.values()):>8}")
        for k, v in sorted(pages.items(), key=lambda kv: (kv[0] != "ok", -kv[1])):
            print(f"    {k:<22} {v:>8}")
    for k, v in stats.get("skipped", {}).items():
        if v:
            print(f"  skipped {k:<16} {v:>8}")
    for k, v in stats.get("this_run", {}).get("events", {}).items():
        print(f"  event {k:<18} {v:>8}")
    if stats.get("pending"):
        print(f"  {'pending (rerun resumes)':<24} {stats['pending']:>8}")
    if not images.get("ok"):
        print("  no image was fetched: the counts above say why.")


def print_filter_summary(stats: dict[str, Any]) -> None:
    print_table("filter", {k: v for k, v in stats.items() if k not in ("this_run", "schema_version")})


def print_shards_summary(manifest: dict[str, Any], out: Path) -> None:
    run = (manifest.get("runs") or [{}])[-1]
    print_table(f"shards: {out}", run.get("stages", {}).get("shards", {}))
    shards = manifest.get("shards", [])
    print(f"  {'shards in OUT':<40} {len(shards)}")
    print(f"  {'samples in OUT':<40} {manifest.get('totals', {}).get('samples', 0)}")
    if run.get("dedup_log"):
        print(f"  {'dedup log':<40} {out / run['dedup_log']}")


def print_removal_summary(manifest: dict[str, Any]) -> None:
    last = (manifest.get("removals") or [{}])[-1]
    print_table("remove", {k: v for k, v in last.items() if k != "shards_rewritten"})
    print(f"  shards rewritten: {', '.join(last.get('shards_rewritten', [])) or 'none'}")
