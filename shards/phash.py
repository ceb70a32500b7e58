"""Perceptual-hash helpers: the hash function and bit arithmetic, apart from any search index.

A pHash is the 64-bit ``imagehash.phash`` of an image (computed by
:func:`crawler.imageproc.perceptual_hash`, the one function every stage uses), stored in
records as 16 hex characters. Here it becomes a ``numpy.uint64`` so that distances are one XOR and
one popcount.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

PHASH_BITS = 64
_HEX_DIGITS = 16

# ASCII code -> nibble value; 255 marks a character that is not a hex digit.
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


def phash_of_image(image: "PIL.Image.Image") -> str:  # noqa: F821 - PIL imported lazily
    """16-hex-character pHash of a PIL image, exactly as the crawler computes it."""
    from crawler.imageproc import perceptual_hash

    return perceptual_hash(image)


def phash_of_file(path: str | Path) -> str:
    """16-hex-character pHash of a local image file."""
    from PIL import Image

    with Image.open(path) as im:
        return phash_of_image(im)


def hex_to_uint64(values: Iterable[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Parse hex pHashes into ``(uint64 array, valid mask)``; null or malformed -> valid False."""
    items = [v if isinstance(v, str) and len(v) == _HEX_DIGITS else "0" * _HEX_DIGITS for v in values]
    present = np.array([isinstance(v, str) and len(v) == _HEX_DIGITS for v in values], dtype=bool)
    if not items:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=bool)
    raw = np.frombuffer("".join(items).encode("ascii", errors="replace"), dtype=np.uint8)
    nibbles = _NIBBLE[raw].reshape(-1, _HEX_DIGITS)
    valid = present & (nibbles != 255).all(axis=1)
    nibbles = np.where(valid[:, None], nibbles, 0).astype(np.uint64)
    shifts = np.arange(_HEX_DIGITS - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    hashes = np.bitwise_or.reduce(nibbles << shifts, axis=1)
    return hashes.astype(np.uint64), valid


def uint64_to_hex(value: int | np.uint64) -> str:
    """Inverse of :func:`hex_to_uint64` for one value."""
    return f"{int(value):016x}"


def hamming(a: np.ndarray | np.uint64, b: np.ndarray | np.uint64) -> np.ndarray:
    """Elementwise Hamming distance between uint64 hashes."""
    return np.bitwise_count(np.bitwise_xor(a, b))
