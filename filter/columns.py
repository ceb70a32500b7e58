"""The record-contract columns the filter reads and writes, checked against ``common.records``.

Each name is looked up in :data:`common.records.SCORED_COLUMNS` at import, so a
change to the contract fails loudly here instead of silently reading nulls.
"""

from __future__ import annotations

from common.records import SCORED_COLUMNS


def _column(name: str) -> str:
    if name not in SCORED_COLUMNS:
        raise ImportError(f"column {name!r} is not in common.records.SCORED_SCHEMA; update filter/columns.py")
    return name


URL = _column("url")
FINAL_URL = _column("final_url")
PAGE_TITLE = _column("page_title")
ALT = _column("alt")
TITLE_ATTR = _column("title_attr")
FIGCAPTION = _column("figcaption")
CONTEXT = _column("context")
CAPTION_IN = _column("caption_in")
STATUS = _column("status")
IMAGE = _column("image")
CAPTION = _column("caption")
CAPTION_SOURCE = _column("caption_source")
CLIP_SCORE = _column("clip_score")
ALT_SCORE = _column("alt_score")
KEPT = _column("kept")
FILTER_REASON = _column("filter_reason")
ALT_IGNORED = _column("alt_ignored")
CAPTION_CANDIDATES = _column("caption_candidates")
CAPTION_LANG = _column("caption_lang")
CAPTION_LANG_SCORE = _column("caption_lang_score")
PAGE_COUNT = _column("page_count")
HOST_PAGES = _column("host_pages")
CHROME = _column("chrome")
FACE_BBOXES = _column("face_bboxes")
FACE_SCORES = _column("face_scores")

#: Text columns that candidates are built from.
TEXT_COLUMNS: tuple[str, ...] = (URL, FINAL_URL, PAGE_TITLE, ALT, TITLE_ATTR, FIGCAPTION, CONTEXT, CAPTION_IN)
