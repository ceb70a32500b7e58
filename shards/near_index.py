"""Near-duplicate search over 64-bit hashes by multi-index hashing (no all-pairs).

Split the 64 bits into ``m`` contiguous blocks. If two hashes differ in at most
``d`` bits, those bits spoil at most ``d`` blocks. A *key* is a set of blocks, and
a family of keys is exact for ``d`` when every choice of ``d`` blocks leaves at
least one key untouched (a covering design): then two hashes within distance ``d``
agree exactly on every bit of some key. For every key the hashes are bucketed on
its bits (one vectorised sort of ``hash(key bits) << idx_bits | idx``), hashes
sharing a bucket become candidates, and candidates are verified with XOR +
popcount. Every pair within distance ``d`` is found (exact recall).

The plain pigeonhole family is every ``k = m - d`` of the ``m`` blocks: ``C(m, k)``
keys. With ``k < m - d`` far fewer keys can do: a greedy covering, built once per
``(m, k, d)``, e.g. for d = 4, 21 keys of 4 of 10 blocks (25.6-bit keys) instead of
35 keys of 3 of 7 blocks (27.4 bits). A cost model picks ``m``, ``k`` and the
keys for the number of hashes given: every key costs a sort of ``n`` words, every
candidate pair two random reads and a popcount, so more hashes call for longer
keys, hence more of them. The number of keys therefore grows with ``n`` (for d = 4:
21 keys up to 10M hashes, 32 at 30M, 38 at 100M, 51 at 1B), and so does the time per
hash: no exact method of this family is linear in ``n`` (see ``bench/near_dup_bench.py``).

The streaming steps of a pass (building the sort words, finding equal neighbours)
run over cache-sized slices; the sort itself is numpy's, whose time per element
barely changes from 1M to 30M words. Memory: the hashes, one array of ``n``
uint64 sort words and the candidates of one key (about 16 bytes per hash).
Output is every pair within ``d``, so a cluster of ``L`` mutually close hashes
yields ``L*(L-1)/2`` pairs: callers should collapse identical hashes first (see
:func:`shards.dedup`).

This module knows nothing of images: the hash function lives in
:mod:`common.phash`, the choice of survivors in :mod:`shards.dedup`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from common.phash import PHASH_BITS

MAX_DISTANCE = 16
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for multiplicative hashing
_PASS_COST = 1.0  # relative cost of one element in one bucketing pass (a sort of n words)
_CANDIDATE_COST = 6.0  # relative cost of one candidate pair (built, two random reads, popcount): 2..8 measured
_MAX_EXTRA_BLOCKS = 12  # m ranges over d+1 .. d+1+_MAX_EXTRA_BLOCKS
_COVER_TABLE_LIMIT = 4_000_000  # largest (keys x d-sets) table a greedy covering is built from
_COVER_MIN_HASHES = 1 << 18  # below this, building a covering (up to ~0.1 s) costs more than it saves
_CHUNK = 1 << 17  # words per slice of the streaming steps (1 MiB of uint64; 2**13..2**17 measured, larger was faster)
_CANDIDATE_SLICE = 1 << 20  # run starts whose candidate pairs are built and verified together
_PAIR_SHIFT = np.uint64(32)  # pairs are encoded as i << 32 | j while they are collected


def validate_distance(max_distance: int) -> int:
    """Return ``max_distance`` if it is an int in 0..MAX_DISTANCE, else raise ValueError."""
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)):
        raise ValueError(f"near-duplicate distance must be an integer, got {max_distance!r}")
    if not 0 <= int(max_distance) <= MAX_DISTANCE:
        raise ValueError(f"near-duplicate distance must be between 0 and {MAX_DISTANCE} bits, got {max_distance}")
    return int(max_distance)


@dataclass(frozen=True)
class BlockPlan:
    """How the 64 bits are split into ``blocks`` of (shift, width), and which sets of blocks are keys.

    Every key has ``must_match`` blocks; ``keys`` lists them as block indexes, or is None
    for every combination of ``must_match`` blocks (exact when ``must_match <= m - d``).
    """

    max_distance: int
    blocks: tuple[tuple[int, int], ...]
    must_match: int
    keys: tuple[tuple[int, ...], ...] | None = None

    def key_blocks(self) -> tuple[tuple[int, ...], ...]:
        """The keys as tuples of block indexes."""
        if self.keys is not None:
            return self.keys
        return tuple(combinations(range(len(self.blocks)), self.must_match))

    def masks(self) -> list[np.uint64]:
        """One bit mask per key."""
        block_masks = [((1 << width) - 1) << shift for shift, width in self.blocks]
        return [np.uint64(sum(block_masks[b] for b in key)) for key in self.key_blocks()]

    def is_exact(self) -> bool:
        """True if every set of ``max_distance`` blocks leaves some key untouched (every close pair is found)."""
        m, d = len(self.blocks), self.max_distance
        if d >= m:
            return False
        if self.keys is None:  # every combination: any d spoiled blocks leave m - d >= must_match intact
            return 1 <= self.must_match <= m - d
        if d == 0:
            return len(self.keys) > 0
        return _uncovered(m, self.keys, d) == 0


def _bitmask(blocks: tuple[int, ...]) -> int:
    return sum(1 << b for b in blocks)


def _uncovered(m: int, keys: tuple[tuple[int, ...], ...], d: int) -> int:
    """How many sets of ``d`` of ``m`` blocks touch every key."""
    key_bits = np.array([_bitmask(k) for k in keys], dtype=np.int64)
    uncovered = 0
    for errs in _chunks(combinations(range(m), d), 50_000):
        err_bits = np.array([_bitmask(e) for e in errs], dtype=np.int64)
        uncovered += int((~((key_bits[:, None] & err_bits[None, :]) == 0).any(axis=0)).sum())
    return uncovered


def _chunks(items, size: int):
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@functools.lru_cache(maxsize=None)
def _greedy_cover(m: int, k: int, d: int) -> tuple[tuple[int, ...], ...] | None:
    """Sets of ``k`` of ``m`` blocks such that any ``d`` blocks miss one of them (greedy set cover).

    None when the table of (key, d-set) pairs would exceed ``_COVER_TABLE_LIMIT``.
    """
    if k + d > m or math.comb(m, k) * math.comb(m, d) > _COVER_TABLE_LIMIT:
        return None
    keys = list(combinations(range(m), k))
    key_bits = np.array([_bitmask(c) for c in keys], dtype=np.int64)
    err_bits = np.array([_bitmask(c) for c in combinations(range(m), d)], dtype=np.int64)
    avoids = (key_bits[:, None] & err_bits[None, :]) == 0  # key untouched by that d-set
    gains = avoids.sum(axis=1)
    uncovered = np.ones(err_bits.size, dtype=bool)
    chosen: list[tuple[int, ...]] = []
    while uncovered.any():
        best = int(np.argmax(gains))  # first of the best: deterministic
        assert gains[best] > 0, "k + d <= m, so every d-set misses some key"
        newly = avoids[best] & uncovered
        chosen.append(keys[best])
        uncovered &= ~newly
        gains -= avoids[:, newly].sum(axis=1)
    return tuple(chosen)


def _split_bits(m: int) -> tuple[tuple[int, int], ...]:
    widths = [PHASH_BITS // m + (1 if i < PHASH_BITS % m else 0) for i in range(m)]
    shifts = np.cumsum([0] + widths[:-1])
    return tuple((int(s), w) for s, w in zip(shifts, widths))


def _plan_cost(n: int, keys: int, key_bits: float) -> float:
    expected_candidates = keys * (n * (n - 1) / 2.0) / 2.0**key_bits
    return keys * n * _PASS_COST + expected_candidates * _CANDIDATE_COST


def _key_count_bound(m: int, k: int, d: int) -> int:
    """Fewest keys of ``k`` of ``m`` blocks that can be exact for ``d`` (Schönheim's bound).

    The complements of the keys (``m - k`` blocks each) must cover every ``d``-set of blocks.
    """
    free = m - k
    bound = 1
    for i in range(d - 1, -1, -1):
        bound = -(-(m - i) * bound // (free - i))
    return bound


def plan_blocks(n: int, max_distance: int) -> BlockPlan:
    """Pick the exact key family with the lowest estimated cost for ``n`` uniformly spread hashes."""
    d = validate_distance(max_distance)
    if d == 0:
        return BlockPlan(0, ((0, PHASH_BITS),), 1)
    n = max(n, 2)
    options = []  # (lower bound of the cost, m, k)
    for m in range(d + 1, min(PHASH_BITS, d + 1 + _MAX_EXTRA_BLOCKS) + 1):
        for k in range(1, m - d + 1):
            if k == m - d or n >= _COVER_MIN_HASHES:
                options.append((_plan_cost(n, _key_count_bound(m, k, d), PHASH_BITS * k / m), m, k))
    options.sort()
    best: tuple[float, BlockPlan] | None = None
    for bound, m, k in options:
        if best is not None and bound >= best[0]:
            break
        if k == m - d:  # every combination is needed (each key avoids exactly one d-set)
            plan = BlockPlan(d, _split_bits(m), k)
        else:
            keys = _greedy_cover(m, k, d)
            if keys is None:
                continue
            plan = BlockPlan(d, _split_bits(m), k, keys)
        cost = _plan_cost(n, math.comb(m, k) if plan.keys is None else len(plan.keys), PHASH_BITS * k / m)
        if best is None or cost < best[0]:
            best = (cost, plan)
    assert best is not None  # k = m - d is always an option
    return best[1]


def _index_bits(n: int) -> int:
    return max(1, int(n - 1).bit_length())


@dataclass
class _Scratch:
    """Arrays reused by every pass: the sort words, and one slice of the streaming steps."""

    packed: np.ndarray  # n uint64
    ramp: np.ndarray  # arange(_CHUNK) as uint64
    diff: np.ndarray  # _CHUNK uint64
    same: np.ndarray  # _CHUNK bool

    @classmethod
    def for_size(cls, n: int) -> "_Scratch":
        return cls(
            np.empty(n, dtype=np.uint64),
            np.arange(_CHUNK, dtype=np.uint64),
            np.empty(_CHUNK, dtype=np.uint64),
            np.empty(_CHUNK, dtype=bool),
        )


def _pack(hashes: np.ndarray, mask: np.uint64, idx_mask: np.uint64, scratch: _Scratch) -> None:
    """Fill ``scratch.packed`` with ``hash(hashes & mask)`` in the high bits and the index in the low bits.

    Multiplicative hashing squeezes the masked bits into the high bits: equal masked
    values always collide, unequal ones rarely (and are then verified away).
    """
    high = ~idx_mask
    for start in range(0, hashes.size, _CHUNK):
        stop = min(start + _CHUNK, hashes.size)
        out = scratch.packed[start:stop]
        np.bitwise_and(hashes[start:stop], mask, out=out)
        out *= _GOLDEN
        out &= high
        out |= scratch.ramp[: stop - start]
        out += np.uint64(start)  # the low bits hold ramp < _CHUNK, start + ramp < 2**idx_bits: no carry


def _run_starts(packed: np.ndarray, idx_mask: np.uint64, scratch: _Scratch) -> np.ndarray:
    """Positions ``p`` of the sorted words where ``packed[p + 1]`` has the same key as ``packed[p]``."""
    found = []
    last = packed.size - 1
    for start in range(0, last, _CHUNK):
        stop = min(start + _CHUNK, last)
        diff, same = scratch.diff[: stop - start], scratch.same[: stop - start]
        np.bitwise_xor(packed[start + 1 : stop + 1], packed[start:stop], out=diff)
        np.less_equal(diff, idx_mask, out=same)  # same key: only index bits differ
        hits = np.flatnonzero(same)
        if hits.size:
            found.append(hits + start)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.intp)


def _position_pairs(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of positions ``(p, q)``, ``p < q``, inside the runs of equal keys that ``starts`` marks.

    ``starts`` (sorted) holds each position whose successor has the same key, so a run of
    ``r`` equal words shows as ``r - 1`` consecutive positions. Most runs are pairs: their
    starts stand alone and pair with their successor directly; only the positions of longer
    runs go through the general (repeat and cumsum) construction.
    """
    chained = np.diff(starts) == 1
    if not chained.any():  # runs of two only
        return starts, starts + 1
    linked = np.zeros(starts.size, dtype=bool)
    linked[:-1] |= chained
    linked[1:] |= chained
    alone = starts[~linked]
    firsts, seconds = _long_run_pairs(starts[linked])
    return np.concatenate([alone, firsts]), np.concatenate([alone + 1, seconds])


def _long_run_pairs(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_position_pairs` for ``starts`` of runs of three or more words."""
    chained = np.diff(starts) == 1
    last_of_run = np.flatnonzero(~chained)  # indexes into starts where a run ends
    run_last = np.concatenate([starts[last_of_run], starts[-1:]]) + 1  # last position of each run
    sizes = np.diff(np.concatenate([[-1], last_of_run, [starts.size - 1]]))  # starts per run
    later = np.repeat(run_last, sizes) - starts  # how many later positions each start pairs with
    firsts = np.repeat(starts, later)
    steps = np.arange(firsts.size) - np.repeat(np.cumsum(later) - later, later)
    return firsts, firsts + steps + 1


def _close_pairs_on_key(hashes: np.ndarray, mask: np.uint64, max_distance: int, idx_bits: int, scratch: _Scratch) -> np.ndarray:
    """Pairs ``i << 32 | j`` (``i < j``) of hashes that agree on ``mask`` and are within ``max_distance``."""
    idx_mask = np.uint64((1 << idx_bits) - 1)
    packed = scratch.packed
    _pack(hashes, mask, idx_mask, scratch)
    packed.sort()
    starts = _run_starts(packed, idx_mask, scratch)
    found = []
    for lo, hi in _run_slices(starts):
        p, q = _position_pairs(starts[lo:hi])
        # Within a bucket the words are ordered by index, so first < second.
        first, second = packed[p], packed[q]
        first &= idx_mask
        second &= idx_mask
        # Index with int64, not uint64: numpy casts uint64 indexes first, which doubles a gather's cost.
        close = np.bitwise_count(hashes[first.view(np.int64)] ^ hashes[second.view(np.int64)]) <= max_distance
        if close.any():
            found.append((first[close] << _PAIR_SHIFT) | second[close])
    return np.concatenate(found) if found else np.zeros(0, dtype=np.uint64)


def _run_slices(starts: np.ndarray, size: int = _CANDIDATE_SLICE) -> list[tuple[int, int]]:
    """Slices of ``starts`` of about ``size`` that never cut a run, so candidates are built a slice at a time."""
    slices, lo = [], 0
    while lo < starts.size:
        hi = min(lo + size, starts.size)
        while hi < starts.size and starts[hi] == starts[hi - 1] + 1:
            hi += 1
        slices.append((lo, hi))
        lo = hi
    return slices


def near_pairs(hashes: np.ndarray, max_distance: int, plan: BlockPlan | None = None) -> np.ndarray:
    """All index pairs ``(i, j)``, ``i < j``, with Hamming distance <= ``max_distance``.

    Returns an ``(P, 2)`` int64 array sorted by ``(i, j)``. A ``plan`` given by the caller
    is used as is (its ``max_distance`` decides which pairs are close).
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = hashes.size
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    if n > 1 << 32:
        raise ValueError(f"near_pairs handles at most 2**32 hashes, got {n}; split the input by block value")
    plan = plan or plan_blocks(n, max_distance)
    idx_bits = _index_bits(n)
    scratch = _Scratch.for_size(n)
    found = [_close_pairs_on_key(hashes, mask, plan.max_distance, idx_bits, scratch) for mask in plan.masks()]
    del scratch
    pairs = np.unique(np.concatenate(found))
    low = np.uint64(0xFFFFFFFF)
    return np.stack([(pairs >> _PAIR_SHIFT).astype(np.int64), (pairs & low).astype(np.int64)], axis=1)


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
