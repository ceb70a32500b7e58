"""The project's one perceptual hash, and its bit arithmetic (apart from any search index).

A pHash is the 64-bit ``imagehash.phash`` of an image (:func:`perceptual_hash`: the crawl's
image workers, takedown files and test data all hash through it), stored in records as 16
hex characters. For dedup it becomes a ``numpy.uint64``, so that a distance is one XOR and
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


_PHASH_SIDE = 32  # imagehash.phash works on a 32x32 greyscale copy
_HASH_SIDE = 8  # ... and keeps the 8x8 lowest frequencies of its DCT
#: A source image for the hash needs at least this many pixels a side (it is shrunk to 32x32).
PHASH_SOURCE_MIN_SIDE = _PHASH_SIDE


def _dct_rows(scale_bits: int) -> np.ndarray:
    """The first 8 rows of the 32-point DCT-II matrix, times 2**scale_bits, rounded to integers."""
    k = np.arange(_HASH_SIDE, dtype=np.float64)[:, None]
    n = np.arange(_PHASH_SIDE, dtype=np.float64)[None, :]
    return np.rint(np.cos(np.pi * k * (2 * n + 1) / (2 * _PHASH_SIDE)) * 2.0**scale_bits)


# Integer-valued float64 matrices, so that every product and partial sum of the transform is an
# integer below 2**53 and therefore exact: columns 255 x 32 x 2**18 < 2**31, then x 32 x 2**16
# < 2**52 (and twice that, for the median test, < 2**53). Exact sums do not depend on the order
# BLAS adds them in, so the hash is the same on every CPU; in particular a coefficient that is
# zero in exact arithmetic (a flat or mirror-symmetric image) is exactly 0, not float noise.
_DCT_ROWS_A = _dct_rows(18)
_DCT_COLS_B = _dct_rows(16).T.copy()


def _phash_bits(grey32: np.ndarray) -> str:
    """imagehash.phash's rule on a 32x32 grey array: 8x8 low DCT frequencies above their median."""
    low = (_DCT_ROWS_A @ grey32.astype(np.float64)) @ _DCT_COLS_B  # [vertical k, horizontal l]
    flat = low.ravel()
    half = flat.size // 2  # the median of 64 values is the mean of the 32nd and 33rd smallest
    mid = np.partition(flat, (half - 1, half))
    return np.packbits(2.0 * flat > mid[half - 1] + mid[half]).tobytes().hex()  # 2x > a + b: exact


def perceptual_hash(img: "PIL.Image.Image") -> str:  # noqa: F821 - PIL imported lazily
    """The 64-bit pHash of an image (imagehash's ``phash``), as 16 hex characters.

    The 32x32 greyscale copy that phash works on is made with ``reducing_gap=2`` (an exact
    integer box reduction, then Lanczos for the rest): 0.15 ms instead of 0.8 ms for imagehash's
    own Lanczos shrink of a 341x256 image. On the benchmark's photo-like JPEGs the hash equals
    the plain ``imagehash.phash`` of the full image for 72% and is within 2 bits for 99.4%
    (near duplicates are <= 4 bits apart).

    The hash of that copy is imagehash.phash's (the 8x8 lowest frequencies of its 2-D DCT-II,
    a bit set where one is above their median, bits in row order), computed here with two small
    matrix products in exact integer arithmetic (:data:`_DCT_ROWS_A`): ~28 us against
    imagehash's 130-170 us and its scipy import (0.2-0.5 CPU s a process). Its cosines are
    rounded to 18 and 16 bits, so a coefficient within ~1e-5 (relative) of the median can fall
    on the other side: tests/test_extract.py counts how often the two differ (bench/README.md
    gives the figure).
    """
    from PIL import Image

    grey = img if img.mode == "L" else img.convert("L")
    if grey.size != (_PHASH_SIDE, _PHASH_SIDE):
        grey = grey.resize((_PHASH_SIDE, _PHASH_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return _phash_bits(np.asarray(grey))


def phash_of_file(path: str | Path) -> str:
    """16-hex-character pHash of a local image file (EXIF orientation applied, as the crawl does)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return perceptual_hash(ImageOps.exif_transpose(im))


def hex_to_uint64(values: "Iterable[str | None] | pyarrow.Array | pyarrow.ChunkedArray") -> tuple[np.ndarray, np.ndarray]:  # noqa: F821
    """Parse hex pHashes into ``(uint64 array, valid mask)``; null or malformed -> valid False.

    An Arrow array is converted a slice at a time (:func:`common.records.pylist_slices`).
    """
    if hasattr(values, "slice") and hasattr(values, "to_pylist"):  # an Arrow (chunked) array
        from common.records import pylist_slices

        parsed = [_parse_hex(chunk) for chunk in pylist_slices(values)]
        if not parsed:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=bool)
        return np.concatenate([h for h, _ in parsed]), np.concatenate([v for _, v in parsed])
    return _parse_hex(list(values))


def _parse_hex(values: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    present = np.array([isinstance(v, str) and len(v) == _HEX_DIGITS for v in values], dtype=bool)
    if not values:
        return np.zeros(0, dtype=np.uint64), present
    joined = "".join(v if ok else "0" * _HEX_DIGITS for v, ok in zip(values, present.tolist()))
    if joined.isascii() and joined.isalnum():  # the usual case; bytes.fromhex would skip whitespace
        try:
            return np.frombuffer(bytes.fromhex(joined), dtype=">u8").astype(np.uint64), present
        except ValueError:  # a letter past f: parse digit by digit below to tell which rows
            pass
    raw = np.frombuffer(joined.encode("ascii", errors="replace"), dtype=np.uint8)
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
