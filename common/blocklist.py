"""Takedown entries: the takedown file format, the persistent OUT/blocklist.jsonl, matching one record.

``capcrawl remove`` writes the blocklist (shards), ``crawl``/``download --blocklist FILE``
and ``run`` read it (crawler): the format is part of the contract, so it lives here.

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

from w3lib.url import canonicalize_url


from common.errors import ConfigError
from common.phash import hamming, hex_to_uint64, phash_of_file
from common.records import ValueEnum

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


_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str) -> str:
    """The form two URLs of one resource share: scheme and host in lower case, the default port,
    the #fragment and dot segments dropped, percent-encoding made uniform (``a b``, ``a%20b``;
    ``%7E``, ``~``), query arguments sorted (w3lib's ``canonicalize_url``)."""
    url = url.strip()
    try:
        parts = urlsplit(canonicalize_url(url))
        netloc = parts.netloc.lower()
        if parts.port is not None and parts.port == _DEFAULT_PORTS.get(parts.scheme):
            netloc = netloc.rsplit(":", 1)[0]
        return parts._replace(netloc=netloc).geturl()
    except ValueError:
        pass
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
        text = path.read_text(encoding="utf-8-sig")
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


class BlockSet:
    """The entries of a blocklist, indexed for matching one record at a time (the crawl's use)."""

    def __init__(self, entries: list[BlockEntry]) -> None:
        self.entries = list(entries)
        by_kind = {kind: [e for e in entries if e.kind is kind] for kind in EntryKind}
        # values written by an older normalisation match again once normalised by this one
        self._urls = {normalize_url(e.value): e.entry for e in by_kind[EntryKind.URL]}
        # a URL on no blocked host is not normalised (the costly step) at all
        self._url_hosts = {host_of(u) for u in self._urls}
        self._domains = {e.value: e.entry for e in by_kind[EntryKind.DOMAIN]}
        self._sha = {e.value: e.entry for e in by_kind[EntryKind.SHA256]}
        self._phash_entries = by_kind[EntryKind.PHASH]
        self._phash_values = hex_to_uint64([e.value for e in self._phash_entries])[0]

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def read(cls, path: str | Path) -> "BlockSet":
        """Entries of a blocklist file (``OUT/blocklist.jsonl``); ConfigError naming a bad line."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except OSError as e:
            raise ConfigError(f"cannot read the blocklist {path}: {e.strerror}; pass the blocklist.jsonl that `capcrawl remove` writes.") from e
        entries = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entries.append(BlockEntry.from_json(line))
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"line {number} of the blocklist {path} is not a blocklist entry ({e}).") from e
        return cls(entries)

    @classmethod
    def load(cls, out: str | Path) -> "BlockSet":
        path = Path(out) / BLOCKLIST_FILE
        return cls.read(path) if path.is_file() else cls([])

    @property
    def has_content_entries(self) -> bool:
        """Whether some entries can only be matched after a download (sha256, pHash)."""
        return bool(self._sha or self._phash_entries)

    def match_urls(self, urls: list[str]) -> str | None:
        """The takedown line that blocks any of ``urls`` (by URL or by domain), or None."""
        for url in urls:
            if self._urls:
                host = host_of(url)
                if (host in self._url_hosts or (host and not host.isascii())) and \
                        (hit := self._urls.get(normalize_url(url))) is not None:
                    return hit
            host = host_of(url) if self._domains else None
            while host:
                if host in self._domains:
                    return self._domains[host]
                host = host.partition(".")[2]
        return None

    def match_content(self, sha256: str | None, phash: str | None) -> str | None:
        """The takedown line that blocks an image by its bytes' sha256 or its pHash, or None."""
        if sha256 and (hit := self._sha.get(sha256.lower())) is not None:
            return hit
        if phash and self._phash_entries:
            value, valid = hex_to_uint64([phash])
            if valid[0]:
                dist = hamming(self._phash_values, value[0])
                for entry, d in zip(self._phash_entries, dist.tolist()):
                    if d <= entry.max_distance:
                        return entry.entry
        return None
