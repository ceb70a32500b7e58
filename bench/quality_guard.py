"""Quality guard: capcrawl's output images against a reference made from the source files.

    python bench/quality_guard.py OUT --site DIR/site [--json F] [--label L]
    python bench/quality_guard.py --recompute FILE... [--engine fast|pillow]   # no shards: run here

For every sample in OUT/*.tar (the WebDataset shards of `capcrawl shards`), the source file
is found from the sample's URL under the site folder, decoded in full with Pillow (EXIF
orientation applied, transparency over white, as capcrawl does), and area-resized to the
sample's own width x height by exact pixel-area averaging (each output pixel the mean of
the source area it covers, fractions of pixels included: OpenCV's INTER_AREA, written here
with sparse matrices so that the reference does not depend on the code under test). Then:

- PSNR (dB) of the sample's image, decoded, against that reference, over all RGB values;
- the Hamming distance between the sample's stored pHash and the pHash of the reference
  (:func:`common.phash.perceptual_hash`, the project's one pHash), and, for
  comparison, imagehash's plain ``phash`` of the full-size source.

Prints and writes one JSON object: n, psnr_mean, psnr_min, psnr_p01 (1st percentile),
phash_within2 (share within 2 bits of the reference's pHash), phash_mean_bits,
phash_full_within2 (against the full-size source's plain imagehash.phash).
Only keep_ratio / keep_ratio_largest outputs (no crop, no border) are compared.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageOps
from scipy import sparse

log = logging.getLogger("quality_guard")


def area_matrix(n_in: int, n_out: int) -> sparse.csr_matrix:
    """(n_out x n_in) weights of exact area averaging: row o averages source [o*s, (o+1)*s)."""
    s = n_in / n_out
    rows, cols, vals = [], [], []
    for o in range(n_out):
        a, b = o * s, (o + 1) * s
        for i in range(int(a), min(n_in, int(np.ceil(b)))):
            wgt = min(b, i + 1) - max(a, i)
            if wgt > 1e-12:
                rows.append(o)
                cols.append(i)
                vals.append(wgt / s)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n_out, n_in))


def area_resize(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    """Exact area resize of an (H, W, 3) uint8 array to (h, w, 3), rounded to uint8.

    Enlarging an axis gives each output pixel the overlap-weighted mean of the source pixels
    its footprint covers (as INTER_AREA does)."""
    src = arr.astype(np.float64)
    hh, ww = src.shape[:2]
    my, mx = area_matrix(hh, h), area_matrix(ww, w)
    out = np.empty((h, w, 3))
    for c in range(3):
        out[:, :, c] = (mx @ (my @ src[:, :, c]).T).T
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def upright_rgb(data: bytes) -> Image.Image:
    """The source decoded in full, turned per EXIF, transparency over white, RGB."""
    img = Image.open(io.BytesIO(data))
    img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def samples(out: Path):
    """(json, image bytes) of every sample in OUT/*.tar."""
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as tf:
            current: dict[str, dict] = {}
            for m in tf:
                key, _, ext = m.name.partition(".")
                if ext in ("jpg", "png", "webp", "json"):
                    current.setdefault(key, {})[ext] = tf.extractfile(m).read()
            for key, parts in current.items():
                meta = json.loads(parts["json"])
                img = next((parts[e] for e in ("jpg", "png", "webp") if e in parts), None)
                if img is not None:
                    yield meta, img


def from_shards(out: Path, site: Path):
    """(source bytes, output image bytes, stored pHash) of every sample in OUT's shards."""
    for meta, img_bytes in samples(out):
        yield (site / urlsplit(meta["url"]).path.lstrip("/")).read_bytes(), img_bytes, meta["phash"]


def recomputed(files: list[Path], engine: str):
    """The same triples from :func:`crawler.imageproc.process_image` run here on the files
    (the default options), with the simplejpeg/OpenCV road on (``fast``) or off (``pillow``)."""
    from crawler import imageproc

    imageproc.use_fast_codecs(engine == "fast")
    if engine == "fast" and imageproc.fast_codecs() is None:
        raise SystemExit("--engine fast: simplejpeg or OpenCV is not installed")
    for f in files:
        data = f.read_bytes()
        r = imageproc.process_image(data, imageproc.ImageOptions())
        if r.image is not None:
            yield data, r.image, r.phash


def measure(items, limit: int | None = None) -> dict:
    import imagehash

    from common.phash import perceptual_hash

    ps, bits, full_bits = [], [], []
    for n, (src_bytes, img_bytes, phash) in enumerate(items):
        if limit is not None and n >= limit:
            break
        src = upright_rgb(src_bytes)
        got = Image.open(io.BytesIO(img_bytes)).convert("RGB")
        ref = area_resize(np.asarray(src), got.width, got.height)
        ps.append(psnr(np.asarray(got), ref))
        stored = imagehash.hex_to_hash(phash)
        bits.append(int(stored - imagehash.hex_to_hash(perceptual_hash(Image.fromarray(ref)))))
        full_bits.append(int(stored - imagehash.phash(src)))
    if not ps:
        raise SystemExit("no samples to measure")
    b = np.array(bits)
    return {
        "n": len(ps),
        "psnr_mean": round(float(np.mean(ps)), 3),
        "psnr_min": round(float(np.min(ps)), 3),
        "psnr_p01": round(float(np.percentile(ps, 1)), 3),
        "phash_within2": round(float(np.mean(b <= 2)), 4),
        "phash_mean_bits": round(float(np.mean(b)), 3),
        "phash_full_within2": round(float(np.mean(np.array(full_bits) <= 2)), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?", help="capcrawl shards folder")
    ap.add_argument("--site", type=Path, help="the folder nginx serves (URL paths are relative to it)")
    ap.add_argument("--recompute", type=Path, nargs="+", help="instead of shards: run process_image here on these files")
    ap.add_argument("--engine", choices=("fast", "pillow"), default="fast", help="with --recompute")
    ap.add_argument("--label", default="")
    ap.add_argument("--json", type=Path, help="append the result here as one JSON line")
    ap.add_argument("--limit", type=int)
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree's crawler package
    if a.recompute:
        items = recomputed(sorted(a.recompute), a.engine)
    elif a.out and a.site:
        items = from_shards(a.out, a.site)
    else:
        ap.error("give OUT and --site, or --recompute FILES")
    rec = {"label": a.label, **measure(items, a.limit)}
    line = json.dumps(rec)
    print(line)
    if a.json:
        with open(a.json, "a") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
