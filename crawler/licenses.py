"""Licence URLs to SPDX identifiers (Creative Commons and the public-domain mark)."""

from __future__ import annotations

import re

_CC_RE = re.compile(
    r"creativecommons\.org/licenses/(?P<kind>by(?:-nc)?(?:-sa|-nd)?|by-nd-nc|sa)/(?P<ver>\d\.\d)"
    r"(?:/(?!deed|legalcode)(?P<port>[a-z]{2,}(?:-[a-z]{2})?)(?=[/?#]|$))?",
    re.IGNORECASE,
)
_CC0_RE = re.compile(r"creativecommons\.org/publicdomain/zero/(?P<ver>\d\.\d)", re.IGNORECASE)
_PDM_RE = re.compile(r"creativecommons\.org/publicdomain/mark/(?P<ver>\d\.\d)?", re.IGNORECASE)
_PDDC_RE = re.compile(r"creativecommons\.org/licenses/publicdomain(?:/|$)", re.IGNORECASE)
# Short forms people write in link text or JSON-LD: "CC BY-SA 4.0", "CC0".
_CC_TEXT_RE = re.compile(r"^\s*CC[\s-]+(?P<kind>BY(?:[\s-]NC)?(?:[\s-](?:SA|ND))?)[\s-]+(?P<ver>\d\.\d)\s*$", re.IGNORECASE)

#: The ported (jurisdiction) Creative Commons licences the SPDX licence list names. Version
#: 4.0 has no ports; any other port (``/by/3.0/fr/``, ``/by-sa/2.5/scotland/``) is recorded as
#: ``LicenseRef-CC-BY-3.0-FR``: still a valid SPDX expression, and --licenses patterns such as
#: ``CC-BY-*`` match it as they match the SPDX-listed ports.
SPDX_PORTED = frozenset({
    "CC-BY-2.5-AU", "CC-BY-3.0-AT", "CC-BY-3.0-AU", "CC-BY-3.0-DE", "CC-BY-3.0-IGO", "CC-BY-3.0-NL", "CC-BY-3.0-US",
    "CC-BY-NC-3.0-DE", "CC-BY-NC-3.0-IGO", "CC-BY-NC-ND-3.0-DE", "CC-BY-NC-ND-3.0-IGO", "CC-BY-NC-SA-2.0-DE",
    "CC-BY-NC-SA-2.0-FR", "CC-BY-NC-SA-2.0-UK", "CC-BY-NC-SA-3.0-DE", "CC-BY-NC-SA-3.0-IGO", "CC-BY-ND-3.0-DE",
    "CC-BY-SA-2.0-UK", "CC-BY-SA-2.1-JP", "CC-BY-SA-3.0-AT", "CC-BY-SA-3.0-DE", "CC-BY-SA-3.0-IGO",
})


def spdx_from_url(url: str | None) -> str | None:
    """SPDX id for a Creative Commons licence, CC0, PDM or PDDC URL; None when not recognised."""
    if not url:
        return None
    if m := _CC_RE.search(url):
        kind = m["kind"].upper().replace("BY-ND-NC", "BY-NC-ND")  # 1.0 wrote by-nd-nc
        spdx = f"CC-{kind}-{m['ver']}"
        if m["port"] and m["ver"] != "4.0":
            ported = f"{spdx}-{m['port'].upper()}"
            spdx = ported if ported in SPDX_PORTED else f"LicenseRef-{ported}"
        return spdx
    if m := _CC0_RE.search(url):
        return f"CC0-{m['ver']}"
    if m := _PDM_RE.search(url):
        return f"CC-PDM-{m['ver'] or '1.0'}"
    if _PDDC_RE.search(url):
        return "CC-PDDC"
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
