"""shards.near_index against brute force: random hashes, planted clusters, every plan, edge cases."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from shards.near_index import (
    MAX_DISTANCE,
    BlockPlan,
    _greedy_cover,
    _position_pairs,
    _uncovered,
    near_pairs,
    near_pairs_between,
    plan_blocks,
    validate_distance,
)
from common.phash import hamming

U64_MAX = np.iinfo(np.uint64).max


def brute_force(hashes: np.ndarray, d: int) -> np.ndarray:
    """Every (i, j), i < j, within distance d, sorted: the reference."""
    i, j = np.triu_indices(hashes.size, 1)
    close = hamming(hashes[i], hashes[j]) <= d
    return np.stack([i[close], j[close]], axis=1).astype(np.int64)


def random_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, U64_MAX, n, dtype=np.uint64, endpoint=True)


def flip_bits(rng: np.random.Generator, values: np.ndarray, k: int) -> np.ndarray:
    """``values`` with exactly ``k`` distinct random bits flipped in each."""
    if k == 0:
        return values.copy()
    bits = np.argsort(rng.random((values.size, 64)), axis=1)[:, :k].astype(np.uint64)
    return values ^ np.bitwise_or.reduce(np.uint64(1) << bits, axis=1)


def planted_clusters(rng: np.random.Generator, n_random: int, d: int, clusters: int, size: int) -> np.ndarray:
    """Random hashes plus clusters of ``size`` hashes around a centre, shuffled.

    Members are within d // 2 + 1 bits of their centre, so pairs inside a cluster fall on
    both sides of d (and exactly at d), the boundary where a search can go wrong.
    """
    parts = [random_hashes(rng, n_random)]
    for centre in random_hashes(rng, clusters):
        radii = rng.integers(0, d // 2 + 2, size)
        parts.append(np.concatenate([flip_bits(rng, np.array([centre] * 1, dtype=np.uint64), int(r)) for r in radii]))
    hashes = np.concatenate(parts)
    return hashes[rng.permutation(hashes.size)]


def adversarial_pairs(rng: np.random.Generator, plan: BlockPlan) -> np.ndarray:
    """For every set of d blocks: a pair differing by one bit in each of them (distance exactly d)."""
    d = plan.max_distance
    pairs = []
    for spoiled in combinations(range(len(plan.blocks)), d):
        base = random_hashes(rng, 1)[0]
        flips = sum(1 << (plan.blocks[b][0] + int(rng.integers(plan.blocks[b][1]))) for b in spoiled)
        pairs += [base, base ^ np.uint64(flips)]
    return np.array(pairs, dtype=np.uint64)


# --- exactness -------------------------------------------------------------------


@pytest.mark.parametrize("d", [0, 1, 2, 3, 4, 5, 8, 12, 16])
@pytest.mark.parametrize("n", [2, 3, 57, 700])
def test_random_and_planted_clusters_equal_brute_force(d, n):
    rng = np.random.default_rng(1000 * d + n)
    hashes = planted_clusters(rng, n, d, clusters=max(1, n // 40), size=6)
    found = near_pairs(hashes, d)
    assert found.dtype == np.int64 and found.shape[1] == 2
    assert np.array_equal(found, brute_force(hashes, d))


@pytest.mark.parametrize(
    "d, n_planned",
    [(d, n) for d in (1, 2, 3, 4, 6) for n in (10**6, 10**7, 3 * 10**7, 10**9)] + [(8, 10**6), (8, 10**7)],
)
def test_plans_for_large_inputs_are_exact_on_small_ones(d, n_planned):
    """The covering plans chosen for millions of hashes, run on a few thousand, against brute force."""
    plan = plan_blocks(n_planned, d)
    assert plan.is_exact()
    rng = np.random.default_rng(d * 7 + n_planned % 97)
    hashes = np.concatenate([planted_clusters(rng, 1500, d, clusters=40, size=5), adversarial_pairs(rng, plan)[:2000]])
    found = near_pairs(hashes, d, plan)
    assert np.array_equal(found, brute_force(hashes, d))


def test_every_spoiled_block_set_is_found():
    """A pair spoiled in exactly the d blocks of each possible choice is found by the covering plan."""
    plan = plan_blocks(10**7, 4)
    assert plan.keys is not None and len(plan.keys) < math.comb(len(plan.blocks), 4)
    hashes = adversarial_pairs(np.random.default_rng(3), plan)
    found = near_pairs(hashes, 4, plan)
    expected = np.stack([np.arange(0, hashes.size, 2), np.arange(1, hashes.size, 2)], axis=1)
    assert np.array_equal(found, expected)


def test_an_inexact_plan_misses_pairs():
    """The checks above can fail: drop one key of a covering and a spoiled pair is lost."""
    plan = plan_blocks(10**7, 4)
    broken = BlockPlan(plan.max_distance, plan.blocks, plan.must_match, plan.keys[1:])
    assert not broken.is_exact()
    hashes = adversarial_pairs(np.random.default_rng(4), plan)
    assert near_pairs(hashes, 4, broken).shape[0] < hashes.size // 2


def test_larger_random_input_equals_brute_force():
    rng = np.random.default_rng(5)
    hashes = planted_clusters(rng, 4000, 4, clusters=100, size=8)
    assert np.array_equal(near_pairs(hashes, 4), brute_force(hashes, 4))


# --- edge cases --------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_hashes(n):
    found = near_pairs(np.zeros(n, dtype=np.uint64), 4)
    assert found.shape == (0, 2) and found.dtype == np.int64


@pytest.mark.parametrize("d", [0, 4, 16])
def test_all_identical_hashes(d):
    hashes = np.full(120, 0xDEADBEEF12345678, dtype=np.uint64)
    found = near_pairs(hashes, d)
    assert found.shape == (120 * 119 // 2, 2)
    assert np.array_equal(found, brute_force(hashes, d))


def test_distance_zero_is_exact_equality():
    rng = np.random.default_rng(6)
    values = random_hashes(rng, 50)
    hashes = np.concatenate([values, values[:10], flip_bits(rng, values[10:20], 1)])
    found = near_pairs(hashes, 0)
    assert np.array_equal(found, np.stack([np.arange(10), np.arange(50, 60)], axis=1))
    assert np.array_equal(found, brute_force(hashes, 0))


def test_distance_sixteen_boundary():
    rng = np.random.default_rng(7)
    base = random_hashes(rng, 60)
    hashes = np.concatenate([base, flip_bits(rng, base[:30], 16), flip_bits(rng, base[30:], 17)])
    found = near_pairs(hashes, MAX_DISTANCE)
    assert np.array_equal(found, brute_force(hashes, MAX_DISTANCE))
    assert {(i, i + 60) for i in range(30)} <= set(map(tuple, found.tolist()))
    assert not {(i, i + 60) for i in range(30, 60)} & set(map(tuple, found.tolist()))


def test_extreme_values_and_sorted_output():
    hashes = np.array([U64_MAX, 0, U64_MAX ^ 1, 1, 3, U64_MAX, 0], dtype=np.uint64)
    found = near_pairs(hashes, 2)
    assert np.array_equal(found, brute_force(hashes, 2))
    assert (found[:, 0] < found[:, 1]).all()
    assert np.array_equal(found, found[np.lexsort((found[:, 1], found[:, 0]))])


def test_accepts_python_ints_and_signed_arrays():
    assert near_pairs([5, 4, 1 << 40], 1).tolist() == [[0, 1]]


# --- near_pairs_between, plans, validation ----------------------------------------------


@pytest.mark.parametrize("d", [0, 3, 8])
def test_near_pairs_between_equals_brute_force(d):
    rng = np.random.default_rng(d + 11)
    reference = random_hashes(rng, 300)
    queries = np.concatenate([flip_bits(rng, reference[:40], d), random_hashes(rng, 100), reference[40:45]])
    found = near_pairs_between(queries, reference, d)
    q, r = np.meshgrid(np.arange(queries.size), np.arange(reference.size), indexing="ij")
    close = hamming(queries[q.ravel()], reference[r.ravel()]) <= d
    expected = np.stack([q.ravel()[close], r.ravel()[close]], axis=1)
    order = lambda p: p[np.lexsort((p[:, 1], p[:, 0]))]  # noqa: E731
    assert np.array_equal(order(found), order(expected))
    assert near_pairs_between(queries, reference[:0], d).shape == (0, 2)


@pytest.mark.parametrize("d", range(MAX_DISTANCE + 1))
def test_every_chosen_plan_is_exact(d):
    for n in (2, 1000, 10**5, 10**6, 10**7, 10**8, 10**9):
        plan = plan_blocks(n, d)
        assert plan.max_distance == d
        assert sum(w for _, w in plan.blocks) == 64
        assert plan.keys is None or all(len(k) == plan.must_match for k in plan.keys)
        assert plan.is_exact()
        if plan.keys is not None:
            assert _uncovered(len(plan.blocks), plan.keys, d) == 0


def test_greedy_covers_are_exact_and_smaller_than_every_combination():
    for m, k, d in [(9, 3, 4), (10, 4, 4), (13, 6, 4), (13, 4, 8), (8, 4, 2)]:
        keys = _greedy_cover(m, k, d)
        plan = BlockPlan(d, tuple((0, 1) for _ in range(m)), k, keys)
        assert plan.is_exact()
        assert len(keys) < math.comb(m, k)
        every = BlockPlan(d, plan.blocks, k)
        assert every.is_exact() and _uncovered(m, every.key_blocks(), d) == 0
    assert _greedy_cover(8, 5, 4) is None  # 5 + 4 > 8 blocks: no key can survive 4 spoiled blocks


def test_plans_grow_with_n_and_covers_cut_keys():
    small, large = plan_blocks(1000, 4), plan_blocks(10_000_000, 4)
    assert large.must_match * 64 / len(large.blocks) > small.must_match * 64 / len(small.blocks)  # longer keys
    assert len(large.masks()) < 35  # the all-combinations plan for 10M (m = 7, k = 3) has 35 keys
    with pytest.raises(ValueError):
        plan_blocks(10, 17)


@pytest.mark.parametrize("bad", [-1, 17, True, 2.5, "4", None])
def test_validate_distance_rejects(bad):
    with pytest.raises(ValueError):
        validate_distance(bad)


def test_validate_distance_accepts_numpy_ints():
    assert validate_distance(np.int64(4)) == 4


@pytest.mark.parametrize("seed", range(5))
def test_position_pairs_are_every_pair_inside_each_run(seed):
    """Runs of 2 (the fast path) mixed with longer runs, adjacent or not: every pair of
    positions inside a run, once, and none across runs."""
    rng = np.random.default_rng(seed)
    runs, pos = [], 0
    for _ in range(300):
        pos += int(rng.integers(0, 4))  # 0: a run starts right after the previous one
        size = int(rng.choice([2, 2, 2, 2, 3, 4, 7]))
        runs.append(range(pos, pos + size))
        pos += size
    # a run of r words shows as its first r - 1 positions (each one's successor has the same key)
    starts = np.array([p for run in runs for p in run[:-1]], dtype=np.intp)
    # runs that touch stay apart: the last word of one is no start, so their starts are not consecutive
    want, cur = set(), []
    for p in list(starts) + [None]:
        if cur and (p is None or p != cur[-1] + 1):
            words = cur + [cur[-1] + 1]
            want |= set(combinations(words, 2))
            cur = []
        if p is not None:
            cur.append(int(p))
    firsts, seconds = _position_pairs(starts)
    got = list(zip(firsts.tolist(), seconds.tolist()))
    assert len(got) == len(set(got)) and set(got) == want
