"""Image sets for the network benchmarks, beside bench/site.py's 3,000 640x480 JPEGs.

Each set is a folder of images under DIR/site/sets/NAME/ (``base``: DIR/site/img/) and a URL list DIR/urls-NAME.csv
(``url,caption``) that bench/vs_img2dataset.sh and bench/ab_checkouts.sh take with ``SET=NAME``.
Generated once (idempotent) and deterministic: a file's content depends only on the set and
its index.

    python bench/imagesets.py DIR [--port 18089] [--sets base indep photos png]

Sets:
- ``base``: site.py's 3,000 640x480 JPEGs (gradient, soft blobs, sensor-like noise, quality 85).
- ``indep``: 3,000 640x480 JPEGs of another kind and other seeds: shapes with hard edges,
  striped and checked textures, thin lines, some defocus, noise 0-8, quality 70-95,
  subsampling 4:2:0 / 4:2:2 / 4:4:4, a fifth progressive, 3% greyscale, 3% stored turned
  with an EXIF orientation.
- ``photos``: 1,000 JPEGs of the same kind, 1024-2048 px on the long side, aspect ratios
  4:3, 3:2, 16:9, 1:1 and portrait, quality 80-95.
- ``png``: 1,000 PNGs of the same kind, 400-1000 px, little noise, 30% RGBA with
  transparent parts, 10% palette images.
"""

from __future__ import annotations

import argparse
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SEED_BASE = {"indep": 10_000_000, "photos": 20_000_000, "png": 30_000_000}
COUNT = {"base": 3000, "indep": 3000, "photos": 1000, "png": 1000}
EXT = {"base": "jpg", "indep": "jpg", "photos": "jpg", "png": "png"}
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)


def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Stripes or checks of a random period (2-24 px) and angle, two colours: (h, w, 3) float."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    period = rng.uniform(2, 24)
    u = (x * np.cos(ang) + y * np.sin(ang)) / period
    if rng.random() < 0.5:
        t = 0.5 + 0.5 * np.sin(2 * np.pi * u)
    else:
        v = (-x * np.sin(ang) + y * np.cos(ang)) / period
        t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return c0 + t[..., None] * (c1 - c0)


def scene(seed: int, w: int, h: int, noise_max: float = 8.0) -> Image.Image:
    """A photo-like synthetic scene: gradient sky, blobs, hard-edged shapes (some textured),
    thin lines, optional defocus and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c = rng.uniform(30, 225, 3)
    d = rng.uniform(-0.3, 0.3, (3, 2)) * 640 / max(w, h)
    base = np.stack([c[k] + d[k, 0] * x + d[k, 1] * y for k in range(3)], -1)
    cell = int(rng.choice([8, 16, 32]))
    small = np.clip(rng.normal(128, 40, (max(1, h // cell), max(1, w // cell), 3)), 0, 255).astype(np.uint8)
    blobs = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.float32) - 128
    img = Image.fromarray(np.clip(base + 0.7 * blobs, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(5, 25))):
        x0, y0 = rng.uniform(-0.1 * w, w), rng.uniform(-0.1 * h, h)
        sw, sh = rng.uniform(0.05, 0.5) * w, rng.uniform(0.05, 0.5) * h
        left, top = max(0, int(x0)), max(0, int(y0))
        bw, bh = min(w, int(x0 + sw) + 1) - left, min(h, int(y0 + sh) + 1) - top
        if bw < 2 or bh < 2:
            continue
        box = [x0 - left, y0 - top, x0 + sw - left, y0 + sh - top]  # in the shape's own patch
        kind = rng.integers(0, 3)
        mask = Image.new("L", (bw, bh), 0)
        md = ImageDraw.Draw(mask)
        if kind == 0:
            md.ellipse(box, fill=255)
        elif kind == 1:
            md.rectangle(box, fill=255)
        else:
            pts = [(float(rng.uniform(box[0], box[2])), float(rng.uniform(box[1], box[3]))) for _ in range(int(rng.integers(3, 7)))]
            md.polygon(pts, fill=255)
        if rng.random() < 0.4:
            fill = Image.fromarray(np.clip(_texture(rng, bw, bh), 0, 255).astype(np.uint8))
        else:
            fill = Image.new("RGB", (bw, bh), tuple(int(v) for v in rng.integers(0, 256, 3)))
        img.paste(fill, (left, top), mask)
    for _ in range(int(rng.integers(0, 12))):
        pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))
    arr = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(0, noise_max), (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _jpeg(img: Image.Image, rng: np.random.Generator, q: tuple[int, int], extras: bool) -> bytes:
    buf = io.BytesIO()
    kw: dict = {"quality": int(rng.integers(q[0], q[1] + 1)), "subsampling": int(rng.choice([2, 2, 2, 1, 0]))}
    if rng.random() < 0.2:
        kw["progressive"] = True
    if extras and rng.random() < 0.03:
        img = img.convert("L")
        kw.pop("subsampling")
    if extras and rng.random() < 0.03:  # stored turned a quarter; the EXIF tag turns it back
        img = img.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        kw["exif"] = exif
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def make(name: str, i: int) -> bytes:
    """File number i of set ``name``."""
    if name == "base":
        return _site_module().make_jpeg(i)
    seed = SEED_BASE[name] + i
    rng = np.random.default_rng(seed + 7)
    if name == "indep":
        return _jpeg(scene(seed, 640, 480), rng, (70, 95), extras=True)
    if name == "photos":
        long = int(rng.integers(1024, 2049))
        a = float(rng.choice(ASPECTS))
        w, h = (long, round(long / a)) if a >= 1 else (round(long * a), long)
        return _jpeg(scene(seed, w, h, noise_max=5.0), rng, (80, 95), extras=False)
    # png
    side = int(rng.integers(400, 1001))
    a = float(rng.choice(ASPECTS))
    w, h = (side, round(side / a)) if a >= 1 else (round(side * a), side)
    img = scene(seed, w, h, noise_max=3.0)
    r = rng.random()
    if r < 0.3:
        alpha = np.full((h, w), 255, np.uint8)
        yy, xx = np.mgrid[0:h, 0:w]
        alpha[((xx - w / 2) ** 2 / (w / 2) ** 2 + (yy - h / 2) ** 2 / (h / 2) ** 2) > 1] = 0
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(alpha))
    elif r < 0.4:
        img = img.quantize(256)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _site_module():
    """bench/site.py (its name is the standard library's ``site``, so it is loaded by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_site", Path(__file__).with_name("site.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(args: tuple[str, Path, int]) -> int:
    name, path, i = args
    data = make(name, i)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)
    return len(data)


def build(root: Path, name: str, port: int) -> Path:
    """Generate set ``name`` under root/site/sets/name (missing files only) and write its URL list."""
    rel = "img" if name == "base" else f"sets/{name}"  # base: bench/site.py's own folder and files
    folder = root / "site" / rel
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{i:05d}.{EXT[name]}" for i in range(COUNT[name])]
    todo = [(name, p, i) for i, p in enumerate(files) if not p.exists()]
    if todo:
        print(f"imagesets.py: generating {len(todo)} images of set {name} in {folder} ...", flush=True)
        with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(_write, todo, chunksize=16))
    urls = root / f"urls-{name}.csv"
    with open(urls, "w") as fh:
        fh.write("url,caption\n")
        for i, p in enumerate(files):
            fh.write(f"http://127.0.0.1:{port}/{rel}/{p.name},synthetic {name} image number {i}\n")
    return urls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--port", type=int, default=18089)
    ap.add_argument("--sets", nargs="+", default=list(COUNT), choices=list(COUNT))
    a = ap.parse_args()
    for name in a.sets:
        print(build(a.dir, name, a.port))


if __name__ == "__main__":
    main()
