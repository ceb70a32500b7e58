"""Semantic near-duplicates: pairs of image embeddings with cosine similarity >= a threshold.

Exact search by chunked matrix products over L2-normalised float32 copies of the
fp16 embeddings: O(n_query * n_reference * dim) multiply-adds and
a float32 copy of both sets plus at most ``max_block`` floats per step. On 2 CPU
cores 10^5 new samples against 10^6 indexed ones (dim 512, 2 GB of float32)
take on the order of 15 minutes; beyond that an approximate index (e.g. faiss
IVF/HNSW) should replace :func:`cosine_pairs`.
"""

from __future__ import annotations

import numpy as np

def validate_threshold(threshold: float) -> float:
    """Return ``threshold`` if it is a cosine in (0, 1], else raise ValueError."""
    value = float(threshold)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"semantic-dedup threshold must be a cosine similarity in (0, 1], got {threshold}")
    return value


def normalize(embeddings: np.ndarray) -> np.ndarray:
    """Float32 rows scaled to unit length; all-zero rows (no embedding) stay zero."""
    emb = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)


def cosine_pairs(
    queries: np.ndarray, reference: np.ndarray, threshold: float, *, same: bool = False, max_block: int = 1 << 25
) -> np.ndarray:
    """``(P, 2)`` pairs ``(q, r)`` with cosine >= threshold; ``same=True``: one set, only ``q < r``.

    Each step multiplies a chunk of queries by the reference, at most ``max_block`` floats.
    """
    q, r = normalize(queries), normalize(reference)
    # fp16 round-trips can put an identical pair a hair under 1.0.
    cut = np.float32(threshold) - np.float32(1e-4)
    chunk = max(1, min(q.shape[0], max_block // max(r.shape[0], 1)))
    found: list[np.ndarray] = []
    for start in range(0, q.shape[0], chunk):
        first_col = start if same else 0  # same set: only columns at or after the chunk's rows
        block = q[start : start + chunk] @ r[first_col:].T
        qi, ri = np.nonzero(block >= cut)
        ri = ri + first_col
        qi = qi + start
        keep = ri > qi if same else np.ones(qi.size, dtype=bool)
        found.append(np.stack([qi[keep], ri[keep]], axis=1))
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), dtype=np.int64)
