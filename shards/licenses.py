"""A licence policy for the shards (``--licenses``): which SPDX ids may become samples.

A policy is a comma-separated list of SPDX ids (``CC-BY-4.0``), patterns (``CC-BY-SA-*``) and
presets. With a policy, a sample whose licence is unknown is left out as
``license_unknown`` and one outside the policy as ``license_not_allowed``; without one,
nothing changes. The crawl records licences as SPDX ids (crawler/licenses.py): Creative
Commons (``CC-BY-4.0``, ``CC-BY-NC-SA-3.0-DE`` ...), ``CC0-1.0``, ``CC-PDM-1.0`` (the Public
Domain Mark; ``LicenseRef-PDM`` in runs before it was listed) and ``CC-PDDC``. A port SPDX does
not list is ``LicenseRef-CC-BY-3.0-FR``; a pattern matches such an id with or without its
``LicenseRef-`` prefix, so ``CC-BY-*`` takes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

#: Named policies. ``open``: every Creative Commons licence, CC0 and the Public Domain Mark.
#: ``commercial``: those that allow commercial use (no -NC-); note that -ND- licences allow
#: commercial use but no adaptations: name ids or patterns yourself to leave them out.
PRESETS: dict[str, tuple[str, ...]] = {
    "open": ("CC-BY-*", "CC-SA-*", "CC0-*", "CC-PDM-*", "CC-PDDC", "LicenseRef-PDM"),
    "commercial": ("CC-BY-[0-9]*", "CC-BY-SA-*", "CC-BY-ND-*", "CC-SA-*", "CC0-*", "CC-PDM-*", "CC-PDDC", "LicenseRef-PDM"),
}


@dataclass(frozen=True)
class LicensePolicy:
    """The patterns a licence must match (upper-case SPDX ids, ``*`` wildcards)."""

    spec: tuple[str, ...]
    patterns: tuple[str, ...]

    @classmethod
    def parse(cls, spec: tuple[str, ...] | list[str] | str) -> "LicensePolicy":
        """From ``"open"``, ``"CC-BY-4.0,CC0-1.0"`` or a list of such; ValueError for a bad entry."""
        items = [spec] if isinstance(spec, str) else list(spec)
        entries = [e.strip() for item in items for e in item.split(",") if e.strip()]
        patterns: list[str] = []
        for entry in entries:
            if entry.lower() in PRESETS:
                patterns.extend(PRESETS[entry.lower()])
            elif all(c.isalnum() or c in "-.*?[]" for c in entry):
                patterns.append(entry.upper())
            else:
                raise ValueError(f"{entry!r} is neither an SPDX id, a pattern such as CC-BY-*, nor a preset "
                                 f"({', '.join(PRESETS)})")
        if not patterns:
            raise ValueError("the policy is empty")
        return cls(tuple(entries), tuple(dict.fromkeys(patterns)))

    def allows(self, license_id: str) -> bool:
        lid = license_id.strip().upper()
        bare = lid.removeprefix("LICENSEREF-")  # LicenseRef-CC-BY-3.0-FR is matched as CC-BY-3.0-FR too
        return any(fnmatchcase(lid, p.upper()) or fnmatchcase(bare, p.upper()) for p in self.patterns)

    def verdict(self, license_id: str | None) -> str | None:
        """None when the licence is allowed, else the drop reason (``license_unknown`` / ``license_not_allowed``)."""
        from common.records import DropReason

        if not license_id or not license_id.strip():
            return DropReason.LICENSE_UNKNOWN.value
        return None if self.allows(license_id) else DropReason.LICENSE_NOT_ALLOWED.value
