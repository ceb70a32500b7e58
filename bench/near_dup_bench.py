"""Benchmark the multi-index-hashing near-duplicate search on synthetic 64-bit hashes.

    .venv/bin/python bench/near_dup_bench.py --n 1000000
    .venv/bin/python bench/near_dup_bench.py --n 10000000 --distance 4

Plants ``--planted`` (fraction) near duplicates at a Hamming distance drawn from
1..distance, runs :func:`shards.near_index.near_pairs`, and reports wall time,
peak RSS and the recall of the planted pairs.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shards.near_index import near_pairs, plan_blocks  # noqa: E402

log = logging.getLogger("near_dup_bench")


def synthetic_hashes(n: int, planted_fraction: float, distance: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random hashes with planted near duplicates; returns ``(hashes, planted (P, 2) pairs)``."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
    n_planted = int(n * planted_fraction)
    src = rng.choice(n, size=2 * n_planted, replace=False)
    originals, copies = src[:n_planted], src[n_planted:]
    flipped = np.zeros(n_planted, dtype=np.uint64)
    dists = rng.integers(1, distance + 1, size=n_planted)
    for k in range(1, distance + 1):  # flip k distinct random bits for the copies at distance k
        rows = np.flatnonzero(dists == k)
        bits = np.argsort(rng.random((rows.size, 64)), axis=1)[:, :k].astype(np.uint64)
        flipped[rows] = np.bitwise_or.reduce(np.uint64(1) << bits, axis=1)
    hashes[copies] = hashes[originals] ^ flipped
    planted = np.stack([np.minimum(originals, copies), np.maximum(originals, copies)], axis=1)
    return hashes, planted


def recall(found: np.ndarray, planted: np.ndarray) -> float:
    """Fraction of planted pairs present in ``found``."""
    if planted.size == 0:
        return 1.0
    enc = lambda p: (p[:, 0].astype(np.uint64) << np.uint64(32)) | p[:, 1].astype(np.uint64)  # noqa: E731
    return float(np.isin(enc(planted), enc(found)).mean())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--distance", type=int, default=4)
    parser.add_argument("--planted", type=float, default=0.01, help="fraction of hashes that are planted copies")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    hashes, planted = synthetic_hashes(args.n, args.planted, args.distance, args.seed)
    plan = plan_blocks(args.n, args.distance)
    start = time.perf_counter()
    found = near_pairs(hashes, args.distance, plan)
    elapsed = time.perf_counter() - start
    result = {
        "n": args.n,
        "distance": args.distance,
        "blocks": len(plan.blocks),
        "must_match": plan.must_match,
        "seconds": round(elapsed, 2),
        "pairs_found": int(found.shape[0]),
        "planted_pairs": int(planted.shape[0]),
        "recall": recall(found, planted),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    log.info(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
