"""Choose which samples survive deduplication, and record what each dropped one duplicates.

Nodes are the samples already in OUT (``existing``, always kept: they are published)
followed by this run's candidates. A candidate is dropped when it duplicates a
kept node of better priority; survivors are chosen greedily in priority order:

1. licence known (non-empty ``license``) first,
2. higher ``clip_score`` (null last),
3. larger ``original_width * original_height``,
4. ``url`` in lexicographic order,
5. input order (part, row) as the last tie-break,

and samples already in OUT come before all of them. The stages run in order:
exact (same sha256), near (pHash Hamming distance <= d, via
:mod:`shards.near_index`), semantic (embedding cosine >= T, via
:mod:`shards.semantic`); each sees only the survivors of the one before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.phash import hamming
from common.records import DropReason
from shards.near_index import near_pairs
from shards.semantic import cosine_pairs, normalize

KEPT = -1


@dataclass
class HashSet:
    """The dedup-relevant fields of a set of samples, row-aligned."""

    sha256: pa.Array | list[str | None]  # string; an Arrow array keeps a million hex digests out of Python objects
    phash: np.ndarray  # uint64
    phash_valid: np.ndarray  # bool
    embeddings: np.ndarray | None = None  # (n, dim) float16; all-zero row = none

    def __len__(self) -> int:
        return len(self.sha256)


@dataclass
class Verdicts:
    """Per candidate: drop reason (None = kept), the node it duplicates (-1 none) and a detail."""

    reason: list[str | None]
    dup_of: np.ndarray  # node ids: < n_existing are samples in OUT, else n_existing + candidate row
    detail: list[str | None]
    n_existing: int
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int, n_existing: int) -> "Verdicts":
        return cls([None] * n, np.full(n, KEPT, dtype=np.int64), [None] * n, n_existing)

    @property
    def kept(self) -> np.ndarray:
        return np.array([r is None for r in self.reason], dtype=bool)

    def drop(self, rows: np.ndarray, reason: DropReason, dup_of: np.ndarray | None, details: list[str | None]) -> None:
        for i, row in enumerate(rows.tolist()):
            self.reason[row] = reason.value
            self.detail[row] = details[i]
            if dup_of is not None:
                self.dup_of[row] = dup_of[i]
        self.counts[reason.value] = self.counts.get(reason.value, 0) + len(rows)


def priority_rank(table: pa.Table) -> np.ndarray:
    """Rank of each row by survivor priority (0 = preferred); see the module docstring."""
    n = table.num_rows
    lic = table.column("license")
    licensed = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(lic)), 0), False)
    clip = pc.fill_null(table.column("clip_score").cast(pa.float64()), float("-inf"))
    area = pc.fill_null(
        pc.multiply(table.column("original_width").cast(pa.int64()), table.column("original_height").cast(pa.int64())),
        0,
    )
    keys = pa.table({"licensed": licensed, "clip": clip, "area": area, "url": table.column("url"), "pos": pa.array(np.arange(n))})
    order = pc.sort_indices(
        keys,
        sort_keys=[("licensed", "descending"), ("clip", "descending"), ("area", "descending"), ("url", "ascending"), ("pos", "ascending")],
    ).to_numpy()
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def greedy_survivors(edges: np.ndarray, node_rank: np.ndarray) -> np.ndarray:
    """For each node, the best-ranked kept neighbour it duplicates, or -1 if it is kept.

    Nodes with a negative rank are already published and always kept.
    """
    dup_of = [KEPT] * node_rank.size
    if edges.size:
        u, v = edges[:, 0], edges[:, 1]
        u_better = node_rank[u] < node_rank[v]
        better, worse = np.where(u_better, u, v), np.where(u_better, v, u)
        movable = node_rank[worse] >= 0
        better, worse = better[movable], worse[movable]
        order = np.lexsort((node_rank[better], node_rank[worse]))
        for w, b in zip(worse[order].tolist(), better[order].tolist()):
            # Every edge of ``b`` as the worse end came earlier, so ``b``'s fate is final.
            if dup_of[w] == KEPT and dup_of[b] == KEPT:
                dup_of[w] = b
    return np.array(dup_of, dtype=np.int64)


def _node_rank(n_existing: int, rank: np.ndarray) -> np.ndarray:
    return np.concatenate([np.arange(-n_existing, 0, dtype=np.int64), rank])


def exact_duplicates(sha: pa.Array | list[str | None], node_rank: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Per node: the best-ranked alive node with the same sha256 (itself if it is that one), -1 if no sha."""
    sha = _string_array(sha)
    codes = sha.dictionary_encode().indices.to_numpy(zero_copy_only=False)
    codes = np.where(sha.is_null().to_numpy(zero_copy_only=False), -1, codes)
    best = np.full(len(sha), KEPT, dtype=np.int64)
    nodes = np.flatnonzero(alive & (codes >= 0))
    order = nodes[np.lexsort((node_rank[nodes], codes[nodes]))]
    group_start = np.ones(order.size, dtype=bool)
    group_start[1:] = codes[order[1:]] != codes[order[:-1]]
    leaders = order[np.maximum.accumulate(np.where(group_start, np.arange(order.size), 0))]
    best[order] = leaders
    return best


def near_duplicates(hashes: np.ndarray, node_rank: np.ndarray, alive: np.ndarray, max_distance: int) -> np.ndarray:
    """Per node: the kept node it near-duplicates (pHash), or -1; identical hashes are collapsed first."""
    nodes = np.flatnonzero(alive)
    dup_of = np.full(node_rank.size, KEPT, dtype=np.int64)
    if nodes.size < 2:
        return dup_of
    values, inverse = np.unique(hashes[nodes], return_inverse=True)
    # Representative of each distinct hash: its best-ranked node.
    order = np.lexsort((node_rank[nodes], inverse))
    first = np.ones(order.size, dtype=bool)
    first[1:] = inverse[order[1:]] != inverse[order[:-1]]
    reps = nodes[order[first]]
    rep_dup = greedy_survivors(near_pairs(values, max_distance), node_rank[reps])
    rep_target = np.where(rep_dup == KEPT, reps, reps[np.maximum(rep_dup, 0)])
    target = rep_target[inverse]  # for every alive node: its rep if kept, else what the rep duplicates
    is_rep = np.zeros(node_rank.size, dtype=bool)
    is_rep[reps] = True
    rep_node_dup = np.full(node_rank.size, KEPT, dtype=np.int64)
    rep_node_dup[reps] = np.where(rep_dup == KEPT, KEPT, reps[np.maximum(rep_dup, 0)])
    dup_of[nodes] = np.where(is_rep[nodes], rep_node_dup[nodes], target)
    return dup_of


def semantic_duplicates(
    embeddings: np.ndarray, node_rank: np.ndarray, alive: np.ndarray, n_existing: int, threshold: float
) -> np.ndarray:
    """Per node: the kept node it duplicates by embedding cosine >= threshold, or -1."""
    new_nodes = np.flatnonzero(alive[n_existing:]) + n_existing
    old_nodes = np.flatnonzero(alive[:n_existing])
    edges = [new_nodes[cosine_pairs(embeddings[new_nodes], embeddings[new_nodes], threshold, same=True)]]
    if old_nodes.size and new_nodes.size:
        cross = cosine_pairs(embeddings[new_nodes], embeddings[old_nodes], threshold)
        edges.append(np.stack([new_nodes[cross[:, 0]], old_nodes[cross[:, 1]]], axis=1))
    return greedy_survivors(np.concatenate(edges).reshape(-1, 2), node_rank)


def _string_array(values: pa.Array | pa.ChunkedArray | list[str | None]) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    if not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.string())
    return values.cast(pa.string())


def _concat_hashes(existing: HashSet, new: HashSet) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([existing.phash, new.phash]), np.concatenate([existing.phash_valid, new.phash_valid])


def _embeddings(existing: HashSet, new: HashSet) -> np.ndarray | None:
    if new.embeddings is None:
        return None
    dim = new.embeddings.shape[1]
    old = existing.embeddings
    if old is None or old.ndim != 2 or old.shape[1] != dim:
        old = np.zeros((len(existing), dim), dtype=new.embeddings.dtype)
    return np.concatenate([old, new.embeddings])


def deduplicate(
    existing: HashSet,
    new: HashSet,
    rank: np.ndarray,
    *,
    blocked: list[str | None],
    max_distance: int,
    semantic_threshold: float | None = None,
    verdicts: Verdicts | None = None,
) -> Verdicts:
    """Decide, for every candidate in ``new``, whether it is written or dropped and why.

    ``verdicts`` may carry drops decided earlier (e.g. no caption); those rows take no part.
    """
    n_old, n_new = len(existing), len(new)
    verdicts = verdicts or Verdicts.empty(n_new, n_old)
    node_rank = _node_rank(n_old, rank)
    blocked_rows = np.array([i for i, b in enumerate(blocked) if b is not None], dtype=np.int64)
    verdicts.drop(blocked_rows, DropReason.BLOCKLISTED, None, [f"blocklist: {blocked[i]}" for i in blocked_rows])

    def alive_nodes() -> np.ndarray:
        return np.concatenate([np.ones(n_old, dtype=bool), verdicts.kept])

    sha = pa.concat_arrays([_string_array(existing.sha256), _string_array(new.sha256)])
    best = exact_duplicates(sha, node_rank, alive_nodes())
    _record(verdicts, best, DropReason.DUPLICATE_SHA256, lambda row, node: None)

    hashes, valid = _concat_hashes(existing, new)
    near = near_duplicates(hashes, node_rank, alive_nodes() & valid, max_distance)
    _record(verdicts, near, DropReason.NEAR_DUPLICATE, lambda row, node: f"hamming={int(hamming(hashes[n_old + row], hashes[node]))}")

    emb = _embeddings(existing, new) if semantic_threshold is not None else None
    if emb is not None:
        sem = semantic_duplicates(emb, node_rank, alive_nodes(), n_old, semantic_threshold)
        unit = lambda i: normalize(emb[i : i + 1])[0]  # noqa: E731
        _record(verdicts, sem, DropReason.SEMANTIC_DUPLICATE, lambda row, node: f"cosine={float(unit(n_old + row) @ unit(node)):.4f}")
    return verdicts


def _record(verdicts: Verdicts, dup_of_nodes: np.ndarray, reason: DropReason, describe) -> None:
    """Drop the candidates whose node points at another node."""
    n_old = verdicts.n_existing
    target = dup_of_nodes[n_old:]
    rows = np.flatnonzero((target != KEPT) & (target != np.arange(target.size) + n_old) & verdicts.kept)
    verdicts.drop(rows, reason, target[rows], [describe(int(r), int(target[r])) for r in rows])
