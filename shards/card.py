"""OUT/README.md: the dataset card that makes OUT loadable and publishable as it stands.

Its YAML front matter tells Hugging Face ``datasets`` how to read OUT, so that
``datasets.load_dataset("OUT")`` needs no arguments: the shards (``*.tar``, WebDataset) are
the data files, and the features are explicit. Without them the ``webdataset`` builder
infers the ``.json`` fields' types from the first five samples, where ``title_attr`` or
``figcaption`` are often null, and then fails on the first later sample with text
(``Couldn't cast array of type string to null``). The feature types are derived from
:data:`common.records.SAMPLE_SCHEMA`, so they cannot drift from what the writer puts in the
json; timestamps are ISO strings there (:func:`shards.writer.sample_json`), so they are
strings here.

The body is the dataset's datasheet: how it was built, what it holds, what was honoured and
how to ask for a takedown. Everything comes from the manifest, the stats files of the stages
(as the manifest keeps them) and the shards' licence column (:func:`shards.manifest.license_mix`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from common.fileio import atomic_write_bytes
from common.records import SAMPLE_SCHEMA, Status
from shards.manifest import license_mix
from shards.outdir import list_shards, read_json, stats_path
from shards.writer import image_extension

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
#: Crawl statuses that mean the site's owner (or a takedown, or the safety rules) said no.
RESPECT_STATUSES = (
    Status.ROBOTS, Status.NOAI, Status.TDMREP, Status.CONTENT_USAGE, Status.CONTENT_SIGNAL, Status.AI_TXT,
    Status.PRIVATE_ADDRESS, Status.BLOCKED,
)
_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


# --- features: SAMPLE_SCHEMA as `datasets` reads it from YAML ---------------------------


def _dtype(t: pa.DataType) -> str:
    """The ``datasets`` dtype name of a scalar Arrow type, as the sample's json carries it."""
    if pa.types.is_temporal(t):
        return "string"  # sample_json writes timestamps as ISO strings
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return str(t)  # int32, int64, float, double -> datasets' names below
    raise TypeError(f"no datasets feature for Arrow type {t}")


_FLOAT_NAMES = {"float": "float32", "double": "float64", "halffloat": "float16"}


def feature_of(t: pa.DataType) -> Any:
    """The YAML form of one Arrow type: a dtype name, ``{"struct": [...]}`` or ``{"list": ..., "length": n}``."""
    if pa.types.is_struct(t):
        return {"struct": [named_feature(t.field(i).name, t.field(i).type) for i in range(t.num_fields)]}
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        value = t.value_type
        inner: Any = ([named_feature(value.field(i).name, value.field(i).type) for i in range(value.num_fields)]
                      if pa.types.is_struct(value) else feature_of(value))
        out: dict[str, Any] = {"list": inner}
        if pa.types.is_fixed_size_list(t):
            out["length"] = t.list_size
        return out
    name = _dtype(t)
    return _FLOAT_NAMES.get(name, name)


def named_feature(name: str, t: pa.DataType) -> dict[str, Any]:
    """``{"name": ..., "dtype"|"struct"|"list": ...}``: one entry of a YAML feature list."""
    f = feature_of(t)
    return {"name": name, **(f if isinstance(f, dict) else {"dtype": f})}


def json_features(schema: pa.Schema = SAMPLE_SCHEMA) -> list[dict[str, Any]]:
    """The features of a sample's ``.json``: every SAMPLE_SCHEMA field, in order."""
    return [named_feature(f.name, f.type) for f in schema]


def sample_features(image_extensions: Iterable[str]) -> list[dict[str, Any]]:
    """Every column the ``webdataset`` builder yields for a sample: images, json, txt, key, url."""
    images = [{"name": ext, "dtype": "image"} for ext in sorted(set(image_extensions)) or ["jpg"]]
    return images + [
        {"name": "json", "struct": json_features()},
        {"name": "txt", "dtype": "string"},
        {"name": "__key__", "dtype": "string"},
        {"name": "__url__", "dtype": "string"},
    ]


# --- a small YAML writer (block style; strings as JSON strings, which YAML reads alike) -------


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def to_yaml(value: Any, indent: int = 0) -> list[str]:
    """Lines of block-style YAML for dicts, lists and scalars."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.extend(to_yaml(v, indent + 2))
            elif isinstance(v, (dict, list)):
                lines.append(f"{pad}{k}: {'{}' if isinstance(v, dict) else '[]'}")
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            sub = to_yaml(item, indent + 2) if isinstance(item, (dict, list)) else [f"{pad}  {_scalar(item)}"]
            first = sub[0].lstrip()
            lines.append(f"{pad}- {first}")
            lines.extend(sub[1:])
    else:
        lines.append(f"{pad}{_scalar(value)}")
    return lines


# --- what the card says ---------------------------------------------------------------------


def image_extensions(out: Path) -> list[str]:
    """The image file extensions the shards hold (from their stats)."""
    exts: set[str] = set()
    for name in list_shards(out):
        stats = read_json(stats_path(out, name), {}) or {}
        exts.update(image_extension(fmt) for fmt, n in (stats.get("image_format") or {}).items() if n)
    return sorted(exts)


def respected_counts(manifest: dict[str, Any]) -> dict[str, Any]:
    """What was honoured: the manifest's ``respected`` section, else crawl statuses that mean "no"."""
    if isinstance(manifest.get("respected"), dict) and manifest["respected"]:
        return manifest["respected"]
    crawl = (manifest.get("stages") or {}).get("crawl") or {}
    images, pages = crawl.get("images") or {}, crawl.get("pages") or {}
    out: dict[str, Any] = {}
    for status in RESPECT_STATUSES:
        n_img, n_page = images.get(status.value, 0), pages.get(status.value, 0)
        if n_img or n_page:
            out[status.value] = {"images": n_img, "pages": n_page}
    return out


def flat_counts(d: dict[str, Any], prefix: str = "", zeros: bool = False) -> dict[str, int | float]:
    """Nested counts as ``{"a / b": n}`` (non-numbers, and zeros unless asked for, left out), for tables."""
    out: dict[str, int | float] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_counts(v, f"{name} / ", zeros))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and (v or zeros):
            out[name] = v
    return out


def size_category(n: int) -> str:
    return next((name for limit, name in _SIZE_CATEGORIES if n < limit), "n>1B")


def front_matter(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The card's YAML metadata: what `datasets` and the Hub read."""
    samples = int((manifest.get("totals") or {}).get("samples") or 0)
    return {
        "pretty_name": f"capcrawl dataset {out.name}",
        "license": "other",
        "license_name": "mixed-per-sample",
        "license_details": "Each sample carries its own licence (json field `license`, SPDX); see the licence mix below.",
        "task_categories": ["image-to-text", "text-to-image"],
        "tags": ["capcrawl", "webdataset", "image-text-pairs"],
        "size_categories": [size_category(samples)],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "*.tar"}], "default": True}],
        "dataset_info": {"config_name": "default", "features": sample_features(image_extensions(out))},
    }


def _table(rows: Iterable[tuple[Any, ...]], header: tuple[str, ...]) -> list[str]:
    rows = list(rows)
    if not rows:
        return ["(none)", ""]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return lines + [""]


def _counts(d: dict[str, Any] | None) -> list[tuple[str, Any]]:
    return sorted(((k, v) for k, v in (d or {}).items() if not isinstance(v, dict)), key=lambda kv: (-(kv[1] or 0), kv[0]))


def _how_built(manifest: dict[str, Any]) -> list[str]:
    stages = manifest.get("stages") or {}
    crawl, filt = stages.get("crawl") or {}, stages.get("filter")
    run = (manifest.get("runs") or [{}])[-1]
    options = run.get("options") or {}
    crawl_opts = crawl.get("options") or {}
    lines = ["## How it was built", ""]
    if crawl.get("mode") == "list" or crawl_opts.get("url_list"):
        lines.append(f"- Source: a URL list, `{crawl_opts.get('url_list', '?')}` (`capcrawl download`).")
    else:
        seeds = crawl_opts.get("seeds") or []
        more = crawl_opts.get("seed_count", len(seeds)) - len(seeds)
        shown = ", ".join(f"<{s}>" for s in seeds) or "not recorded"
        lines.append(f"- Source: a crawl from {crawl_opts.get('seed_count', len(seeds)) or 'the'} seed URL(s): {shown}"
                     + (f" and {more} more" if more > 0 else "")
                     + (f"; at most {crawl_opts['max_pages']} pages, {crawl_opts['max_depth']} links deep." if "max_pages" in crawl_opts else "."))
    works = _works(manifest)
    if len(works) > 1:
        lines.append(f"- OUT holds the samples of {len(works)} work directories; the source above and the crawl "
                     "and filter counts below are the last one's. Every one, in order:")
        lines += [f"  - `{w}`: {src}" for w, src in works.items()]
    if crawl_opts.get("user_agent"):
        lines.append(f"- User agent: `{crawl_opts['user_agent']}`.")
    if crawl_opts:
        robots = "ignored (`--ignore-robots`, on sites the operator owns)" if crawl_opts.get("ignore_robots") else "obeyed for pages and images"
        lines.append(f"- robots.txt: {robots}.")
    if options.get("no_filter"):
        lines.append("- No CLIP filter (`--no-filter`): captions are the alt text or the URL list's caption column.")
    elif not filt:
        lines.append("- CLIP filter: settings not recorded (no WORK/scored/stats.json).")
    else:
        lines.append(f"- CLIP filter: model `{filt.get('model')}`, weights `{filt.get('pretrained')}`, "
                     f"threshold {filt.get('threshold')}, fill threshold {filt.get('fill_threshold')}.")
    lines.append(f"- Deduplication: exact sha256, pHash within {options.get('near_dup_distance', '?')} bits"
                 + (f", embedding cosine >= {options['semantic_dedup']}" if options.get("semantic_dedup") else "") + ".")
    lines.append(f"- Written by capcrawl {manifest.get('capcrawl_version', '?')} (record schema {manifest.get('schema_version', '?')}), "
                 f"{len(manifest.get('runs') or [])} shards run(s), last updated {manifest.get('updated_at', '?')}.")
    return lines + [""]


def _works(manifest: dict[str, Any]) -> dict[str, str]:
    """Each WORK that a shards run into OUT read, in order, with what its crawl came from."""
    works: dict[str, str] = {}
    for run in manifest.get("runs") or []:
        work = (run.get("options") or {}).get("work")
        if not work:
            continue
        opts = ((run.get("stages") or {}).get("crawl") or {}).get("options") or {}
        if opts.get("url_list"):
            works[str(work)] = f"the URL list `{opts['url_list']}`"
        elif opts.get("seeds"):
            works[str(work)] = "a crawl from " + ", ".join(f"<{s}>" for s in opts["seeds"][:3]) + (" ..." if len(opts["seeds"]) > 3 else "")
        else:
            works.setdefault(str(work), "source not recorded")
    return works


def card_text(out: Path, manifest: dict[str, Any]) -> str:
    """The whole README.md: front matter, then the datasheet."""
    totals = manifest.get("totals") or {}
    stages = manifest.get("stages") or {}
    crawl, filt = stages.get("crawl") or {}, stages.get("filter") or {}
    samples = totals.get("samples", 0)
    lines = ["---", *to_yaml(front_matter(out, manifest)), "---", "",
             f"# {out.name}", "",
             f"An image-caption dataset of **{samples} samples** in {totals.get('shards', 0)} WebDataset shards, "
             "crawled, CLIP-filtered and deduplicated by capcrawl. Every sample keeps its source URL, "
             "page, licence, hashes and how its caption was made.", ""]
    lines += _how_built(manifest)
    lines += ["## Counts", "", "Images the crawl found, by status:", ""]
    lines += _table(_counts(crawl.get("images")), ("status", "images"))
    if crawl.get("pages"):
        lines += ["Pages, by status:", ""] + _table(_counts(crawl.get("pages")), ("status", "pages"))
    if filt:
        lines += [f"The filter kept {filt.get('kept', '?')} of {filt.get('rows', '?')} images; not kept, by reason:", ""]
        lines += _table(_counts(filt.get("filter_reason")), ("reason", "images"))
    lines += ["Left out of the shards (duplicates, blocklist, policy), by reason:", ""]
    lines += _table(_counts(totals.get("dropped")), ("reason", "samples"))
    lines += ["## Licences", "", "Each sample's `license` is an SPDX id found on its page (or `unknown`). "
              "Check each sample's licence before you use or redistribute it.", ""]
    lines += _table(sorted(license_mix(out).items(), key=lambda kv: (-kv[1], kv[0])), ("licence", "samples"))
    lines += _honoured(manifest)
    lines += _loading(out)
    lines += ["## Fields", "", "Each sample is `KEY.jpg` (or `.png`/`.webp`), `KEY.txt` (the caption) and `KEY.json`:", ""]
    lines += _table(((f.name, "string (ISO time)" if pa.types.is_temporal(f.type) else str(f.type)) for f in SAMPLE_SCHEMA),
                    ("field", "type"))
    return "\n".join(lines).rstrip() + "\n"


def _honoured(manifest: dict[str, Any]) -> list[str]:
    totals = manifest.get("totals") or {}
    respected = respected_counts(manifest)
    lines = ["## What was honoured", "",
             "Images whose site said no were never fetched or never kept: robots.txt (pages and images), `noai`/`noimageai` "
             "in meta robots or `X-Robots-Tag`, TDMRep, AI-usage preferences, `ai.txt`; hosts on private addresses were "
             "refused; takedown requests are applied to the shards and blocklisted for later runs.", ""]
    signals = {k: v for k, v in respected.items() if k not in ("licenses", "faces", "takedowns")}
    lines += _table(flat_counts(signals).items(), ("signal", "count"))
    licenses = respected.get("licenses") if isinstance(respected.get("licenses"), dict) else {}
    if licenses:
        lines.append(f"- Licence policy: {licenses.get('policy') or 'none (every licence kept, unknown included)'}; "
                     f"dropped for an unknown licence {licenses.get('unknown_dropped', 0)}, "
                     f"for a licence outside the policy {licenses.get('not_allowed_dropped', 0)}.")
    removed = sum((totals.get("removed") or {}).values())
    lines.append(f"- Takedowns: {removed} sample(s) removed after publication"
                 f" ({len(manifest.get('removals') or [])} takedown request file(s) applied).")
    faces = respected.get("faces") if isinstance(respected.get("faces"), dict) else {}
    if faces:
        ran = {True: "yes", False: "no: faces are neither blurred nor dropped"}.get(faces.get("detected"), "not recorded")
        lines.append(f"- Faces: policy {faces.get('policy', 'not recorded')}; face detection ran: {ran}; "
                     f"{faces.get('faces_found', totals.get('face_count', 0))} face(s) found in the published samples, "
                     f"{faces.get('samples_dropped', 0)} sample(s) dropped for faces.")
    else:
        lines.append(f"- Faces: {totals.get('face_count', 0)} face(s) recorded in the published samples.")
    lines += ["", "## Takedown requests", "",
              "To have an image removed, send the maintainer of this dataset its image URL or page URL (or `domain:HOST` "
              "for a whole site, or the image's `sha256`). The maintainer applies it with "
              "`capcrawl remove OUT --takedown FILE`: the samples leave the shards, the entry joins `blocklist.jsonl`, "
              "and no later crawl into this dataset brings them back. Removals are logged in `removals.jsonl`.", ""]
    return lines


def _loading(out: Path) -> list[str]:
    return ["## Loading", "", "```python",
            "import datasets  # reads this card: the shards and their features",
            f'ds = datasets.load_dataset("path/to/{out.name}", split="train")',
            "",
            "import webdataset as wds",
            f'ds = wds.WebDataset("path/to/{out.name}/{{00000..NNNNN}}.tar").decode("pil")',
            "",
            "import duckdb  # the metadata, without images",
            f"duckdb.sql(\"select license, count(*) from read_parquet('path/to/{out.name}/*.parquet', union_by_name=true) group by 1\")",
            "```", ""]


def write_card(out: Path, manifest: dict[str, Any]) -> Path:
    """Write OUT/README.md atomically; return its path."""
    path = Path(out) / CARD_FILE
    atomic_write_bytes(card_text(Path(out), manifest).encode("utf-8"), path)
    log.info("wrote the dataset card %s", path)
    return path
