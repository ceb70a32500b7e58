"""Matching a whole table of samples against the takedown blocklist (the shards stage's use).

The format, parsing and one-record matching live in :mod:`common.blocklist`; here pHash entries
are matched with the multi-index near-duplicate search, which scales to many entries and rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from common.blocklist import BLOCKLIST_FILE, URL_COLUMNS, BlockEntry, BlockSet, EntryKind, parse_takedown  # noqa: F401
from common.fileio import atomic_write_bytes
from common.phash import hamming, hex_to_uint64
from shards.near_index import near_pairs_between


class Blocklist(BlockSet):
    """The entries every ``shards`` run into OUT applies, matched a table at a time."""

    @classmethod
    def load(cls, out: str | Path) -> "Blocklist":
        return cls(BlockSet.load(out).entries)

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
                hit = self.match_urls([u for u in urls if u])
                if hit is not None:
                    found[i] = hit
        return found

    def _match_phash(self, table: pa.Table, found: list[str | None]) -> None:
        if not self._phash_entries or "phash" not in table.column_names:
            return
        hashes, valid = hex_to_uint64(table.column("phash"))
        rows = np.flatnonzero(valid)
        widest = max(e.max_distance for e in self._phash_entries)
        pairs = near_pairs_between(hashes[rows], self._phash_values, widest)
        for q, r in pairs.tolist():
            entry = self._phash_entries[r]
            if hamming(hashes[rows[q]], self._phash_values[r]) <= entry.max_distance:
                found[int(rows[q])] = entry.entry
