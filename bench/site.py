"""Build the benchmark web site: JPEGs, URL lists and HTML pages, served later by nginx.

Idempotent: images are generated once into DIR/site/img and reused by every benchmark.

    python bench/site.py DIR [--images 3000] [--list-sizes 20000 100000] [--list-images small|img]
"""

from __future__ import annotations

import argparse
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 640, 480
PAGES = 100


def make_jpeg(i: int, W: int = W, H: int = H) -> bytes:
    """A 640x480 JPEG of 40-80 KB: a colour gradient, soft random blobs and sensor-like noise."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    c = rng.uniform(40, 215, 3)
    d = rng.uniform(-0.25, 0.25, (3, 2))
    base = np.stack([c[k] + d[k, 0] * x + d[k, 1] * y for k in range(3)], -1)
    small = np.clip(rng.normal(128, 45, (H // 16, W // 16, 3)), 0, 255).astype(np.uint8)
    blobs = np.asarray(Image.fromarray(small).resize((W, H), Image.Resampling.BICUBIC), np.float32) - 128
    noise = rng.normal(0, rng.uniform(5.5, 8.0), (H, W, 3))
    arr = np.clip(base + blobs + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _write(args: tuple[Path, int, int, int]) -> int:
    path, i, w, h = args
    data = make_jpeg(i, w, h)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)
    return len(data)


def _generate(directory: Path, n: int, w: int, h: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    todo = [(directory / f"{i:05d}.jpg", i, w, h) for i in range(n) if not (directory / f"{i:05d}.jpg").exists()]
    if todo:
        print(f"site.py: generating {len(todo)} {w}x{h} JPEGs in {directory} ...", flush=True)
        with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(_write, todo, chunksize=32))


def build(root: Path, n_images: int, list_sizes: list[int], port: int, list_dir: str) -> None:
    site = root / "site"
    _generate(site / "img", n_images, W, H)
    if list_sizes and list_dir == "small":
        _generate(site / "small", n_images, W // 4, H // 4)
    base = f"http://127.0.0.1:{port}"
    names = [f"{i:05d}.jpg" for i in range(n_images)]
    # URL list with a caption column: `capcrawl shards --no-filter` keeps only captioned rows.
    with open(root / "urls.csv", "w") as fh:
        fh.write("url,caption\n")
        for i, name in enumerate(names):
            fh.write(f"{base}/img/{name},synthetic image number {i}\n")
    for n in list_sizes:  # the same files under distinct URLs (nginx ignores the query string)
        with open(root / f"urls-{n}.csv", "w") as fh:
            fh.write("url,caption\n")
            for i in range(n):
                fh.write(f"{base}/{list_dir}/{names[i % n_images]}?i={i},synthetic image number {i}\n")
    # 100 pages on two hosts (127.0.0.1 and 127.0.0.2), each with n/100 images of its own host.
    per_page = -(-n_images // PAGES)
    hosts = [f"http://127.0.0.1:{port}", f"http://127.0.0.2:{port}"]
    for h, host in enumerate(hosts):
        mine = [p for p in range(PAGES) if p % 2 == h]
        links = "\n".join(f'<li><a href="/pages/p{p:03d}.html">page {p}</a></li>' for p in mine)
        (site / f"index{h}.html").write_text(
            f"<!doctype html><html><head><title>bench host {h}</title></head><body><ul>{links}</ul></body></html>\n"
        )
    pages = site / "pages"
    pages.mkdir(exist_ok=True)
    for p in range(PAGES):
        host = hosts[p % 2]
        imgs = "\n".join(
            f'<figure><img src="{host}/img/{names[i]}" alt="synthetic image number {i}"><figcaption>figure {i}</figcaption></figure>'
            for i in range(p * per_page, min(n_images, (p + 1) * per_page))
        )
        nxt = f'<a href="/pages/p{(p + 2) % PAGES:03d}.html">next</a>'
        (pages / f"p{p:03d}.html").write_text(
            f"<!doctype html><html><head><title>bench page {p}</title></head><body>{imgs}\n{nxt}</body></html>\n"
        )
    with open(root / "seeds.txt", "w") as fh:
        fh.write(f"{hosts[0]}/index0.html\n{hosts[1]}/index1.html\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--port", type=int, default=18089)
    ap.add_argument("--list-sizes", type=int, nargs="*", default=[], help="also write urls-N.csv lists of N URLs")
    ap.add_argument("--list-images", choices=("small", "img"), default="small",
                    help="what the urls-N.csv lists point at: 160x120 copies (default, fast) or the 640x480 originals")
    a = ap.parse_args()
    build(a.dir, a.images, a.list_sizes, a.port, a.list_images)


if __name__ == "__main__":
    main()
