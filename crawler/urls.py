"""Joining the URLs a page holds with its base, without letting one malformed URL stop the page."""

from __future__ import annotations

from urllib.parse import urldefrag, urljoin


def join_url(base: str, href: str, fragment: bool = True) -> str | None:
    """``href`` made absolute against ``base`` (its fragment dropped unless ``fragment``), or None
    when the result cannot be parsed (``http://[::1``, a port out of range, ...)."""
    try:
        url = urljoin(base, href.strip())
        if not fragment:
            url = urldefrag(url)[0]
    except ValueError:
        return None
    return url
