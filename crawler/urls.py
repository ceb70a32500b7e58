"""Joining the URLs a page holds with its base, without letting one malformed URL stop the page."""

from __future__ import annotations

import re
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit

#: A ``.`` or ``..`` path segment (RFC 3986 5.2.4), which a browser removes before it asks;
#: ``%2e`` counts as a dot there (WHATWG URL standard), so ``/a/%2e%2e/b`` is ``/b`` too.
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2e){1,2}(?=/|$)", re.I)
_ENCODED_DOTS = re.compile(r"(?<![^/])(?:\.|%2e){1,2}(?![^/])", re.I)


def join_url(base: str, href: str, fragment: bool = True) -> str | None:
    """``href`` made absolute against ``base`` (its fragment dropped unless ``fragment``), or None
    when the result cannot be parsed (``http://[::1``, a port out of range, ...).

    Dot segments go, as a browser removes them: ``http://h/a/../b.jpg`` (or ``/a/%2e%2e/b.jpg``)
    is ``http://h/b.jpg``, written absolute or relative.
    """
    try:
        url = urljoin(base, href.strip())
        if not fragment:
            url = urldefrag(url)[0]
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and _DOT_SEGMENT.search(parts.path):
            # a path resolved against its own root loses its dot segments (urljoin does RFC 3986 5.2)
            path = _ENCODED_DOTS.sub(lambda m: "." * (len(m.group(0).replace("%2e", ".").replace("%2E", "."))), parts.path)
            url = urlunsplit(parts._replace(path=urlsplit(urljoin("http://h/", path)).path))
    except ValueError:
        return None
    return url
