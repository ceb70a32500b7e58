"""Takedown entries: parsing a takedown file, the persistent OUT/blocklist.jsonl, matching rows.

One JSON object per line in ``OUT/blocklist.jsonl``::

    {"kind": "url" | "domain" | "sha256" | "phash", "value": "...",
     "max_distance": 4, "entry": "<line of the takedown file>", "added_at": "..."}

``url`` entries match ``url``, ``final_url`` or ``page_url`` (so an image URL and a
page URL are the same kind); ``domain`` entries match the host of any of the three
and its subdomains; ``phash`` entries (from local image files) match within their
own ``max_distance``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

from common.errors import ConfigError
from common.fileio import atomic_write_bytes
from common.phash import hamming, hex_to_uint64, phash_of_file
from common.records import ValueEnum
from shards.near_index import near_pairs_between

BLOCKLIST_FILE = "blocklist.jsonl"
URL_COLUMNS = ("url", "final_url", "page_url")
_HEX = set("0123456789abcdef")


class EntryKind(ValueEnum):
    URL = "url"
    DOMAIN = "domain"
    SHA256 = "sha256"
    PHASH = "phash"


@dataclass(frozen=True)
class BlockEntry:
    """One blocklist entry; ``entry`` is the takedown line it came from."""

    kind: EntryKind
    value: str
    entry: str
    max_distance: int = 0
    added_at: str = ""

    def identity(self) -> tuple[str, str, int]:
        return (self.kind.value, self.value, self.max_distance)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "kind": self.kind.value}, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> "BlockEntry":
        d = json.loads(line)
        return cls(EntryKind(d["kind"]), d["value"], d.get("entry", d["value"]), int(d.get("max_distance", 0)), d.get("added_at", ""))


def normalize_url(url: str) -> str:
    """Compare URLs case-insensitively in scheme and host, without the #fragment."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower(), fragment="").geturl()


def host_of(url: str | None) -> str | None:
    """Lower-case host name of a URL, None if absent or unparsable."""
    if not url:
        return None
    try:
        return (urlsplit(url.strip()).hostname or "").rstrip(".") or None
    except ValueError:
        return None


def _parse_line(line: str, base: Path, max_distance: int, now: str) -> BlockEntry:
    lowered = line.lower()
    if lowered.startswith(("http://", "https://")):
        return BlockEntry(EntryKind.URL, normalize_url(line), line, added_at=now)
    if lowered.startswith("domain:"):
        domain = lowered.removeprefix("domain:").strip().strip(".")
        if not domain or "/" in domain:
            raise ValueError("domain: needs a host name such as domain:example.com")
        return BlockEntry(EntryKind.DOMAIN, domain, line, added_at=now)
    if lowered.startswith("sha256:"):
        digest = lowered.removeprefix("sha256:").strip()
        if len(digest) != 64 or not set(digest) <= _HEX:
            raise ValueError("sha256: needs 64 hex digits")
        return BlockEntry(EntryKind.SHA256, digest, line, added_at=now)
    if lowered.startswith("phash:"):
        value = lowered.removeprefix("phash:").strip()
        if not hex_to_uint64([value])[1][0]:
            raise ValueError("phash: needs 16 hex digits")
        return BlockEntry(EntryKind.PHASH, value, line, max_distance, now)
    path = Path(line).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, base / path]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ValueError("it is not an http(s) URL, domain:, sha256:, phash: or an existing image file")
    try:
        value = phash_of_file(found)
    except Exception as e:  # PIL raises many types for undecodable files
        raise ValueError(f"the file {found} could not be read as an image ({e})") from e
    return BlockEntry(EntryKind.PHASH, value, line, max_distance, now)


def parse_takedown(path: str | Path, max_distance: int) -> list[BlockEntry]:
    """Entries of a takedown file; raise ConfigError naming the first bad line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"Cannot read the takedown file {path}: {e.strerror}; pass an existing text file.") from e
    now = datetime.now(timezone.utc).isoformat()
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().lower().startswith("http") else raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entries.append(_parse_line(line, path.parent, max_distance, now))
        except ValueError as e:
            raise ConfigError(f"Line {number} of {path} ({line!r}) is not a valid takedown entry: {e}.") from e
    return entries


class Blocklist:
    """The entries every ``shards`` run into OUT applies; see the module docstring."""

    def __init__(self, entries: list[BlockEntry]) -> None:
        self.entries = list(entries)
        self._by_kind = {kind: [e for e in entries if e.kind is kind] for kind in EntryKind}
        self._urls = {e.value: e.entry for e in self._by_kind[EntryKind.URL]}
        self._domains = {e.value: e.entry for e in self._by_kind[EntryKind.DOMAIN]}
        self._sha = {e.value: e.entry for e in self._by_kind[EntryKind.SHA256]}
        phashes = self._by_kind[EntryKind.PHASH]
        self._phash_values = hex_to_uint64([e.value for e in phashes])[0]
        self._phash_entries = phashes

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, out: str | Path) -> "Blocklist":
        path = Path(out) / BLOCKLIST_FILE
        if not path.is_file():
            return cls([])
        lines = path.read_text(encoding="utf-8").splitlines()
        return cls([BlockEntry.from_json(line) for line in lines if line.strip()])

    def extended(self, new: list[BlockEntry]) -> "Blocklist":
        """This blocklist plus the entries of ``new`` it does not have yet."""
        seen = {e.identity() for e in self.entries}
        added = []
        for e in new:
            if e.identity() not in seen:
                seen.add(e.identity())
                added.append(e)
        return Blocklist(self.entries + added)

    def save(self, out: str | Path) -> Path:
        body = "".join(e.to_json() + "\n" for e in self.entries)
        return atomic_write_bytes(body.encode("utf-8"), Path(out) / BLOCKLIST_FILE)

    def match(self, table: pa.Table) -> list[str | None]:
        """Per row of ``table``: the takedown line that blocks it, or None."""
        n = table.num_rows
        found: list[str | None] = [None] * n
        if not self.entries or n == 0:
            return found
        self._match_phash(table, found)
        if self._sha and "sha256" in table.column_names:
            for i, sha in enumerate(table.column("sha256").to_pylist()):
                if sha is not None and sha.lower() in self._sha:
                    found[i] = self._sha[sha.lower()]
        if self._urls or self._domains:
            columns = [table.column(c).to_pylist() for c in URL_COLUMNS if c in table.column_names]
            for i, urls in enumerate(zip(*columns)):
                hit = self._match_urls([u for u in urls if u])
                if hit is not None:
                    found[i] = hit
        return found

    def _match_urls(self, urls: list[str]) -> str | None:
        for url in urls:
            if self._urls and (hit := self._urls.get(normalize_url(url))) is not None:
                return hit
            host = host_of(url) if self._domains else None
            while host:
                if host in self._domains:
                    return self._domains[host]
                host = host.partition(".")[2]
        return None

    def _match_phash(self, table: pa.Table, found: list[str | None]) -> None:
        if not self._phash_entries or "phash" not in table.column_names:
            return
        hashes, valid = hex_to_uint64(table.column("phash").to_pylist())
        rows = np.flatnonzero(valid)
        widest = max(e.max_distance for e in self._phash_entries)
        pairs = near_pairs_between(hashes[rows], self._phash_values, widest)
        for q, r in pairs.tolist():
            entry = self._phash_entries[r]
            if hamming(hashes[rows[q]], self._phash_values[r]) <= entry.max_distance:
                found[int(rows[q])] = entry.entry
