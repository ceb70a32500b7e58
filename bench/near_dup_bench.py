"""Benchmark the multi-index-hashing near-duplicate search on synthetic 64-bit hashes.

    flock /tmp/capcrawl-cpu.lock .venv/bin/python bench/near_dup_bench.py \\
        --sizes 1000000 10000000 30000000 --compare-sizes 1000000 10000000 --rounds 3

Every measurement runs in a fresh subprocess (so the peak RSS of one size does not
pollute the next): it plants ``--planted`` (fraction) near duplicates at a Hamming
distance drawn from 1..distance, runs the search, and reports wall time, peak RSS,
pairs found, the recall of the planted pairs (each planted pair is brute-force
close by construction) and that every pair found is within the distance.

``--sizes`` are measured with the current :func:`shards.near_index.near_pairs`;
at ``--compare-sizes`` the baseline and the current one are alternated ``--rounds``
times on the same hashes and the old/new ratio of the median times is reported, with
time(10x n)/time(n), and that of numpy's sort of n words alone (the floor of any method that
sorts n words per key). The baseline is the algorithm before covering designs (copied
below), or with ``--baseline REV`` the ``shards/near_index.py`` of that git revision:

    .venv/bin/python bench/near_dup_bench.py --sizes --compare-sizes 1000000 10000000 --rounds 5 --baseline 8fe3d5f
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import statistics
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shards.near_index import near_pairs, plan_blocks  # noqa: E402
from common.phash import PHASH_BITS, hamming  # noqa: E402

log = logging.getLogger("near_dup_bench")

# --- the baseline: shards/near_index.py as of commit 3427954 (all C(m, m-d) block combinations) ---

_OLD_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _old_split_bits(m: int) -> tuple[tuple[int, int], ...]:
    widths = [PHASH_BITS // m + (1 if i < PHASH_BITS % m else 0) for i in range(m)]
    shifts = np.cumsum([0] + widths[:-1])
    return tuple((int(s), w) for s, w in zip(shifts, widths))


def _old_plan(n: int, d: int) -> tuple[int, list[np.uint64]]:
    """(m, masks) of the baseline's cost model: every k = m - d of m blocks."""
    if d == 0:
        return 1, [np.uint64(0xFFFFFFFFFFFFFFFF)]

    def cost(m: int) -> float:
        k = m - d
        return math.comb(m, k) * n + math.comb(m, k) * (n * n / 2.0) / 2.0 ** (PHASH_BITS * k / m) * 4.0

    m = min(range(d + 1, min(PHASH_BITS, d + 9) + 1), key=cost)
    block_masks = [((1 << w) - 1) << s for s, w in _old_split_bits(m)]
    return m, [np.uint64(sum(c)) for c in combinations(block_masks, m - d)]


@dataclass
class _OldScratch:
    positions: np.ndarray
    packed: np.ndarray
    diff: np.ndarray
    same: np.ndarray


def _old_bucket_pairs(hashes: np.ndarray, mask: np.uint64, idx_bits: int, scratch: _OldScratch) -> tuple[np.ndarray, np.ndarray]:
    n = hashes.size
    idx_mask = np.uint64((1 << idx_bits) - 1)
    packed = scratch.packed
    np.bitwise_and(hashes, mask, out=packed)
    packed *= _OLD_GOLDEN
    packed &= ~idx_mask
    packed |= scratch.positions
    packed.sort()
    np.bitwise_xor(packed[1:], packed[:-1], out=scratch.diff)
    np.less_equal(scratch.diff, idx_mask, out=scratch.same)
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


def old_near_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """The baseline search: same contract as :func:`shards.near_index.near_pairs`."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = hashes.size
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    _, masks = _old_plan(n, max_distance)
    idx_bits = max(1, int(n - 1).bit_length())
    scratch = _OldScratch(np.arange(n, dtype=np.uint64), np.empty(n, np.uint64), np.empty(n - 1, np.uint64), np.empty(n - 1, bool))
    found = []
    for mask in masks:
        a, b = _old_bucket_pairs(hashes, mask, idx_bits, scratch)
        close = hamming(hashes[a], hashes[b]) <= max_distance
        lo, hi = np.minimum(a[close], b[close]), np.maximum(a[close], b[close])
        found.append((lo.astype(np.uint64) << np.uint64(32)) | hi.astype(np.uint64))
    pairs = np.unique(np.concatenate(found))
    return np.stack([(pairs >> np.uint64(32)).astype(np.int64), (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)], axis=1)


# --- data and checks ---


def synthetic_hashes(n: int, planted_fraction: float, distance: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random hashes with planted near duplicates; returns ``(hashes, planted (P, 2) pairs)``."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
    n_planted = int(n * planted_fraction)
    src = rng.choice(n, size=2 * n_planted, replace=False)
    originals, copies = src[:n_planted], src[n_planted:]
    flipped = np.zeros(n_planted, dtype=np.uint64)
    dists = rng.integers(1, distance + 1, size=n_planted) if distance else np.zeros(n_planted, dtype=np.int64)
    for k in range(1, distance + 1):  # flip k distinct random bits for the copies at distance k
        rows = np.flatnonzero(dists == k)
        bits = np.argsort(rng.random((rows.size, 64)), axis=1)[:, :k].astype(np.uint64)
        flipped[rows] = np.bitwise_or.reduce(np.uint64(1) << bits, axis=1)
    hashes[copies] = hashes[originals] ^ flipped
    planted = np.stack([np.minimum(originals, copies), np.maximum(originals, copies)], axis=1)
    return hashes, planted


def _encode(pairs: np.ndarray) -> np.ndarray:
    return (pairs[:, 0].astype(np.uint64) << np.uint64(32)) | pairs[:, 1].astype(np.uint64)


def recall(found: np.ndarray, planted: np.ndarray, hashes: np.ndarray, distance: int) -> float:
    """Fraction of the planted pairs (checked close by brute force) present in ``found``."""
    assert (hamming(hashes[planted[:, 0]], hashes[planted[:, 1]]) <= distance).all()
    if planted.size == 0:
        return 1.0
    return float(np.isin(_encode(planted), _encode(found)).mean())


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def baseline_module(rev: str) -> types.ModuleType:
    """``shards/near_index.py`` as of git revision ``rev``, loaded as a module of its own."""
    repo = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(repo), "show", f"{rev}:shards/near_index.py"], check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("baseline_near_index")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:shards/near_index.py", "exec"), module.__dict__)
    return module


def measure(n: int, distance: int, planted_fraction: float, seed: int, algo: str, baseline: str | None = None) -> dict:
    """One run in this process: generate, search, check."""
    start = time.perf_counter()
    hashes, planted = synthetic_hashes(n, planted_fraction, distance, seed)
    generate_s = time.perf_counter() - start
    rss_before = _current_rss_mib()
    module = baseline_module(baseline) if algo == "old" and baseline else None
    search = module.near_pairs if module else old_near_pairs if algo == "old" else near_pairs
    start = time.perf_counter()
    found = search(hashes, distance)
    elapsed = time.perf_counter() - start
    sort_s = sort_seconds(n)
    plan = _old_plan(n, distance) if algo == "old" and not module else None
    new_plan = (module.plan_blocks if module else plan_blocks)(n, distance)
    return {
        "algo": algo if not module else f"{algo} ({baseline})",
        "n": n,
        "distance": distance,
        "keys": len(plan[1]) if plan else len(new_plan.masks()),
        "blocks": plan[0] if plan else len(new_plan.blocks),
        "seconds": round(elapsed, 3),
        "np_sort_s": round(sort_s, 4),
        "generate_s": round(generate_s, 2),
        "pairs_found": int(found.shape[0]),
        "planted_pairs": int(planted.shape[0]),
        "recall": recall(found, planted, hashes, distance),
        "all_found_within_distance": bool((hamming(hashes[found[:, 0]], hashes[found[:, 1]]) <= distance).all()),
        "rss_before_search_mib": round(rss_before, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def sort_seconds(n: int, rounds: int = 3) -> float:
    """Best time of numpy's sort of ``n`` random uint64 words (the sort every key of the search runs).

    Its growth from n to 10n is the floor of the search's own: no method that sorts n words
    per key scales better than the sort does.
    """
    words = np.random.default_rng(n).integers(0, 2**63, size=n, dtype=np.uint64)
    best = math.inf
    for _ in range(rounds):
        copy = words.copy()
        start = time.perf_counter()
        copy.sort()
        best = min(best, time.perf_counter() - start)
    return best


def run_fresh(n: int, args: argparse.Namespace, algo: str) -> dict:
    """:func:`measure` in a fresh Python process."""
    cmd = [sys.executable, __file__, "--worker", "--algo", algo, "--n", str(n), "--distance", str(args.distance), "--planted", str(args.planted), "--seed", str(args.seed)]
    if args.baseline:
        cmd += ["--baseline", args.baseline]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    log.info(json.dumps(result))
    return result


def compare(args: argparse.Namespace) -> dict:
    """Old and new alternated (order flipped every round) at each compare size."""
    times: dict[tuple[int, str], list[float]] = {}
    sorts: dict[int, list[float]] = {}
    runs = []
    for r in range(args.rounds):
        for n in args.compare_sizes:
            for algo in (("old", "new") if r % 2 == 0 else ("new", "old")):
                result = run_fresh(n, args, algo)
                runs.append(result)
                times.setdefault((n, algo), []).append(result["seconds"])
                sorts.setdefault(n, []).append(result["np_sort_s"])
    summary = {}
    for n in args.compare_sizes:
        old, new = statistics.median(times[(n, "old")]), statistics.median(times[(n, "new")])
        summary[n] = {"old_median_s": old, "new_median_s": new, "old_over_new": round(old / new, 2), "old_s": times[(n, "old")], "new_s": times[(n, "new")]}
    sizes = sorted(args.compare_sizes)
    for a, b in zip(sizes, sizes[1:]):
        for algo in ("old", "new"):
            ratio = summary[b][f"{algo}_median_s"] / summary[a][f"{algo}_median_s"]
            summary[f"{algo} time({b})/time({a})"] = round(ratio, 2)
        summary[f"np.sort time({b})/time({a})"] = round(statistics.median(sorts[b]) / statistics.median(sorts[a]), 2)
    return {"runs": runs, "summary": summary}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--compare-sizes", type=int, nargs="*", default=[], help="sizes where old and new are alternated")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of old and new per compare size")
    parser.add_argument("--distance", type=int, default=4)
    parser.add_argument("--planted", type=float, default=0.01, help="fraction of hashes that are planted copies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", metavar="REV", help="compare against shards/near_index.py of this git revision")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--algo", choices=["old", "new"], default="new", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.n, args.distance, args.planted, args.seed, args.algo, args.baseline)))
        return {}
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = {"sizes": [run_fresh(n, args, "new") for n in args.sizes]}
    if args.compare_sizes:
        results["compare"] = compare(args)
        log.info(json.dumps(results["compare"]["summary"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
