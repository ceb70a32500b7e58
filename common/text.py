"""Text clean-up shared by the stages that read page text."""

from __future__ import annotations

import re

_WS = re.compile(r"\s+")


def clean_text(text: str | None, limit: int | None = None) -> str:
    """Whitespace collapsed to single spaces and trimmed; ``""`` for None or blank text.

    With ``limit``, a longer result is cut at the last word boundary before ``limit``
    characters (or at ``limit`` when one word is longer).
    """
    if not text:
        return ""
    t = _WS.sub(" ", text).strip()
    if limit and len(t) > limit:
        cut = t[:limit]
        t = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return t
