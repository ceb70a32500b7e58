"""``capcrawl report OUT [--work WORK]``: a static HTML report of what a run crawled, kept and dropped.

It writes ``OUT/report/index.html`` and ``OUT/report/thumbs/*.jpg``: plain HTML and CSS with
inline SVG charts, no script and nothing fetched from the network, so it opens from disk in
any browser. It reads OUT (manifest, shard parquet files and tars, dedup logs) and, when it
can, WORK (the crawl's and filter's parts: every row, kept or not, with its score and image).
Without WORK (moved, deleted, or another machine) the report says what OUT alone can tell:
the counts the manifest keeps, the kept samples, and the dropped ones without pictures.

Thumbnails are :data:`THUMB_PX` px JPEGs of a bounded sample: :data:`KEPT_THUMBS` kept samples
spread evenly over the shards, and :data:`DROPPED_THUMBS` dropped rows taken in turn from each
reason, so that every reason shows and the report stays a few hundred kilobytes however large
the dataset. Rows OUT's blocklist matches, duplicates of samples taken down, and dropped rows
with detected faces are listed without a picture: the report is often shared, and it must not
republish them (``capcrawl remove`` and ``shards`` rewrite an existing report: :func:`refresh_report`).

The report is built in a temporary directory beside ``OUT/report`` and renamed into place.
"""

from __future__ import annotations

import html
import io
import json
import logging
import math
import shutil
import tarfile
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.errors import ConfigError
from common.layout import CRAWL_DIR, SCORED_DIR, list_parts
from common.records import DropReason, Status
from shards.card import flat_counts, respected_counts
from shards.manifest import license_mix
from shards.outdir import DEDUP_LOG_DIR, MANIFEST_FILE, REMOVALS_FILE, list_shards, parquet_path, read_json, tar_path

log = logging.getLogger(__name__)

REPORT_DIR = "report"
THUMB_DIR = "thumbs"
THUMB_PX = 128
KEPT_THUMBS = 48
DROPPED_THUMBS = 48
TOP_HOSTS = 15
HIST_BINS = 20
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif")
_SAMPLE_COLUMNS = ("key", "url", "page_url", "caption", "caption_source", "clip_score", "license", "width", "height")
_ROW_COLUMNS = ("url", "final_url", "page_url", "caption", "caption_source", "clip_score", "kept", "filter_reason",
                "license", "status", "face_bboxes", "sha256", "phash")
#: Respect and safety statuses, then the groups of the rest (README "Image statuses").
_STATUS_GROUPS = (
    ("refused: respect and safety", {s.value for s in (Status.ROBOTS, Status.NOAI, Status.TDMREP, Status.CONTENT_USAGE,
                                                       Status.CONTENT_SIGNAL, Status.AI_TXT, Status.PRIVATE_ADDRESS,
                                                       Status.BLOCKED, Status.OFFSITE)}),
    ("content", {s.value for s in (Status.NOT_AN_IMAGE, Status.CORRUPT, Status.TOO_SMALL, Status.TOO_LARGE,
                                   Status.DECOMPRESSION_BOMB, Status.BAD_URL)}),
)


# --- what is read --------------------------------------------------------------------------


@dataclass
class Entry:
    """One sample or dropped row shown in a gallery."""

    caption: str | None
    source: str | None
    score: float | None
    license: str | None
    url: str | None
    page_url: str | None
    reason: str | None = None
    detail: str | None = None
    image: bytes | None = None
    withheld: str | None = None  # why no picture is shown
    thumb: str | None = None  # file name under thumbs/, once written


@dataclass
class ReportData:
    """Everything the page shows."""

    out: Path
    work: Path | None
    manifest: dict[str, Any]
    no_filter: bool
    kept_total: int = 0
    kept: list[Entry] = field(default_factory=list)
    dropped: list[Entry] = field(default_factory=list)
    dropped_total: int = 0
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # source -> kept/dropped -> scores
    hosts: list[tuple[str, int, int, int]] = field(default_factory=list)  # host, found, ok, samples
    licences: dict[str, int] = field(default_factory=dict)


def find_work(out: Path, manifest: dict[str, Any], work: Path | None) -> Path | None:
    """WORK as given, else the one the latest shards run recorded (when it still exists)."""
    if work is not None:
        if not Path(work).is_dir():
            raise ConfigError(f"--work {work} is not a directory; pass the WORK of the run, or leave --work out.")
        return Path(work)
    for run in reversed(manifest.get("runs") or []):
        recorded = (run.get("options") or {}).get("work")
        if recorded and Path(recorded).is_dir():
            return Path(recorded)
    return None


def _read(path: Path, columns: Iterable[str]) -> pa.Table:
    names = set(pq.read_schema(path).names)
    return pq.ParquetFile(path).read(columns=[c for c in columns if c in names])


def _column(table: pa.Table, name: str, type_: pa.DataType = pa.string()) -> pa.ChunkedArray:
    """A column of ``table``, or nulls when an older file lacks it."""
    return table.column(name) if name in table.column_names else pa.chunked_array([pa.nulls(table.num_rows, type_)])


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted({int(i * n / k) for i in range(k)})


class Scores:
    """CLIP scores per caption source, kept and dropped, gathered a column at a time."""

    def __init__(self) -> None:
        self._parts: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: {"kept": [], "dropped": []})

    def add(self, table: pa.Table, kept: np.ndarray) -> None:
        """Add the scored rows of ``table`` (columns caption_source, clip_score); ``kept`` per row."""
        score = _column(table, "clip_score", pa.float32())
        valid = pc.is_valid(score).to_numpy(zero_copy_only=False)
        values = pc.fill_null(score, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
        sources = np.array(pc.fill_null(_column(table, "caption_source"), "none").to_pylist() if table.num_rows else [], dtype=object)
        for src in set(sources[valid].tolist()):
            mine = valid & (sources == src)
            self._parts[src]["kept"].append(values[mine & kept])
            self._parts[src]["dropped"].append(values[mine & ~kept])

    def by_source(self) -> dict[str, dict[str, np.ndarray]]:
        """source -> kept/dropped -> all its scores, most scored source first."""
        out = {src: {k: np.concatenate(v) if v else np.zeros(0) for k, v in d.items()} for src, d in self._parts.items()}
        return dict(sorted(out.items(), key=lambda kv: -(kv[1]["kept"].size + kv[1]["dropped"].size)))


def kept_samples(out: Path, limit: int, scores: Scores) -> tuple[int, list[Entry]]:
    """Total samples in OUT and a spread of ``limit`` of them with their images; adds their scores to ``scores``."""
    shards = [n for n in list_shards(out) if parquet_path(out, n).is_file()]
    sizes = [pq.ParquetFile(parquet_path(out, n)).metadata.num_rows for n in shards]
    offsets = np.cumsum([0] + sizes)
    picked: dict[str, list[int]] = defaultdict(list)
    for g in spread(int(offsets[-1]), limit):
        s = int(np.searchsorted(offsets, g, side="right")) - 1
        picked[shards[s]].append(g - int(offsets[s]))
    rows: list[tuple[str, dict[str, Any]]] = []
    for name in shards:
        table = _read(parquet_path(out, name), _SAMPLE_COLUMNS)
        scores.add(table, np.ones(table.num_rows, dtype=bool))
        if picked.get(name):
            rows.extend((name, r) for r in table.take(pa.array(picked[name], pa.int64())).to_pylist())
    wanted: dict[str, set[str]] = defaultdict(set)
    for shard, r in rows:
        wanted[shard].add(r["key"])
    images = tar_images(out, wanted)
    entries = [Entry(r.get("caption"), r.get("caption_source"), r.get("clip_score"), r.get("license"), r.get("url"),
                     r.get("page_url"), detail=r["key"], image=images.get(r["key"])) for _, r in rows]
    return int(offsets[-1]), entries


def tar_images(out: Path, wanted: dict[str, set[str]]) -> dict[str, bytes]:
    """Image bytes of the ``wanted`` keys of each shard, read from its tar."""
    found: dict[str, bytes] = {}
    for shard, keys in wanted.items():
        try:
            with tarfile.open(tar_path(out, shard), mode="r:") as tar:
                for member in tar:
                    key, _, ext = member.name.rpartition("/")[2].partition(".")
                    if key in keys and ("." + ext.lower()) in _IMAGE_EXTS and member.isfile():
                        found[key] = tar.extractfile(member).read()
        except (OSError, tarfile.TarError) as e:
            log.warning("cannot read shard %s for thumbnails: %s", shard, e)
    return found


def _withheld(row: dict[str, Any], reason: str | None) -> str | None:
    if reason == DropReason.BLOCKLISTED.value:
        return "taken down"
    if row.get("face_bboxes"):
        return "faces"
    return None


#: A dropped row: its part (None when the part is not at hand), its row there, what is known of it, its reason.
Dropped = tuple[Path | None, int | None, dict[str, Any], str]


@dataclass
class DroppedRows:
    """Dropped rows by reason: every one counted, the first ``limit`` of each kept for the gallery."""

    limit: int
    counts: Counter = field(default_factory=Counter)
    first: dict[str, list[Dropped]] = field(default_factory=lambda: defaultdict(list))

    def room(self, reason: str) -> int:
        return self.limit - len(self.first[reason])


def filter_rows(work: Path, dropped: DroppedRows, scores: Scores) -> None:
    """Rows the filter did not keep, and every scored row's score, from WORK's scored parts."""
    for part in list_parts(work / SCORED_DIR):
        table = _read(part, ("caption_source", "clip_score", "kept", "filter_reason"))
        kept = pc.fill_null(_column(table, "kept", pa.bool_()), False).to_numpy(zero_copy_only=False)
        scores.add(table, kept)
        rows = np.flatnonzero(~kept)
        reasons = _column(table, "filter_reason").take(pa.array(rows, pa.int64())).to_pylist()
        for i, reason in zip(rows.tolist(), reasons):
            reason = reason or "not_kept"
            dropped.counts[reason] += 1
            if dropped.room(reason) > 0:
                dropped.first[reason].append((part, i, {}, reason))


def dedup_rows(out: Path, manifest: dict[str, Any], work: Path | None, dropped: DroppedRows) -> None:
    """Rows the shards stage left out, from OUT's dedup logs (their parts found through the runs' input dirs)."""
    input_dirs = {Path(r["dedup_log"]).name: r.get("input_dir") for r in manifest.get("runs") or [] if r.get("dedup_log")}
    for path in sorted((out / DEDUP_LOG_DIR).glob("run-*.parquet")):
        input_dir = input_dirs.get(path.name)
        base = Path(input_dir) if input_dir and Path(input_dir).is_dir() else None
        if base is None and work is not None:
            base = work / (CRAWL_DIR if manifest_no_filter(manifest) else SCORED_DIR)
        table = pq.read_table(path)
        reasons = table.column("reason").to_pylist()
        take = []
        for i, reason in enumerate(reasons):
            dropped.counts[reason] += 1
            if dropped.room(reason) - sum(1 for j in take if reasons[j] == reason) > 0:
                take.append(i)
        for r in table.take(pa.array(take, pa.int64())).to_pylist():
            part = base / r["part"] if base is not None and r.get("part") else None
            part = part if part is not None and part.is_file() else None
            dropped.first[r["reason"]].append((part, r.get("row") if part is not None else None, r, r["reason"]))


def manifest_no_filter(manifest: dict[str, Any]) -> bool:
    run = (manifest.get("runs") or [{}])[-1]
    return bool((run.get("options") or {}).get("no_filter"))


def round_robin(groups: dict[str, list[Any]], limit: int) -> list[Any]:
    """Up to ``limit`` items, one from each group in turn (groups in name order)."""
    out: list[Any] = []
    queues = [list(reversed(groups[k])) for k in sorted(groups)]
    while len(out) < limit and any(queues):
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop())
    return out


def part_images(wanted: dict[Path, set[int]]) -> dict[tuple[Path, int], bytes]:
    """Image bytes of the wanted rows of each part (one part read at a time)."""
    found: dict[tuple[Path, int], bytes] = {}
    for part, rows in wanted.items():
        try:
            images = pq.ParquetFile(part).read(columns=["image"]).column("image")
        except (OSError, KeyError, pa.ArrowException) as e:
            log.warning("cannot read images of %s for thumbnails: %s", part, e)
            continue
        for i in rows:
            if 0 <= i < len(images) and images[i].is_valid:
                found[(part, i)] = images[i].as_py()
    return found


def dropped_entries(out: Path, manifest: dict[str, Any], work: Path | None, no_filter: bool, limit: int,
                    scores: Scores) -> tuple[int, list[Entry]]:
    """Every dropped row's count and a sample of them, taken in turn from each reason, with images from WORK."""
    dropped = DroppedRows(limit)
    if work is not None and not no_filter:
        filter_rows(work, dropped, scores)
    dedup_rows(out, manifest, work, dropped)
    chosen: list[Dropped] = round_robin(dropped.first, limit)
    details = _part_details({(p, int(i)) for p, i, _, _ in chosen if p is not None and i is not None})
    infos = [{**details.get((p, int(i)), {}), **r} if p is not None and i is not None else r for p, i, r, _ in chosen]
    taken_down = _taken_down(out, infos)
    withheld = [_withheld(info, reason) or ("taken down" if blocked else None)
                for info, (_, _, _, reason), blocked in zip(infos, chosen, taken_down)]
    wanted: dict[Path, set[int]] = defaultdict(set)
    for (part, i, _, _), why in zip(chosen, withheld):
        if part is not None and i is not None and why is None:
            wanted[part].add(int(i))
    images = part_images(wanted)
    entries = []
    for (part, i, r, reason), info, why in zip(chosen, infos, withheld):
        if why == "taken down":  # nothing of it: not its text, its links, nor the takedown entry that matched it
            entries.append(Entry(None, None, None, None, None, None, reason=reason, withheld=why))
            continue
        dup = r.get("duplicate_of_key") or r.get("duplicate_of_url")
        entries.append(Entry(info.get("caption"), info.get("caption_source"), info.get("clip_score"), info.get("license"),
                             info.get("url"), info.get("page_url"), reason=reason,
                             detail=f"duplicate of {dup}" if dup else r.get("detail"),
                             image=images.get((part, int(i))) if part is not None and i is not None else None,
                             withheld=why or (None if part is not None else "WORK not available")))
    return sum(dropped.counts.values()), entries


def _taken_down(out: Path, infos: list[dict[str, Any]]) -> list[bool]:
    """Per row: matched by OUT's blocklist, or a duplicate of a sample that was taken down."""
    from shards.blocklist import Blocklist

    columns = ("url", "final_url", "page_url", "sha256", "phash")
    table = pa.table({c: pa.array([info.get(c) for info in infos], pa.string()) for c in columns})
    blocked = Blocklist.load(out).match(table)
    removed = removed_keys(out)
    return [b is not None or info.get("duplicate_of_key") in removed for b, info in zip(blocked, infos)]


def removed_keys(out: Path) -> set[str]:
    """Keys of the samples ``capcrawl remove`` took out of OUT."""
    keys: set[str] = set()
    path = out / REMOVALS_FILE
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                keys.add(json.loads(line)["key"])
            except (ValueError, KeyError, TypeError):
                continue
    return keys


def _part_details(wanted: set[tuple[Path, int]]) -> dict[tuple[Path, int], dict[str, Any]]:
    """What the gallery shows of the wanted rows, read from their parts."""
    by_part: dict[Path, list[int]] = defaultdict(list)
    for part, i in wanted:
        by_part[part].append(i)
    out: dict[tuple[Path, int], dict[str, Any]] = {}
    for part, rows in by_part.items():
        table = _read(part, _ROW_COLUMNS)
        rows = [i for i in rows if 0 <= i < table.num_rows]
        for i, record in zip(rows, table.take(pa.array(rows, pa.int64())).to_pylist()):
            out[(part, i)] = record
    return out


#: The host of an absolute URL (userinfo and port left out), as Arrow's regex engine reads it.
_HOST = r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(?P<host>\[[^\]]*\]|[^:/?#]*)"


def host_counts(urls: pa.ChunkedArray | pa.Array) -> Counter:
    """How many of ``urls`` are on each host (``?`` for what is no absolute URL)."""
    if len(urls) == 0:
        return Counter()
    hosts = pc.struct_field(pc.extract_regex(urls, _HOST), [0])
    hosts = pc.fill_null(pc.utf8_lower(hosts), "?")
    counts = pc.value_counts(hosts).to_pylist()
    return Counter({c["values"] or "?": c["counts"] for c in counts})


def top_hosts(out: Path, work: Path | None, limit: int = TOP_HOSTS) -> list[tuple[str, int, int, int]]:
    """(host, image URLs found, fetched ok, samples in OUT), most samples first."""
    found: Counter[str] = Counter()
    ok: Counter[str] = Counter()
    if work is not None:
        for part in list_parts(work / CRAWL_DIR):
            t = _read(part, ("url", "status"))
            found.update(host_counts(t.column("url")))
            ok.update(host_counts(t.column("url").filter(pc.equal(t.column("status"), Status.OK.value))))
    samples: Counter[str] = Counter()
    for name in list_shards(out):
        if parquet_path(out, name).is_file():
            samples.update(host_counts(_read(parquet_path(out, name), ("url",)).column("url")))
    ranked = sorted(set(found) | set(samples), key=lambda h: (-samples[h], -found[h], h))[:limit]
    return [(h, found[h], ok[h], samples[h]) for h in ranked]


def gather(out: Path, work: Path | None = None) -> ReportData:
    """Read what the report shows from OUT (and WORK)."""
    manifest = read_json(out / MANIFEST_FILE)
    if not isinstance(manifest, dict):
        raise ConfigError(f"{out} has no {MANIFEST_FILE}; pass the OUT of a `capcrawl shards` or `capcrawl run`.")
    work = find_work(out, manifest, work)
    no_filter = manifest_no_filter(manifest)
    data = ReportData(out, work, manifest, no_filter)
    kept_scores, filter_scores = Scores(), Scores()
    data.kept_total, data.kept = kept_samples(out, KEPT_THUMBS, kept_scores)
    data.dropped_total, data.dropped = dropped_entries(out, manifest, work, no_filter, DROPPED_THUMBS, filter_scores)
    # the filter's view (every scored row) when WORK has it, else the published samples' scores
    data.scores = filter_scores.by_source() or kept_scores.by_source()
    data.hosts = top_hosts(out, work)
    data.licences = license_mix(out)
    return data


# --- thumbnails ----------------------------------------------------------------------------


def thumbnail(image: bytes, px: int = THUMB_PX) -> bytes | None:
    """A JPEG no larger than ``px`` on its longer side; None when the bytes do not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image)) as im:
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=80)
            return buf.getvalue()
    except (OSError, UnidentifiedImageError, ValueError) as e:
        log.warning("cannot make a thumbnail: %s", e)
        return None


def write_thumbs(entries: list[Entry], directory: Path, prefix: str) -> None:
    for n, e in enumerate(entries):
        if e.image is None or e.withheld:
            continue
        data = thumbnail(e.image)
        if data is not None:
            e.thumb = f"{prefix}{n:03d}.jpg"
            (directory / e.thumb).write_bytes(data)


# --- HTML ------------------------------------------------------------------------------------

_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde2ea; --bg:#f6f7f9; --kept:#2f8f4e; --drop:#c4443b; --accent:#3559c7; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { background:#1d2330; color:#fff; padding:18px 28px; }
header h1 { margin:0 0 4px; font-size:20px; }
header p { margin:0; color:#c9d0dd; font-size:13px; word-break:break-all; }
nav { position:sticky; top:0; background:#fff; border-bottom:1px solid var(--line); padding:8px 28px; z-index:1; }
nav a { margin-right:16px; color:var(--accent); text-decoration:none; font-weight:600; font-size:13px; }
main { max-width:1280px; margin:0 auto; padding:8px 28px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:18px 0; }
h2 { margin:0 0 12px; font-size:17px; }
h3 { margin:14px 0 8px; font-size:14px; color:var(--muted); }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(128px, 1fr)); gap:10px; }
.card { border:1px solid var(--line); border-radius:6px; padding:10px 12px; background:#fbfcfd; }
.card b { display:block; font-size:22px; }
.card span { color:var(--muted); font-size:12px; }
.cols { display:grid; grid-template-columns:repeat(auto-fit, minmax(300px, 1fr)); gap:18px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; width:1%; padding-left:16px; }
.bar { height:10px; background:var(--accent); border-radius:2px; min-width:1px; }
.bar.kept { background:var(--kept); } .bar.drop { background:var(--drop); }
.hists { display:grid; grid-template-columns:repeat(auto-fill, minmax(330px, 1fr)); gap:14px; }
.hist { border:1px solid var(--line); border-radius:6px; padding:8px; }
.hist h3 { margin:0 0 4px; }
.legend i { display:inline-block; width:10px; height:10px; margin:0 4px 0 10px; border-radius:2px; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill, minmax(150px, 1fr)); gap:12px; }
figure { margin:0; border:1px solid var(--line); border-radius:6px; padding:8px; background:#fbfcfd; font-size:12px; overflow-wrap:anywhere; }
figure img, figure .noimg { display:block; width:128px; height:128px; object-fit:contain; margin:0 auto 6px; background:#eef1f5; }
figure .noimg { display:flex; align-items:center; justify-content:center; color:var(--muted); text-align:center; padding:6px; }
figcaption .cap { font-weight:600; display:-webkit-box; -webkit-line-clamp:3; -webkit-box-orient:vertical; overflow:hidden; }
figcaption .meta { color:var(--muted); }
.badge { display:inline-block; background:var(--drop); color:#fff; border-radius:3px; padding:0 5px; font-size:11px; }
.note { color:var(--muted); font-size:12px; }
a { color:var(--accent); }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else _e(value)


def counts_table(counts: dict[str, Any], label: str, bar: str = "") -> str:
    """A table of counts, largest first, each with a bar."""
    items = sorted(((k, v) for k, v in (counts or {}).items() if isinstance(v, (int, float))), key=lambda kv: (-kv[1], kv[0]))
    if not items:
        return "<p class='note'>none</p>"
    top = max(v for _, v in items) or 1
    rows = "".join(f"<tr><td>{_e(k)}</td><td class='n'>{_n(v)}</td>"
                   f"<td style='width:45%'><div class='bar {bar}' style='width:{100 * v / top:.1f}%'></div></td></tr>"
                   for k, v in items)
    return f"<table><tr><th>{_e(label)}</th><th class='n'>count</th><th></th></tr>{rows}</table>"


def status_tables(images: dict[str, int]) -> str:
    """Image statuses in the README's groups: ok, refused, transport, content."""
    groups: dict[str, dict[str, int]] = {"fetched": {}, "transport": {}}
    groups.update({name: {} for name, _ in _STATUS_GROUPS})
    for status, n in (images or {}).items():
        if status == Status.OK.value:
            groups["fetched"][status] = n
            continue
        name = next((g for g, members in _STATUS_GROUPS if status in members), "transport")
        groups[name][status] = n
    order = ["fetched", _STATUS_GROUPS[0][0], "transport", _STATUS_GROUPS[1][0]]
    return "".join(f"<h3>{_e(g)}</h3>{counts_table(groups[g], 'status', 'kept' if g == 'fetched' else 'drop')}"
                   for g in order if groups[g])


def histogram_svg(kept: np.ndarray, dropped: np.ndarray, threshold: float | None, width: int = 320, height: int = 120) -> str:
    """Kept and dropped CLIP scores side by side in :data:`HIST_BINS` bins, with the threshold as a line."""
    values = np.concatenate([kept, dropped, [threshold] if threshold is not None else []])
    lo = math.floor(values.min() * 10) / 10 if values.size else 0.0
    hi = math.ceil(values.max() * 10) / 10 if values.size else 1.0
    if hi <= lo:
        hi = lo + 0.1
    step = (hi - lo) / HIST_BINS
    bk = np.histogram(kept, bins=HIST_BINS, range=(lo, hi))[0].tolist()
    bd = np.histogram(dropped, bins=HIST_BINS, range=(lo, hi))[0].tolist()
    top = max(bk + bd + [1])
    pad_l, pad_t, pad_b = 28, 16, 18  # room for the axis labels and the threshold's label
    plot_h, plot_w = height - pad_t - pad_b, width - pad_l - 4
    bw = plot_w / HIST_BINS
    parts = [f"<svg viewBox='0 0 {width} {height}' width='100%' role='img' aria-label='CLIP score histogram'>"
             f"<rect x='0' y='0' width='{width}' height='{height}' fill='#fff'/>"]
    base = pad_t + plot_h
    for i in range(HIST_BINS):
        x = pad_l + i * bw
        for j, (count, colour) in enumerate(((bk[i], "#2f8f4e"), (bd[i], "#c4443b"))):
            h = plot_h * count / top
            if count:
                parts.append(f"<rect x='{x + j * bw / 2:.1f}' y='{base - h:.1f}' width='{bw / 2 - 0.5:.1f}' "
                             f"height='{h:.1f}' fill='{colour}'><title>{lo + i * step:.2f}-{lo + (i + 1) * step:.2f}: "
                             f"{count} {'kept' if j == 0 else 'dropped'}</title></rect>")
    parts.append(f"<line x1='{pad_l}' y1='{base}' x2='{width - 4}' y2='{base}' stroke='#888'/>")
    parts.append(f"<text x='{pad_l - 4}' y='{pad_t + 8}' font-size='10' text-anchor='end' fill='#5b6475'>{top}</text>")
    parts.append(f"<text x='{pad_l}' y='{height - 4}' font-size='10' fill='#5b6475'>{lo:.1f}</text>")
    parts.append(f"<text x='{width - 4}' y='{height - 4}' font-size='10' text-anchor='end' fill='#5b6475'>{hi:.1f}</text>")
    if threshold is not None:
        tx = pad_l + (threshold - lo) / (hi - lo) * plot_w
        anchor = "end" if tx > pad_l + 0.7 * plot_w else "start"
        parts.append(f"<line x1='{tx:.1f}' y1='{pad_t - 2}' x2='{tx:.1f}' y2='{base}' stroke='#1d2330' stroke-dasharray='3,2'/>"
                     f"<text x='{tx:.1f}' y='11' font-size='10' text-anchor='{anchor}' fill='#1d2330'>threshold {threshold:g}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _link(url: str | None, text: str) -> str:
    if not url or not url.startswith(("http://", "https://")):
        return ""
    return f"<a href='{_e(url)}' target='_blank' rel='noopener noreferrer'>{_e(text)}</a>"


def figure(e: Entry, kind: str) -> str:
    """One gallery tile: thumbnail (or why there is none), caption, source, score, licence, links."""
    if e.thumb:
        pic = f"<img class='thumb' data-kind='{kind}' src='{THUMB_DIR}/{_e(e.thumb)}' alt='{_e(e.caption)}' width='128' height='128'>"
    else:
        pic = f"<div class='noimg'>{_e('not shown: ' + e.withheld if e.withheld else 'no image')}</div>"
    score = f"{e.score:.3f}" if isinstance(e.score, (int, float)) else "no score"
    reason = f"<span class='badge'>{_e(e.reason)}</span> " if e.reason else ""
    detail = f"<div class='meta'>{_e(e.detail)}</div>" if e.detail else ""
    links = " · ".join(x for x in (_link(e.page_url, "page"), _link(e.url, "image")) if x)
    return (f"<figure>{pic}<figcaption>{reason}<div class='cap'>{_e(e.caption) or '<i>no caption</i>'}</div>"
            f"<div class='meta'>{_e(e.source or '-')} · {score} · {_e(e.license or 'no licence')}</div>{detail}"
            f"<div class='meta'>{links}</div></figcaption></figure>")


def _cards(items: list[tuple[str, Any]]) -> str:
    return "<div class='cards'>" + "".join(f"<div class='card'><b>{_n(v)}</b><span>{_e(k)}</span></div>" for k, v in items) + "</div>"


def render(data: ReportData) -> str:
    """The whole page."""
    m = data.manifest
    totals = m.get("totals") or {}
    stages = m.get("stages") or {}
    crawl, filt = stages.get("crawl") or {}, stages.get("filter") or {}
    images, pages = crawl.get("images") or {}, crawl.get("pages") or {}
    not_kept = filt.get("filter_reason") or totals.get("not_kept") or {}
    dropped = totals.get("dropped") or {}
    removed = totals.get("removed") or {}
    threshold = filt.get("threshold")
    overview = _cards([
        ("pages crawled", sum(pages.values()) if pages else "-"),
        ("image URLs found", sum(images.values()) if images else "-"),
        ("images fetched", images.get(Status.OK.value, "-")),
        ("kept by the filter", "no filter" if data.no_filter else filt.get("kept", "-")),
        ("duplicates removed", sum(v for k, v in dropped.items() if "duplicate" in k)),
        ("samples in OUT", totals.get("samples", 0)),
        ("shards", totals.get("shards", 0)),
        ("taken down", sum(removed.values())),
    ])
    work_note = (f"WORK: {_e(data.work)}" if data.work else
                 "WORK not found: counts come from the manifest, dropped rows have no pictures (pass --work WORK)")
    sections = [
        f"<section id='overview'><h2>Overview</h2>{overview}</section>",
        f"<section id='crawl'><h2>Crawl</h2><div class='cols'><div><h3>images by status</h3>{status_tables(images)}</div>"
        f"<div><h3>pages by status</h3>{counts_table(pages, 'status')}</div></div></section>",
        _filter_section(data, not_kept, threshold),
        f"<section id='dedup'><h2>Shards: duplicates and other drops</h2><div class='cols'>"
        f"<div><h3>left out of the shards, by reason</h3>{counts_table(dropped, 'reason', 'drop')}</div>"
        f"<div><h3>taken down after publication</h3>{counts_table(removed, 'reason', 'drop')}</div></div></section>",
        f"<section id='licences'><h2>Licences and respect</h2><div class='cols'>"
        f"<div><h3>samples by licence</h3>{counts_table(data.licences, 'licence', 'kept')}</div>"
        f"<div><h3>opt-outs and refusals honoured</h3>{_respect_tables(respected_counts(m))}</div></div></section>",
        f"<section id='hosts'><h2>Top hosts</h2>{_hosts_table(data.hosts)}</section>",
        _gallery("kept", f"Kept samples ({len(data.kept)} of {data.kept_total:,}, spread over the shards)", data.kept),
        _gallery("dropped", f"Dropped ({len(data.dropped)} of {data.dropped_total:,}, taken in turn from each reason)",
                 data.dropped),
    ]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f"<a href='#{i}'>{t}</a>" for i, t in (("overview", "Overview"), ("crawl", "Crawl"), ("filter", "Filter"),
                                                          ("dedup", "Duplicates"), ("licences", "Licences"),
                                                          ("hosts", "Hosts"), ("kept", "Kept"), ("dropped", "Dropped")))
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src 'self' data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>capcrawl report: {_e(data.out.name)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>capcrawl report: {_e(data.out.name)}</h1><p>OUT: {_e(data.out)} · {work_note} · "
            f"capcrawl {_e(m.get('capcrawl_version'))} · generated {generated}</p></header>"
            f"<nav>{nav}</nav><main>{''.join(sections)}</main></body></html>\n")


def _filter_section(data: ReportData, not_kept: dict[str, int], threshold: float | None) -> str:
    filt = (data.manifest.get("stages") or {}).get("filter") or {}
    if data.no_filter:
        body = "<p class='note'>This OUT was written with --no-filter: captions are the alt text or the list's caption column, no CLIP scores.</p>"
    else:
        model = f"<p class='note'>model {_e(filt.get('model'))} · weights {_e(filt.get('pretrained'))} · threshold {_e(threshold)}</p>" if filt else ""
        hists = "".join(
            f"<div class='hist'><h3>{_e(src)}: {len(s['kept'])} kept, {len(s['dropped'])} dropped</h3>"
            f"{histogram_svg(s['kept'], s['dropped'], threshold)}</div>"
            for src, s in data.scores.items())
        scope = "" if data.work else "<p class='note'>Without WORK only the published samples' scores are known.</p>"
        body = (f"{model}<div class='cols'><div><h3>kept by the filter</h3>{counts_table({'kept': filt.get('kept', 0)} if filt else {}, 'rows', 'kept')}</div>"
                f"<div><h3>not kept, by reason</h3>{counts_table(not_kept, 'reason', 'drop')}</div></div>"
                f"<h3>CLIP scores by caption source <span class='legend'><i style='background:#2f8f4e'></i>kept"
                f"<i style='background:#c4443b'></i>dropped</span></h3>{scope}<div class='hists'>{hists or '<p class=note>no scores</p>'}</div>")
    return f"<section id='filter'><h2>Filter</h2>{body}</section>"


def _respect_tables(respected: dict[str, Any]) -> str:
    """The manifest's ``respected`` section (or the crawl's refusals): one table per group, its settings as notes."""
    if not respected:
        return "<p class='note'>none</p>"
    loose = {k: v for k, v in respected.items() if not isinstance(v, dict)}
    groups = {k: v for k, v in respected.items() if isinstance(v, dict)}
    html_parts = [counts_table(flat_counts(loose, zeros=True), "signal", "drop")] if loose else []
    for name, group in groups.items():
        counts = flat_counts(group, zeros=True)
        notes = ", ".join(f"{k}: {v}" for k, v in group.items() if not isinstance(v, (dict, int, float)) or isinstance(v, bool))
        html_parts.append(f"<h3>{_e(name.replace('_', ' '))}</h3>" + (f"<p class='note'>{_e(notes)}</p>" if notes else "")
                          + counts_table(counts, "what", "drop"))
    return "".join(html_parts)


def _hosts_table(hosts: list[tuple[str, int, int, int]]) -> str:
    if not hosts:
        return "<p class='note'>none</p>"
    rows = "".join(f"<tr><td>{_e(h)}</td><td class='n'>{_n(f)}</td><td class='n'>{_n(o)}</td><td class='n'>{_n(s)}</td></tr>"
                   for h, f, o, s in hosts)
    return f"<table><tr><th>host</th><th class='n'>image URLs found</th><th class='n'>fetched</th><th class='n'>samples</th></tr>{rows}</table>"


def _gallery(kind: str, title: str, entries: list[Entry]) -> str:
    tiles = "".join(figure(e, kind) for e in entries) or "<p class='note'>none</p>"
    shown = sum(1 for e in entries if e.thumb)
    return f"<section id='{kind}' data-thumbs='{shown}'><h2>{_e(title)}</h2><div class='gallery'>{tiles}</div></section>"


# --- writing ---------------------------------------------------------------------------------


def write_report(out: str | Path, work: str | Path | None = None) -> Path:
    """Build OUT/report/ (index.html + thumbs/) and return the path of index.html."""
    out = Path(out).resolve()
    if not out.is_dir():
        raise ConfigError(f"{out} is not a directory; pass the OUT of a `capcrawl shards` or `capcrawl run`.")
    data = gather(out, Path(work) if work is not None else None)
    final = out / REPORT_DIR
    for stale in out.glob(f".{REPORT_DIR}.*"):  # left by a report that was killed
        if stale.is_dir() and stale.name.endswith((".tmp", ".old")):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{REPORT_DIR}.", suffix=".tmp", dir=out))
    try:
        (tmp / THUMB_DIR).mkdir()
        write_thumbs(data.kept, tmp / THUMB_DIR, "k")
        write_thumbs(data.dropped, tmp / THUMB_DIR, "d")
        (tmp / "index.html").write_text(render(data), encoding="utf-8")
        tmp.chmod(0o777 & ~_umask())
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote the report %s", final / "index.html")
    return final / "index.html"


def refresh_report(out: str | Path) -> Path | None:
    """Rewrite OUT's report if it has one (after ``shards`` or ``remove`` changed OUT); its path, or None."""
    return write_report(out) if (Path(out) / REPORT_DIR).is_dir() else None


def _umask() -> int:
    from common.fileio import current_umask

    return current_umask()


def _replace_dir(new: Path, final: Path) -> None:
    """Put ``new`` where ``final`` is: the old report is moved aside, then removed."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        old.rmdir()
        final.rename(old)
    new.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
