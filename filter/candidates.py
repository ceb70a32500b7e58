"""Candidate captions for an image whose alt text is missing or does not match.

Pure functions over one crawl row's text columns; no model here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterable, Mapping
from urllib.parse import unquote, urlsplit

from common.alttext import boilerplate_alt
from common.records import CaptionSource
from common.text import clean_text
from filter import columns as col

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+|\s+[|•·–—]\s+")
_FILENAME_SPLIT = re.compile(r"[-_./\s+]+")
_DIGITS = re.compile(r"\d+")
_MAX_CANDIDATE_CHARS = 300
_MIN_SENTENCE_CHARS = 3


@dataclass(frozen=True)
class Candidate:
    """One text to score against an image, and where it came from."""

    text: str
    source: CaptionSource


def split_sentences(text: str | None) -> list[str]:
    """Sentences (or separator-delimited fragments) of a page-context snippet."""
    parts = (clean_text(p) for p in _SENTENCE_END.split(text or ""))
    return [p for p in parts if len(p) >= _MIN_SENTENCE_CHARS]


def filename_words(url: str | None) -> str:
    """Words of a URL's file name: ``.../red-circle_01.jpg`` -> ``"red circle"``."""
    if not url:
        return ""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    stem = name.rsplit(".", 1)[0] if "." in name else name
    words = (_DIGITS.sub("", w) for w in _FILENAME_SPLIT.split(stem))
    return " ".join(w for w in words if w)


def render_labels(phrases: Iterable[str], template: str) -> list[str]:
    """Label-bank phrases put through ``--label-template`` (``"a photo of {}."``)."""
    return [template.replace("{}", p) for p in phrases]


def row_candidates(row: Mapping[str, str | None]) -> list[Candidate]:
    """Text candidates from a crawl row's columns (alt excluded), de-duplicated, in priority order.

    Human-written fields that name nothing ("Original image", "[Note]", a file name: the same
    test as for alts, :func:`common.alttext.boilerplate_alt`) are no candidates.
    """
    found: list[Candidate] = []
    seen: set[str] = set()

    def add(text: str | None, source: CaptionSource, screen: bool = False) -> None:
        text = clean_text(text)[:_MAX_CANDIDATE_CHARS]
        if text and text.lower() not in seen and not (screen and boilerplate_alt(text)):
            seen.add(text.lower())
            found.append(Candidate(text, source))

    add(row.get(col.CAPTION_IN), CaptionSource.CAPTION_IN)
    add(row.get(col.FIGCAPTION), CaptionSource.FIGCAPTION, screen=True)
    add(row.get(col.TITLE_ATTR), CaptionSource.TITLE, screen=True)
    for sentence in split_sentences(row.get(col.CONTEXT)):
        add(sentence, CaptionSource.PAGE_CONTEXT)
    add(row.get(col.PAGE_TITLE), CaptionSource.PAGE_TITLE)
    add(filename_words(row.get(col.URL) or row.get(col.FINAL_URL)), CaptionSource.FILENAME)
    return found
