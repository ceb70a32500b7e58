"""The reduced-scale JPEG road of crawler.imageproc (DCT-domain decode + area resize), against
a full decode with an exact area resize, and the statuses and special files it must keep.

Tests marked ``fast`` need simplejpeg and OpenCV; the Pillow road is tested everywhere.
"""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from crawler import imageproc
from common.phash import perceptual_hash
from crawler.imageproc import ImageOptions, dct_scale, process_image

HAVE_FAST = imageproc.fast_codecs() is not None
ENGINES = [pytest.param(True, id="simplejpeg+opencv", marks=pytest.mark.skipif(not HAVE_FAST, reason="simplejpeg/OpenCV not installed")),
           pytest.param(False, id="pillow")]


@pytest.fixture
def engine(request):
    """Switch the simplejpeg/OpenCV road on or off for one test, and back afterwards."""
    previous = imageproc.use_fast_codecs(request.param)
    yield request.param
    imageproc.use_fast_codecs(previous)


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A photo-like picture: gradient, blobs, hard-edged shapes, stripes and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([60 + 120 * x / w, 200 - 100 * y / h, 90 + 60 * (x + y) / (w + h)], -1)
    small = rng.normal(128, 40, (max(1, h // 16), max(1, w // 16), 3)).clip(0, 255).astype(np.uint8)
    blobs = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.float32) - 128
    img = Image.fromarray((base + 0.6 * blobs).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for i in range(12):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        box = [x0, y0, x0 + rng.uniform(0.05, 0.4) * w, y0 + rng.uniform(0.05, 0.4) * h]
        (draw.ellipse if i % 2 else draw.rectangle)(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    stripes = (np.sin(x / 3.0)[..., None] * 40).astype(np.float32)
    arr = np.asarray(img, np.float32)
    arr[: h // 3, : w // 3] += stripes[: h // 3, : w // 3]
    arr += rng.normal(0, 5, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=kw.pop("quality", 88), **kw)
    return buf.getvalue()


def area_reference(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """Full decode (turned per EXIF, RGB) and exact pixel-area averaging to ``size``."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    src = np.asarray(img, np.float64)

    def weights(n_in: int, n_out: int) -> np.ndarray:
        s, m = n_in / n_out, np.zeros((n_out, n_in))
        for o in range(n_out):
            a, b = o * s, (o + 1) * s
            for i in range(int(a), min(n_in, int(np.ceil(b)))):
                m[o, i] = max(0.0, min(b, i + 1) - max(a, i)) / s
        return m

    my, mx = weights(src.shape[0], size[1]), weights(src.shape[1], size[0])
    return np.stack([my @ src[:, :, c] @ mx.T for c in range(3)], -1).round().clip(0, 255)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decoded(r) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB"))


def test_dct_scale_keeps_what_area_averaging_passes():
    assert dct_scale(640, 480, 341, 256) == 2  # 320x240 keeps 94% of 341x256
    assert dct_scale(600, 450, 341, 256) == 1  # 300x225 would keep 88%: decoded in full
    assert dct_scale(2048, 1536, 341, 256) == 4  # 512x384; 1/8 (256x192) would keep 75%
    assert dct_scale(4000, 3000, 341, 256) == 8
    assert dct_scale(640, 480, 341, 256, min_share=1.0) == 1  # the old rule: cover the target
    assert dct_scale(2000, 1500, 341, 256, min_share=1.0) == 4


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
@pytest.mark.parametrize("size", [(640, 480), (1600, 1200), (1024, 683), (700, 525), (480, 640)])
def test_scaled_decode_is_close_to_full_decode_and_area_resize(engine, size):
    data = jpeg(photo(*size, seed=size[0]))
    r = process_image(data, ImageOptions())
    assert r.status == "ok"
    target = imageproc._target_size(*size, ImageOptions())
    assert (r.width, r.height) == target == Image.open(io.BytesIO(r.image)).size
    ref = area_reference(data, target)
    # Today's road (full decode, Pillow's BOX, quality 95) measures ~36-39 dB on these pictures;
    # the encoder's 4:2:0 chroma costs most of it. The scaled decode must not lose more than 1 dB.
    full = Image.open(io.BytesIO(data)).convert("RGB").resize(target, Image.Resampling.BOX)
    today = np.asarray(Image.open(io.BytesIO(jpeg(full, quality=95))).convert("RGB"))
    assert psnr(decoded(r), ref) >= psnr(today, ref) - 1.0
    assert psnr(decoded(r), ref) >= 32.0
    ref_hash = imagehash.hex_to_hash(perceptual_hash(Image.fromarray(ref.astype(np.uint8))))
    assert imagehash.hex_to_hash(r.phash) - ref_hash <= 2


@pytest.mark.skipif(not HAVE_FAST, reason="simplejpeg/OpenCV not installed")
def test_both_roads_agree():
    """simplejpeg + OpenCV and Pillow give the same size, nearly the same pixels and pHash."""
    for size in ((640, 480), (1500, 1000)):
        data = jpeg(photo(*size, seed=7))
        imageproc.use_fast_codecs(True)
        fast = process_image(data, ImageOptions())
        imageproc.use_fast_codecs(False)
        try:
            slow = process_image(data, ImageOptions())
        finally:
            imageproc.use_fast_codecs(True)
        assert (fast.width, fast.height) == (slow.width, slow.height)
        assert psnr(decoded(fast), decoded(slow)) >= 35.0
        assert imagehash.hex_to_hash(fast.phash) - imagehash.hex_to_hash(slow.phash) <= 2
        assert fast.sha256 == slow.sha256


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
@pytest.mark.parametrize(
    "kind", ["progressive", "grey", "cmyk", "444", "exif6", "exif3", "exif8"],
)
def test_special_jpegs(engine, kind):
    """Progressive, greyscale, CMYK, 4:4:4 and EXIF-turned JPEGs: size, orientation, pixels."""
    img = photo(800, 600, seed=3)
    ImageDraw.Draw(img).rectangle([0, 0, 199, 149], fill=(255, 0, 0))  # a red top-left corner, upright
    kw: dict = {}
    if kind == "progressive":
        kw["progressive"] = True
    elif kind == "grey":
        img = img.convert("L")
    elif kind == "cmyk":
        img = img.convert("CMYK")
    elif kind == "444":
        kw["subsampling"] = 0
    elif kind.startswith("exif"):
        orientation = int(kind[4:])
        # store the picture turned so that the EXIF tag turns it upright again
        undo = {6: Image.Transpose.ROTATE_90, 3: Image.Transpose.ROTATE_180, 8: Image.Transpose.ROTATE_270}[orientation]
        img = img.transpose(undo)
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif
    data = jpeg(img, **kw)
    r = process_image(data, ImageOptions())
    assert r.status == "ok", r.error
    assert (r.width, r.height) == (341, 256)
    assert (r.original_width, r.original_height) == (800, 600)  # upright, as the sample is
    out = decoded(r)
    ref = area_reference(data, (341, 256))
    assert psnr(out, ref) >= 30.0
    if kind != "grey":
        assert out[10:50, 10:50, 0].mean() > 200 and out[10:50, 10:50, 1].mean() < 60  # red stays top-left
    ref_hash = imagehash.hex_to_hash(perceptual_hash(Image.fromarray(ref.astype(np.uint8))))
    assert imagehash.hex_to_hash(r.phash) - ref_hash <= 2


@pytest.mark.skipif(not HAVE_FAST, reason="simplejpeg/OpenCV not installed")
@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_non_jpegs_take_the_pillow_road_unchanged(fmt):
    img = photo(640, 480, seed=5)
    if fmt == "PNG":
        img = img.convert("RGBA")
        img.putalpha(128)
    buf = io.BytesIO()
    img.save(buf, fmt)
    data = buf.getvalue()
    imageproc.use_fast_codecs(False)
    try:
        slow = process_image(data, ImageOptions())
    finally:
        imageproc.use_fast_codecs(True)
    fast = process_image(data, ImageOptions())
    assert fast == slow  # byte for byte: non-JPEGs never take the reduced road


@pytest.mark.parametrize("mode,bits", [("I;16", 16), ("I", 16), ("I", 8), ("F", 8)])
def test_deep_grey_images_keep_their_tones(mode, bits):
    """16-bit grey PNGs and TIFFs (Pillow's I;16 and I) are scaled to 8 bits, not clipped to
    white; values that fit in 8 bits are kept."""
    ramp = np.linspace(0, 2**bits - 1, 320 * 240).reshape(240, 320)
    if mode == "I;16":
        img = Image.fromarray(ramp.astype(np.uint16))
    elif mode == "I":
        img = Image.fromarray(ramp.astype(np.int32), "I")
    else:
        img = Image.fromarray(ramp.astype(np.float32), "F")
    buf = io.BytesIO()
    img.save(buf, "PNG" if mode == "I;16" else "TIFF")
    r = process_image(buf.getvalue(), ImageOptions())
    assert r.status == "ok", r.error
    out = decoded(r)[..., 0].astype(float)
    assert abs(out.mean() - 127.5) < 3 and out[:20].mean() < 40 and out[-20:].mean() > 215  # a ramp, top to bottom


def test_a_dark_16_bit_png_stays_dark_and_a_0_to_1_float_tiff_is_a_full_ramp():
    """An I;16 file is 16-bit by what it says, however low its values (0-200 of 65,535 is
    black, not an 8-bit ramp); a float image in 0-1 is normalised, not all but black."""
    dark = Image.fromarray(np.linspace(0, 200, 320 * 240).reshape(240, 320).astype(np.uint16))
    unit = Image.fromarray(np.linspace(0, 1, 320 * 240).reshape(240, 320).astype(np.float32), "F")
    outs = []
    for img, fmt in ((dark, "PNG"), (unit, "TIFF")):
        buf = io.BytesIO()
        img.save(buf, fmt)
        r = process_image(buf.getvalue(), ImageOptions())
        assert r.status == "ok", r.error
        outs.append(decoded(r)[..., 0].astype(float))
    assert outs[0].max() <= 2
    assert abs(outs[1].mean() - 127.5) < 3 and outs[1][:20].mean() < 40 and outs[1][-20:].mean() > 215


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_embedded_colour_profiles_are_converted_to_srgb(engine, fmt):
    """Samples are sRGB. A profile whose red and blue primaries are sRGB's blue and red turns
    stored red into shown blue; Display P3's (200, 100, 50) is a more saturated sRGB colour
    (LittleCMS's own conversion of the pixel); an sRGB or unreadable profile changes nothing."""
    from PIL import ImageCms

    from tests.icc_support import P3_PRIMARIES, SRGB_PRIMARIES, rgb_profile

    r, g, b = SRGB_PRIMARIES
    p3 = rgb_profile(P3_PRIMARIES, description="Display P3 (test)")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    expected_p3 = ImageCms.profileToProfile(Image.new("RGB", (1, 1), (200, 100, 50)), ImageCms.ImageCmsProfile(io.BytesIO(p3)),
                                            ImageCms.createProfile("sRGB"), outputMode="RGB").getpixel((0, 0))
    assert expected_p3[0] > 210 and expected_p3[2] < 35  # the test's premise: P3 is wider than sRGB
    cases = [((255, 0, 0), rgb_profile((b, g, r), description="swapped"), (0, 0, 255)),
             ((200, 100, 50), p3, expected_p3), ((200, 100, 50), srgb, (200, 100, 50)),
             ((200, 100, 50), b"not a profile" * 10, (200, 100, 50)), ((200, 100, 50), None, (200, 100, 50))]
    for colour, profile, shown in cases:
        buf = io.BytesIO()
        Image.new("RGB", (640, 480), colour).save(buf, fmt, quality=95, **({"icc_profile": profile} if profile else {}))
        res = process_image(buf.getvalue(), ImageOptions(image_format="png"))
        assert res.status == "ok", res.error
        out = Image.open(io.BytesIO(res.image))
        assert "icc_profile" not in out.info
        assert np.abs(decoded(res)[100, 100].astype(int) - np.array(shown)).max() <= 4, (profile and profile[:20], shown)


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_statuses_stay_the_same(engine):
    data = jpeg(photo(640, 480))
    assert process_image(data[: len(data) // 2], ImageOptions()).status == "corrupt"  # truncated
    assert process_image(data, ImageOptions(max_pixels=640 * 480 - 1)).status == "decompression_bomb"
    bomb = process_image(data, ImageOptions(max_pixels=1000))  # refused by Pillow at open(): our limit named
    assert bomb.status == "decompression_bomb" and bomb.error == "307200 pixels is over 1000 pixels"
    assert process_image(jpeg(photo(40, 30)), ImageOptions(min_image_size=50)).status == "too_small"
    assert process_image(b"<html>nope</html>", ImageOptions()).status == "not_an_image"
    damaged = process_image(b"GIF89a" + b"x" * 50, ImageOptions())  # an image's signature, nothing readable after
    assert damaged.status == "corrupt" and damaged.error.startswith("starts as an image file but cannot be read")
    # sent as text/html: an error page is no image; an image's bytes are read (browsers sniff too)
    assert process_image(b"<!doctype html><p>Not found", ImageOptions(), "text/html").status == "not_an_image"
    assert process_image(data, ImageOptions(), "text/html; charset=utf-8").status == "ok"


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_rights_survive_the_reduced_road(engine):
    exif = Image.Exif()
    exif[0x8298] = "Copyright Jane Roe"
    r = process_image(jpeg(photo(640, 480), exif=exif), ImageOptions())
    assert r.status == "ok" and r.rights == "Copyright Jane Roe"


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
@pytest.mark.parametrize(
    "opts, size",
    [
        (ImageOptions(resize_mode="center_crop"), (256, 256)),
        (ImageOptions(resize_mode="border"), (256, 256)),
        (ImageOptions(resize_mode="keep_ratio_largest"), (256, 192)),
        (ImageOptions(resize_mode="no"), (640, 480)),
        (ImageOptions(image_format="webp"), (341, 256)),
        (ImageOptions(image_format="png"), (341, 256)),
        (ImageOptions(image_size=512), (683, 512)),  # enlarged: Pillow's Lanczos, as before
        (ImageOptions(image_size=512, resize_only_if_bigger=True), (640, 480)),
        (ImageOptions(resample="lanczos"), (341, 256)),
    ],
)
def test_resize_modes_and_formats(engine, opts, size):
    r = process_image(jpeg(photo(640, 480, seed=11)), opts)
    assert r.status == "ok"
    assert (r.width, r.height) == size == Image.open(io.BytesIO(r.image)).size
    assert Image.open(io.BytesIO(r.image)).format == imageproc.IMAGE_FORMATS[opts.image_format]


def _own_niceness() -> int:
    import os

    return os.getpriority(os.PRIO_PROCESS, 0)


def test_image_workers_run_below_the_crawl_process():
    """A worker started the crawl's way yields the cores to the crawl process's event loop."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    mine = os.getpriority(os.PRIO_PROCESS, 0)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=imageproc.init_worker, initargs=(os.getpid(),)) as pool:
        theirs = pool.submit(_own_niceness).result(timeout=60)
    assert theirs == min(19, mine + imageproc.WORKER_NICE)


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_images_no_output_can_hold_are_named_not_lost(engine):
    """A 64x20000 strip that keep_ratio enlarges to 256x80000 is more than JPEG (65,500 px a
    side) or WebP (16,383) can hold; a 64x300000 one enlarged by center_crop would make more
    pixels than --max-pixels for the workers to hold. Each is a named status, found before any
    work; a failure nobody foresaw costs its own row only, not its batch-mates'."""
    strip = jpeg(photo(64, 20000))
    res = process_image(strip, ImageOptions())
    assert (res.status, res.error) == ("too_large", "resized to 256x80000: jpg holds at most 65500 px a side")
    assert process_image(jpeg(photo(64, 4100)), ImageOptions(image_format="webp", resize_mode="no")).status == "ok"
    res = process_image(jpeg(photo(64, 20000)), ImageOptions(image_format="webp", resize_mode="no"))
    assert (res.status, res.error) == ("too_large", "resized to 64x20000: webp holds at most 16383 px a side")
    res = process_image(strip, ImageOptions(resize_mode="center_crop", max_pixels=20_000_000))
    assert (res.status, res.error) == ("decompression_bomb", "resized to 256x80000: 20480000 pixels is over 20000000 pixels")
    assert process_image(strip, ImageOptions(resize_mode="border")).status == "ok"


def test_an_unforeseen_failure_costs_one_row(monkeypatch):
    real = imageproc._encode

    def encode(out, opts):
        if out.size == (256, 256):
            raise OSError("broken data stream when writing image file")
        return real(out, opts)

    monkeypatch.setattr(imageproc, "_encode", encode)
    fast = imageproc.use_fast_codecs(False)  # Pillow's path: the one that calls _encode for both
    try:
        results = imageproc.process_batch([(jpeg(photo(300, 300)), None), (jpeg(photo(400, 300)), None)], ImageOptions())
    finally:
        imageproc.use_fast_codecs(fast)
    assert [(r.status, r.error) for r in results] == [
        ("corrupt", "OSError: broken data stream when writing image file"), ("ok", None)]
    assert results[0].sha256 and results[1].width == 341


def test_a_transparent_colour_is_white():
    """PNG's tRNS on an RGB or grey image (one colour is transparent), as on a palette's."""
    for mode, key, colour in (("RGB", (220, 30, 30), (220, 30, 30)), ("L", 87, 87)):
        img = Image.new(mode, (200, 150), colour)
        ImageDraw.Draw(img).rectangle([50, 40, 150, 110], fill=(30, 200, 30) if mode == "RGB" else 200)
        buf = io.BytesIO()
        img.save(buf, "PNG", transparency=key)
        res = process_image(buf.getvalue(), ImageOptions(image_format="png", resize_mode="no"))
        out = Image.open(io.BytesIO(res.image)).convert("RGB")
        assert out.getpixel((5, 5)) == (255, 255, 255), mode
        assert out.getpixel((100, 75)) == ((30, 200, 30) if mode == "RGB" else (200, 200, 200)), mode


def test_a_refused_images_original_size_is_upright():
    """EXIF orientation 6 turns a stored 300x63 image into a 63x300 one: too small, and said so upright."""
    img = photo(300, 63)
    exif = Image.Exif()
    exif[0x0112] = 6
    res = process_image(jpeg(img, exif=exif.tobytes()), ImageOptions(min_image_size=64))
    assert (res.status, res.original_width, res.original_height, res.error) == ("too_small", 63, 300, "63x300 is under 64 px")
