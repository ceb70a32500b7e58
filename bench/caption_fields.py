"""Counts of the text fields a crawl recorded around its images, for one or more crawls side by side.

    python bench/caption_fields.py WORK [WORK ...] [--examples 8] [--seed 1] [--refetch]

Reads WORK/crawl/part-*.parquet of each work dir and prints one column per dir: rows, ok,
alt present/absent/empty, boilerplate alts (crawler.alttext), figcaption / title_attr /
context non-null, context shorter than 20 chars, chrome-flagged images (the
``chrome`` column when the records have one; with ``--refetch``, the last crawl's pages are
fetched again from their loopback URLs and read with this tree's crawler.extract), and the
images' original sizes. Then the same random images (drawn from the first dir's ok rows) as (alt,
figcaption, context) in every dir.

Made for the GIMP manual (Debian's gimp-help-en) served by bench/serve_dir.py; before and
after a change of crawler/extract.py:

    python bench/serve_dir.py /usr/share/gimp/2.0/help/en --port 8765 &
    flock /tmp/capcrawl-cpu.lock python -m capcrawl crawl http://127.0.0.1:8765/index.html --work W \\
        --allow-private-addresses --max-pages 2000 --max-depth 10
"""

from __future__ import annotations

import argparse
import glob
import ipaddress
import random
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from common.alttext import boilerplate_alt
from crawler.extract import extract_page

COLUMNS = ["url", "page_url", "status", "alt", "title_attr", "figcaption", "context", "original_width", "original_height"]


def read_crawl(work: Path) -> list[dict[str, Any]]:
    """The crawl rows of ``work`` (the columns this report needs, plus ``chrome`` if recorded)."""
    parts = sorted(glob.glob(str(work / "crawl" / "part-*.parquet")))
    if not parts:
        raise SystemExit(f"no crawl parts under {work}/crawl")
    tables = []
    for part in parts:
        names = pq.read_schema(part).names
        tables.append(pq.read_table(part, columns=[c for c in COLUMNS + ["chrome"] if c in names]))
    return pa.concat_tables(tables, promote_options="default").to_pylist()


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def refetch_chrome(rows: list[dict[str, Any]]) -> dict[str, str | None]:
    """Image URL -> chrome reason, from the rows' pages fetched again (loopback only)."""
    out: dict[str, str | None] = {}
    for page in sorted({r["page_url"] for r in rows if r["page_url"]}):
        if not _loopback(page):
            raise SystemExit(f"--refetch reads loopback pages only, not {page}")
        with urllib.request.urlopen(page, timeout=20) as resp:
            html = resp.read().decode("utf-8", "replace")
        for ref in extract_page(html, page).images:
            out.setdefault(ref.url, ref.chrome)
    return out


def counts(rows: list[dict[str, Any]], chrome: dict[str, str | None] | None) -> dict[str, Any]:
    """The report's figures for one crawl."""
    ok = [r for r in rows if r["status"] == "ok"]
    alts = [r["alt"] for r in rows]
    boiler = Counter(b for b in (boilerplate_alt(a) for a in alts) if b)
    ctx = [r["context"] for r in rows if r["context"] is not None]
    if chrome is None and rows and "chrome" in rows[0]:
        chrome = {r["url"]: r["chrome"] for r in rows}
    sizes = [(r["original_width"], r["original_height"]) for r in ok if r["original_width"]]
    out: dict[str, Any] = {
        "rows": len(rows),
        "ok": len(ok),
        "alt present (non-empty)": sum(1 for a in alts if a),
        "alt absent": sum(1 for a in alts if a is None),
        "alt empty": sum(1 for a in alts if a == ""),
        "boilerplate alts": sum(boiler.values()),
        **{f"  {k}": v for k, v in sorted(boiler.items())},
        "figcaption non-null": sum(1 for r in rows if r["figcaption"] is not None),
        "title_attr non-null": sum(1 for r in rows if r["title_attr"] is not None),
        "context non-null": len(ctx),
        "context < 20 chars": sum(1 for c in ctx if len(c) < 20),
        "context median chars": sorted(len(c) for c in ctx)[len(ctx) // 2] if ctx else 0,
        "context == figcaption": sum(1 for r in rows if r["context"] and r["context"] == r["figcaption"]),
    }
    if chrome is None:
        out["chrome-flagged"] = "n/a"
    else:
        reasons = Counter(chrome.get(r["url"]) for r in rows)
        out["chrome-flagged"] = sum(v for k, v in reasons.items() if k)
        out.update({f"  {k}": v for k, v in sorted((k, v) for k, v in reasons.items() if k)})
    out["ok images <= 32 px both sides"] = sum(1 for w, h in sizes if w <= 32 and h <= 32)
    out["ok images <= 100 px both sides"] = sum(1 for w, h in sizes if w <= 100 and h <= 100)
    out["ok images median width"] = sorted(w for w, _ in sizes)[len(sizes) // 2] if sizes else 0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, nargs="+")
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--refetch", action="store_true",
                    help="fetch the last WORK's pages again to count chrome with this tree's rules (loopback only)")
    a = ap.parse_args()
    crawls = [read_crawl(w) for w in a.work]
    chromes: list[dict[str, str | None] | None] = [None] * len(crawls)
    if a.refetch:  # the pages as they are now, read by this tree's code: a figure of the last crawl only
        chromes[-1] = refetch_chrome(crawls[-1])
    tables = [counts(rows, ch) for rows, ch in zip(crawls, chromes)]
    keys = list(dict.fromkeys(k for t in sorted(tables, key=len, reverse=True) for k in t))
    width = max(len(k) for k in keys) + 2
    print("".ljust(width) + "".join(str(w)[-28:].rjust(30) for w in a.work))
    for k in keys:
        print(k.ljust(width) + "".join(str(t.get(k, "")).rjust(30) for t in tables))
    ok_urls = sorted(r["url"] for r in crawls[0] if r["status"] == "ok")
    picks = random.Random(a.seed).sample(ok_urls, min(a.examples, len(ok_urls)))
    by_url = [{r["url"]: r for r in rows} for rows in crawls]
    for url in picks:
        print(f"\n{url}")
        for work, rows in zip(a.work, by_url):
            r = rows.get(url, {})
            print(f"  [{work.name}] alt={r.get('alt')!r}\n    figcaption={r.get('figcaption')!r}\n    context={r.get('context')!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
