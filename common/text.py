"""Text clean-up shared by the stages that read page text."""

from __future__ import annotations

import re

_WS = re.compile(r"\s+")
#: What a caption never needs and a reader can be fooled or broken by: terminal escape
#: sequences, control characters (NUL included; whitespace ones are collapsed instead), the
#: byte-order mark, zero-width spaces, and the bidi embeddings, overrides and isolates that
#: reorder text on screen. Zero-width joiners stay: scripts and emoji need them.
_INVISIBLE = re.compile(
    "\x1b\\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0e-\x1b\x7f-\x9f\u200b\u2060\ufeff\u202a-\u202e\u2066-\u2069]"
)


def clean_text(text: str | None, limit: int | None = None) -> str:
    """Invisible and control characters removed, whitespace collapsed to single spaces and
    trimmed; ``""`` for None or blank text.

    With ``limit``, a longer result is cut at the last word boundary before ``limit``
    characters (or at ``limit`` when one word is longer).
    """
    if not text:
        return ""
    t = _WS.sub(" ", _INVISIBLE.sub("", text)).strip()
    if limit and len(t) > limit:
        cut = t[:limit]
        t = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return t
