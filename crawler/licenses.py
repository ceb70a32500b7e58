"""Licence URLs to SPDX identifiers (Creative Commons and the public-domain mark)."""

from __future__ import annotations

import re

_CC_RE = re.compile(
    r"creativecommons\.org/licenses/(?P<kind>by(?:-nc)?(?:-sa|-nd)?)/(?P<ver>\d\.\d)(?:/(?P<port>[a-z]{2}(?:-[a-z]{2})?))?",
    re.IGNORECASE,
)
_CC0_RE = re.compile(r"creativecommons\.org/publicdomain/zero/(?P<ver>\d\.\d)", re.IGNORECASE)
_PDM_RE = re.compile(r"creativecommons\.org/publicdomain/mark/", re.IGNORECASE)
# Short forms people write in link text or JSON-LD: "CC BY-SA 4.0", "CC0".
_CC_TEXT_RE = re.compile(r"^\s*CC[\s-]+(?P<kind>BY(?:[\s-]NC)?(?:[\s-](?:SA|ND))?)[\s-]+(?P<ver>\d\.\d)\s*$", re.IGNORECASE)

# Version 4.0 and CC0 have no ports; SPDX names ported 2.x/3.0 licences with a suffix
# only for a few jurisdictions, so a port is kept as a suffix in upper case.


def spdx_from_url(url: str | None) -> str | None:
    """SPDX id for a Creative Commons licence or PDM URL; None when not recognised."""
    if not url:
        return None
    if m := _CC_RE.search(url):
        spdx = f"CC-{m['kind'].upper()}-{m['ver']}"
        if m["port"] and m["ver"] != "4.0":
            spdx += "-" + m["port"].upper()
        return spdx
    if m := _CC0_RE.search(url):
        return f"CC0-{m['ver']}"
    if _PDM_RE.search(url):
        return "LicenseRef-PDM"
    return None


def spdx_from_text(text: str | None) -> str | None:
    """SPDX id for short licence names such as ``CC BY-SA 4.0`` or ``CC0``."""
    if not text:
        return None
    t = text.strip()
    if t.upper() in {"CC0", "CC0 1.0", "CC0-1.0"}:
        return "CC0-1.0"
    if m := _CC_TEXT_RE.match(t):
        kind = re.sub(r"[\s-]+", "-", m["kind"].upper())
        return f"CC-{kind}-{m['ver']}"
    return None


def normalise(value: str | None) -> tuple[str | None, str | None]:
    """``(spdx, url)`` for a licence given as a URL or a short name."""
    if not value:
        return None, None
    value = value.strip()
    if re.match(r"^https?://", value, re.IGNORECASE):
        return spdx_from_url(value), value
    return spdx_from_text(value) or spdx_from_url(value), None
