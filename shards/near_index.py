"""Near-duplicate search over 64-bit hashes by multi-index hashing (no all-pairs).

Split the 64 bits into ``m`` contiguous blocks. If two hashes differ in at most
``d`` bits, those bits spoil at most ``d`` blocks, so at least ``k = m - d`` blocks
agree exactly (the pigeonhole principle). For every choice of ``k`` blocks the
hashes are bucketed on those bits (one vectorised sort of ``key << idx_bits | idx``),
hashes sharing a bucket become candidates, and candidates are verified with
XOR + popcount. Every pair within distance ``d`` is found (exact recall); ``m`` is
chosen by a cost model so the buckets stay small for the number of hashes given:
more hashes call for longer keys, i.e. larger ``k``.

Cost: ``C(m, k)`` sorts of ``n`` 64-bit words plus the candidates, e.g. for d = 4
and 10M hashes: 35 sorts (m = 7, k = 3, 27-bit keys). Memory: a few arrays of
``n`` uint64 (about 0.5 GB for 10M). Output is every pair within ``d``, so a
cluster of ``L`` mutually close hashes yields ``L*(L-1)/2`` pairs: callers should
collapse identical hashes first (see :func:`shards.dedup`).

This module knows nothing of images: the hash function lives in
:mod:`common.phash`, the choice of survivors in :mod:`shards.dedup`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from common.phash import PHASH_BITS, hamming

MAX_DISTANCE = 16
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for multiplicative hashing
_SORT_COST = 1.0  # relative cost of one element in one bucketing pass
_CANDIDATE_COST = 4.0  # relative cost of generating and verifying one candidate pair
_MAX_EXTRA_BLOCKS = 8  # m ranges over d+1 .. d+1+_MAX_EXTRA_BLOCKS


def validate_distance(max_distance: int) -> int:
    """Return ``max_distance`` if it is an int in 0..MAX_DISTANCE, else raise ValueError."""
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)):
        raise ValueError(f"near-duplicate distance must be an integer, got {max_distance!r}")
    if not 0 <= int(max_distance) <= MAX_DISTANCE:
        raise ValueError(f"near-duplicate distance must be between 0 and {MAX_DISTANCE} bits, got {max_distance}")
    return int(max_distance)


@dataclass(frozen=True)
class BlockPlan:
    """How the 64 bits are split: ``blocks`` of (shift, width) of which ``must_match`` agree."""

    max_distance: int
    blocks: tuple[tuple[int, int], ...]
    must_match: int

    def masks(self) -> list[np.uint64]:
        """One bit mask per choice of ``must_match`` blocks."""
        block_masks = [((1 << width) - 1) << shift for shift, width in self.blocks]
        return [np.uint64(sum(c)) for c in combinations(block_masks, self.must_match)]


def _split_bits(m: int) -> tuple[tuple[int, int], ...]:
    widths = [PHASH_BITS // m + (1 if i < PHASH_BITS % m else 0) for i in range(m)]
    shifts = np.cumsum([0] + widths[:-1])
    return tuple((int(s), w) for s, w in zip(shifts, widths))


def _plan_cost(n: int, m: int, d: int) -> float:
    k = m - d
    combos = math.comb(m, k)
    key_bits = PHASH_BITS * k / m
    expected_candidates = combos * (n * n / 2.0) / 2.0**key_bits
    return combos * n * _SORT_COST + expected_candidates * _CANDIDATE_COST


def plan_blocks(n: int, max_distance: int) -> BlockPlan:
    """Pick the block split with the lowest estimated cost for ``n`` uniformly spread hashes."""
    d = validate_distance(max_distance)
    if d == 0:
        return BlockPlan(0, ((0, PHASH_BITS),), 1)
    candidates = range(d + 1, min(PHASH_BITS, d + 1 + _MAX_EXTRA_BLOCKS) + 1)
    m = min(candidates, key=lambda m_: _plan_cost(max(n, 2), m_, d))
    return BlockPlan(d, _split_bits(m), m - d)


def _index_bits(n: int) -> int:
    return max(1, int(n - 1).bit_length())


@dataclass
class _Scratch:
    """Arrays reused by every bucketing pass (fresh 80 MB arrays cost page faults at 10M)."""

    positions: np.ndarray  # arange(n) as uint64
    packed: np.ndarray  # n uint64
    diff: np.ndarray  # n - 1 uint64
    same: np.ndarray  # n - 1 bool

    @classmethod
    def for_size(cls, n: int) -> "_Scratch":
        return cls(
            np.arange(n, dtype=np.uint64),
            np.empty(n, dtype=np.uint64),
            np.empty(n - 1, dtype=np.uint64),
            np.empty(n - 1, dtype=bool),
        )


def _bucket_pairs(hashes: np.ndarray, mask: np.uint64, idx_bits: int, scratch: _Scratch) -> tuple[np.ndarray, np.ndarray]:
    """Candidate index pairs of hashes that agree on ``mask`` (up to rare hash collisions)."""
    n = hashes.size
    idx_mask = np.uint64((1 << idx_bits) - 1)
    packed = scratch.packed
    # Multiplicative hashing squeezes the masked bits into the 64 - idx_bits high bits;
    # equal masked values always collide, unequal ones rarely (and are then verified away).
    np.bitwise_and(hashes, mask, out=packed)
    packed *= _GOLDEN
    packed &= ~idx_mask
    packed |= scratch.positions
    packed.sort()
    np.bitwise_xor(packed[1:], packed[:-1], out=scratch.diff)
    np.less_equal(scratch.diff, idx_mask, out=scratch.same)  # same key: only index bits differ
    starts = np.flatnonzero(scratch.same)
    firsts, seconds = [], []
    offset = 1
    while starts.size:
        firsts.append(packed[starts] & idx_mask)
        seconds.append(packed[starts + offset] & idx_mask)
        offset += 1
        starts = starts[starts + offset < n]
        starts = starts[np.bitwise_xor(packed[starts + offset], packed[starts]) <= idx_mask]
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64)


def near_pairs(hashes: np.ndarray, max_distance: int, plan: BlockPlan | None = None) -> np.ndarray:
    """All index pairs ``(i, j)``, ``i < j``, with Hamming distance <= ``max_distance``.

    Returns an ``(P, 2)`` int64 array sorted by ``(i, j)``.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = hashes.size
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    plan = plan or plan_blocks(n, max_distance)
    idx_bits = _index_bits(n)
    scratch = _Scratch.for_size(n)
    found: list[np.ndarray] = []
    for mask in plan.masks():
        a, b = _bucket_pairs(hashes, mask, idx_bits, scratch)
        close = hamming(hashes[a], hashes[b]) <= plan.max_distance
        lo, hi = np.minimum(a[close], b[close]), np.maximum(a[close], b[close])
        found.append((lo.astype(np.uint64) << np.uint64(32)) | hi.astype(np.uint64))
    pairs = np.unique(np.concatenate(found))
    return np.stack([(pairs >> np.uint64(32)).astype(np.int64), (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)], axis=1)


def near_pairs_between(queries: np.ndarray, reference: np.ndarray, max_distance: int) -> np.ndarray:
    """Pairs ``(q, r)`` of query and reference indexes within ``max_distance``."""
    queries = np.asarray(queries, dtype=np.uint64)
    reference = np.asarray(reference, dtype=np.uint64)
    if queries.size == 0 or reference.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = near_pairs(np.concatenate([reference, queries]), max_distance)
    nref = reference.size
    cross = (pairs[:, 0] < nref) & (pairs[:, 1] >= nref)
    return np.stack([pairs[cross, 1] - nref, pairs[cross, 0]], axis=1)
