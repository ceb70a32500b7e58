"""Cost of face detection and face blurring per image, single thread, on a real photo.

    .venv/bin/python bench/faces_bench.py                 # 256 and 512 px, 200 rounds
    .venv/bin/python bench/faces_bench.py --sizes 256 --rounds 500

The photo is scikit-image's astronaut (one face), stored as the crawler stores it
(``process_image``: area resize of the short side, JPEG q95). Rounds alternate the
measured variants, so machine noise hits them alike; the median of the rounds is printed.

- ``detect``: ``FaceDetector().detect([img])`` with the defaults (decoded PIL image in);
- ``detect upscale_to=N``: the same with small images enlarged before detection;
- ``blur``: ``blur_faces`` on the decoded image with its detected box;
- ``blur bytes``: ``blur_faces_bytes`` (decode + blur + re-encode JPEG with the same tables);
- ``decode``: decoding the stored JPEG alone, for scale;
- ``detect batch of 32, threads=N``: per image, one ``detect`` call on 32 images with a
  detector that spreads a batch over N threads (the library runs outside the GIL).

Also prints the process's RSS before the detector is created, after, and after all rounds.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crawler.imageproc import ImageOptions, process_image  # noqa: E402
from filter.faces import FaceDetector  # noqa: E402
from shards.faceblur import blur_faces, blur_faces_bytes  # noqa: E402


def rss_mb() -> float:
    """Resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def stored_astronaut(size: int) -> bytes:
    """scikit-image's astronaut as the crawler would store it at ``--image-size size``."""
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "PNG")
    res = process_image(buf.getvalue(), ImageOptions(image_size=size))
    assert res.image is not None, res.error
    return res.image


def bench_size(size: int, detector: FaceDetector, variants: dict[str, FaceDetector], threaded: dict[int, FaceDetector], rounds: int) -> None:
    """Time every variant on the astronaut stored at ``size``, alternating them round by round."""
    data = stored_astronaut(size)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    faces = detector.detect([img])[0]
    boxes = [f.box for f in faces]
    print(f"\n{size}: image {img.size[0]}x{img.size[1]}, {len(data)} bytes, faces {[(tuple(round(v, 3) for v in f.box), f.score) for f in faces]}")
    batch = [img] * 32
    cases: dict[str, tuple[Callable[[], object], int]] = {
        "decode": (lambda: Image.open(io.BytesIO(data)).convert("RGB"), 1),
        "detect (defaults)": (lambda: detector.detect([img]), 1),
        **{name: ((lambda d=d: d.detect([img])), 1) for name, d in variants.items()},
        "blur": (lambda: blur_faces(img, boxes), 1),
        "blur bytes": (lambda: blur_faces_bytes(data, boxes), 1),
        **{f"detect batch of 32, threads={n}": ((lambda d=d: d.detect(batch)), len(batch)) for n, d in threaded.items()},
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(rounds):
        for name, (fn, per_call) in cases.items():
            if per_call > 1 and r >= max(1, rounds // per_call):  # batches: the same number of images
                continue
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000 / per_call)
    for name, ts in times.items():
        print(f"  {name:34s} median {statistics.median(ts):7.2f} ms/image   p90 {np.percentile(ts, 90):7.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--upscale-to", type=int, nargs="*", default=[384, 512], help="also time these upscale_to settings")
    args = p.parse_args()

    stored_astronaut(64)  # imports scikit-image and the crawler's image code before the first RSS reading
    before = rss_mb()
    detector = FaceDetector()
    variants_det = {f"detect upscale_to={u}": FaceDetector(upscale_to=u) for u in args.upscale_to}
    threaded = {n: FaceDetector(threads=n) for n in sorted({1, os.cpu_count() or 1})}
    after_init = rss_mb()
    print(f"RSS: {before:.1f} MiB before the detector, {after_init:.1f} after creating {1 + len(variants_det) + len(threaded)} detectors")
    print(f"defaults: min_score={detector.min_score} upscale_to={detector.upscale_to} max_side={detector.max_side}")

    for size in args.sizes:
        bench_size(size, detector, variants_det, threaded, args.rounds)
    print(f"\nRSS after all rounds: {rss_mb():.1f} MiB")


if __name__ == "__main__":
    main()
