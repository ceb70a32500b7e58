"""The record contract between capcrawl's stages: columns, statuses, Arrow schemas.

Every column or status that crosses a stage boundary is declared here and nowhere else
(the file names are in :mod:`common.layout`). This module imports nothing of the stages
(no Scrapy, no torch), so every stage imports it cheaply.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

#: Bumped whenever a column is added, removed or changes meaning. Readers conform older
#: files to the current schema (:func:`conform`): columns they lack read as null.
#: 2: opt-out evidence, site-chrome and page counts, faces, caption candidates and language.
SCHEMA_VERSION = 2


class ValueEnum(str, enum.Enum):
    """A string enum whose ``str()`` and f-string form is its value (``f"{Status.OK}" == "ok"``)."""

    def __str__(self) -> str:
        return self.value


class Status(ValueEnum):
    """Why an image URL ended the way it did. ``http_NNN`` is built by :func:`http_status`."""

    OK = "ok"
    ROBOTS = "robots"  # robots.txt disallows the URL (never requested)
    NOAI = "noai"  # noai / noimageai / noml in meta robots or X-Robots-Tag
    TDMREP = "tdmrep"  # W3C TDMRep reservation: tdmrep.json, tdm-reservation header or meta
    CONTENT_USAGE = "content_usage"  # IETF AI preferences forbid training: Content-Usage header or robots.txt rule
    CONTENT_SIGNAL = "content_signal"  # Content-Signal: ai-train=no in robots.txt
    AI_TXT = "ai_txt"  # disallowed by the site's /ai.txt
    OFFSITE = "offsite"  # outside the crawl scope
    PRIVATE_ADDRESS = "private_address"  # host resolves to a private/loopback/reserved address
    TIMEOUT = "timeout"
    DNS_ERROR = "dns_error"
    CONNECTION_ERROR = "connection_error"
    NOT_AN_IMAGE = "not_an_image"
    CORRUPT = "corrupt"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"  # body over --max-image-bytes (cut while streaming), or resized past what its format holds
    DECOMPRESSION_BOMB = "decompression_bomb"  # more pixels than --max-pixels (as it is, or resized)
    BAD_URL = "bad_url"  # not an http(s) URL, or unparsable
    BLOCKED = "blocked"  # on the takedown blocklist
    DOWNLOAD_ERROR = "download_error"  # any other transport failure (see ``error``)
    IGNORED = "ignored"  # refused by a downloader component (e.g. redirect limit)


def http_status(code: int) -> str:
    """Status string for a non-2xx HTTP answer, e.g. ``http_404``."""
    return f"http_{int(code):03d}"


class PageStatus(ValueEnum):
    """How a page URL ended (counted under ``pages/`` in crawl stats; pages are not rows)."""

    OK = "ok"
    ROBOTS = "robots"
    NOAI = "noai"  # page fetched, its images excluded by meta robots / X-Robots-Tag
    # Refused by an opt-out signal: never fetched when the host's files (tdmrep.json,
    # robots.txt Content-Usage / Content-Signal, ai.txt) cover the page; fetched, its links
    # followed and its images excluded when the page's own headers or meta tags declare it.
    TDMREP = "tdmrep"
    CONTENT_USAGE = "content_usage"
    CONTENT_SIGNAL = "content_signal"
    AI_TXT = "ai_txt"
    BLOCKED = "blocked"  # on the takedown blocklist (never requested)
    OFFSITE = "offsite"
    PRIVATE_ADDRESS = "private_address"
    MAX_DEPTH = "max_depth"
    MAX_PAGES = "max_pages"
    NOT_HTML = "not_html"
    TIMEOUT = "timeout"
    DNS_ERROR = "dns_error"
    CONNECTION_ERROR = "connection_error"
    TOO_LARGE = "too_large"
    DOWNLOAD_ERROR = "download_error"
    IGNORED = "ignored"
    BAD_URL = "bad_url"  # a link that cannot be parsed or requested (never requested)
    PARSE_ERROR = "parse_error"  # fetched, but reading its HTML failed (its images and links are lost)


class CaptionSource(ValueEnum):
    """Where a sample's caption came from."""

    ALT = "alt"
    FIGCAPTION = "figcaption"
    TITLE = "title"  # the <img title> attribute
    CAPTION_IN = "caption_in"  # caption column of a URL list
    PAGE_CONTEXT = "page_context"
    PAGE_TITLE = "page_title"
    FILENAME = "filename"
    LABEL = "label"  # --label-bank phrase
    GENERATED = "generated"  # CoCa model.generate


class FilterReason(ValueEnum):
    """Why the filter stage set ``kept=false``."""

    BELOW_THRESHOLD = "below_threshold"  # best caption scored under --threshold
    NO_CANDIDATE = "no_candidate"  # no text at all to score against
    DECODE_ERROR = "decode_error"  # stored image bytes could not be decoded
    SITE_CHROME = "site_chrome"  # navigation, logo or icon: repeated across a host's pages, or in its nav
    LANGUAGE = "language"  # the caption's language is not among --languages


class DropReason(ValueEnum):
    """Why the shards stage left a kept sample out of the shards."""

    DUPLICATE_SHA256 = "duplicate_sha256"
    NEAR_DUPLICATE = "near_duplicate"
    SEMANTIC_DUPLICATE = "semantic_duplicate"
    BLOCKLISTED = "blocklisted"
    NO_CAPTION = "no_caption"
    SITE_CHROME = "site_chrome"  # --no-filter: the same site-chrome rule the filter applies
    FACES = "faces"  # --faces drop
    LICENSE_UNKNOWN = "license_unknown"  # --licenses: no licence recorded
    LICENSE_NOT_ALLOWED = "license_not_allowed"  # --licenses: a licence outside the policy


#: Drop reasons decided by a run's options or by the record's own fields, not by OUT's other
#: samples: every run decides them again (a rerun without ``--licenses`` publishes what a policy
#: left out). Duplicates and blocklist matches stay decided.
REVISITED_DROPS = tuple(sorted(r.value for r in (DropReason.NO_CAPTION, DropReason.SITE_CHROME, DropReason.FACES,
                                                 DropReason.LICENSE_UNKNOWN, DropReason.LICENSE_NOT_ALLOWED)))


class FaceAction(ValueEnum):
    """What the shards stage did to the faces of a sample (``--faces``)."""

    NONE = "none"  # no face found
    BLURRED = "blurred"
    KEPT = "kept"  # --faces keep: written untouched
    UNCHECKED = "unchecked"  # no detection ran (--no-filter, or the filter's --no-face-detection)


# --- crawl records -----------------------------------------------------------------

_TS = pa.timestamp("ms", tz="UTC")

CRAWL_FIELDS: list[pa.Field] = [
    pa.field("url", pa.string(), nullable=False),
    pa.field("final_url", pa.string()),
    pa.field("page_url", pa.string()),
    pa.field("page_title", pa.string()),
    pa.field("alt", pa.string()),
    pa.field("title_attr", pa.string()),
    pa.field("figcaption", pa.string()),
    pa.field("context", pa.string()),
    pa.field("caption_in", pa.string()),
    pa.field("license", pa.string()),
    pa.field("license_url", pa.string()),
    pa.field("license_source", pa.string()),
    pa.field("rights", pa.string()),  # copyright notice embedded in the file (IPTC/XMP/EXIF)
    pa.field("rights_url", pa.string()),  # XMP xmpRights:WebStatement
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    # Evidence for a refusal by robots.txt or an opt-out signal (crawler/optout.py): the
    # signal (the status), where it was found and the rule or value as found.
    pa.field("opt_out_signal", pa.string()),
    pa.field("opt_out_source", pa.string()),
    pa.field("opt_out_value", pa.string()),
    pa.field("chrome", pa.string()),  # why the markup marks the image as site chrome (nav, header, ...)
    pa.field("image", pa.binary()),
    pa.field("image_format", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("original_width", pa.int32()),
    pa.field("original_height", pa.int32()),
    pa.field("sha256", pa.string()),
    pa.field("phash", pa.string()),
    pa.field("fetched_at", _TS),
]
CRAWL_SCHEMA = pa.schema(CRAWL_FIELDS, metadata={b"capcrawl_schema_version": str(SCHEMA_VERSION).encode()})

#: One caption the filter considered: its text, where it came from, its CLIP cosine.
CANDIDATE_TYPE = pa.struct([("text", pa.string()), ("source", pa.string()), ("score", pa.float32())])
#: ``[x_min, y_min, x_max, y_max]`` normalised to [0, 1] of the stored image.
BOX_TYPE = pa.list_(pa.float32(), 4)

SCORED_EXTRA_FIELDS: list[pa.Field] = [
    pa.field("caption", pa.string()),
    pa.field("caption_source", pa.string()),
    pa.field("clip_score", pa.float32()),
    pa.field("alt_score", pa.float32()),
    pa.field("kept", pa.bool_(), nullable=False),
    pa.field("filter_reason", pa.string()),
    pa.field("alt_ignored", pa.string()),  # why the alt did not count as a caption (boilerplate: "image", a file name)
    pa.field("caption_candidates", pa.list_(CANDIDATE_TYPE)),  # the best few, best first
    pa.field("caption_lang", pa.string()),  # ISO 639-1 code of the caption's language
    pa.field("caption_lang_score", pa.float32()),
    pa.field("page_count", pa.int32()),  # pages of the image's page host that show this image URL
    pa.field("host_pages", pa.int32()),  # pages crawled on that host
    pa.field("face_bboxes", pa.list_(BOX_TYPE)),
    pa.field("face_scores", pa.list_(pa.float32())),
]
SCORED_SCHEMA = pa.schema(
    CRAWL_FIELDS + SCORED_EXTRA_FIELDS,
    metadata={b"capcrawl_schema_version": str(SCHEMA_VERSION).encode()},
)

#: Columns of a shard sample's ``.json`` and of the shard ``.parquet``: every scored
#: column but the image bytes, plus ``key`` and what was done to faces.
SAMPLE_FIELDS: list[pa.Field] = (
    [pa.field("key", pa.string(), nullable=False)]
    + [f for f in SCORED_SCHEMA if f.name != "image"]
    + [pa.field("face_action", pa.string())]
)
SAMPLE_SCHEMA = pa.schema(SAMPLE_FIELDS, metadata={b"capcrawl_schema_version": str(SCHEMA_VERSION).encode()})

#: Column names, for code that must not spell them from memory.
CRAWL_COLUMNS: tuple[str, ...] = tuple(CRAWL_SCHEMA.names)
SCORED_COLUMNS: tuple[str, ...] = tuple(SCORED_SCHEMA.names)
SAMPLE_COLUMNS: tuple[str, ...] = tuple(SAMPLE_SCHEMA.names)

# --- tables ---------------------------------------------------------------------------


def read_columns(path: str | Path, columns: list[str]) -> pa.Table:
    """Columns of one part file, read as a single file.

    ``pq.read_table`` goes through pyarrow's dataset layer, whose first use imports
    pyarrow.dataset and pyarrow.compute and starts thread pools: ~0.05 s of a short
    command's start or end, for nothing a single file needs.
    """
    return pq.ParquetFile(path).read(columns=columns)


#: Values of a column that :func:`pylist_slices` turns into Python objects at once.
PYLIST_SLICE = 1 << 16


def pylist_slices(column: "pa.Array | pa.ChunkedArray", size: int = PYLIST_SLICE) -> Iterator[list]:
    """The column's values as Python lists of up to ``size``: a million-row column never
    becomes a million Python objects at once."""
    for start in range(0, len(column), size):
        yield column.slice(start, size).to_pylist()


def table_from_rows(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema``'s columns; missing keys become null."""
    cols = {name: [r.get(name) for r in rows] for name in schema.names}
    return pa.Table.from_pydict(cols, schema=schema)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder/cast ``table`` to ``schema``; absent nullable columns become nulls."""
    arrays = []
    for field in schema:
        if field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)

#: ``WORK/crawl/image_pages.parquet``, written at the end of a crawl from the page journals:
#: for each image URL and each host whose pages show it, on how many of that host's pages it
#: appears and how many pages of that host were crawled (site chrome repeats on most of them).
IMAGE_PAGES_SCHEMA = pa.schema(
    [
        pa.field("url", pa.string(), nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("page_count", pa.int32(), nullable=False),
        pa.field("host_pages", pa.int32(), nullable=False),
    ],
    metadata={b"capcrawl_schema_version": str(SCHEMA_VERSION).encode()},
)
