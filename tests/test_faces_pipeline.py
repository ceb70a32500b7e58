"""Faces through the pipeline: a real crawl of real photographs, the filter detects, the shards blur or drop."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from .conftest import run_cli
from .test_faces import ASTRONAUT_FACE, iou, photo


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def crawled_photos(tmp_path, site, tiny):
    """A page with the astronaut (one face) and the rocket (none), crawled and filtered."""
    site.add("/", "<html><body><p>Photos from the archive.</p><img src='/astronaut.png' alt='an astronaut'>"
                  "<img src='/rocket.png' alt='a rocket on the launch pad'></body></html>")
    site.add("/astronaut.png", _png(photo("astronaut")), content_type="image/png")
    site.add("/rocket.png", _png(photo("rocket")), content_type="image/png")
    work = tmp_path / "work"
    run_cli("crawl", site.url("/"), "--work", str(work), "--allow-private-addresses", check=True)
    model, ckpt = tiny
    run_cli("filter", "--work", str(work), "--model", str(model), "--pretrained", str(ckpt), "--device", "cpu",
            "--workers", "0", "--threshold", "-1", check=True)
    return site, work


def _samples(out) -> dict[str, dict]:
    tars = sorted(str(p) for p in out.glob("*.tar"))
    return {s["json"]["url"].rsplit("/", 1)[1]: s for s in wds.WebDataset(tars, shardshuffle=False).decode("pil")}


def test_faces_are_found_recorded_and_blurred_only_inside_their_boxes(crawled_photos, tmp_path):
    site, work = crawled_photos
    scored = {r["url"].rsplit("/", 1)[1]: r for r in pq.read_table(next((work / "scored").glob("part-*.parquet"))).to_pylist()}
    astro, rocket = scored["astronaut.png"], scored["rocket.png"]
    assert len(astro["face_bboxes"]) == 1 and iou(astro["face_bboxes"][0], ASTRONAUT_FACE) > 0.5
    assert astro["face_scores"][0] >= 0.5 and rocket["face_bboxes"] == []
    stats = json.loads((work / "scored" / "stats.json").read_text())
    assert stats["faces"] == {"detected": True, "images_with_faces": 1, "faces": 1}

    outs = {}
    for policy in ("blur", "keep", "drop"):
        out = tmp_path / policy
        run_cli("shards", "--work", str(work), "--out", str(out), "--faces", policy, check=True)
        outs[policy] = out
    kept = _samples(outs["keep"])["astronaut.png"]
    blurred = _samples(outs["blur"])["astronaut.png"]
    assert (kept["json"]["face_action"], blurred["json"]["face_action"]) == ("kept", "blurred")
    assert _samples(outs["blur"])["rocket.png"]["json"]["face_action"] == "none"
    before, after = (np.asarray(s["jpg"], dtype=np.float32) for s in (kept, blurred))
    h, w = before.shape[:2]
    x0, y0, x1, y1 = astro["face_bboxes"][0]
    inside = (slice(int(y0 * h) + 2, int(y1 * h) - 2), slice(int(x0 * w) + 2, int(x1 * w) - 2))
    assert np.abs(before[inside] - after[inside]).mean() > 8, "the face was not blurred"
    outside = np.ones((h, w), dtype=bool)
    pad_x, pad_y = (x1 - x0) * 0.1 * w + 8, (y1 - y0) * 0.1 * h + 8  # the padded box plus JPEG blocks
    outside[max(0, int(y0 * h - pad_y)):int(y1 * h + pad_y), max(0, int(x0 * w - pad_x)):int(x1 * w + pad_x)] = False
    assert np.abs(before[outside] - after[outside]).mean() < 1.0, "pixels outside the face changed"

    dropped = json.loads((outs["drop"] / "manifest.json").read_text())
    assert dropped["totals"]["dropped"] == {"faces": 1} and set(_samples(outs["drop"])) == {"rocket.png"}
    manifest = json.loads((outs["blur"] / "manifest.json").read_text())
    faces = manifest["respected"]["faces"]
    assert (faces["policy"], faces["detected"], faces["faces_found"]) == ("blur", True, 1)
    assert faces["samples_by_action"] == {"blurred": 1, "none": 1}
