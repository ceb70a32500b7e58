"""Blur faces before an image is written to a shard.

The recipe is DataComp's (img2dataset's ``BoundingBoxBlurrer``, which DataComp's download
and training code use, taken from the ImageNet face-obfuscation work): each box grows by
10% of its longer side on every side, the image is blurred with a Gaussian whose sigma is
10% of the face's longer side, and the blurred pixels are blended in through a mask that is
itself blurred with the same Gaussian (so the transition is soft). Two changes:

- the sigma is per face (DataComp takes one sigma per image from its largest face, which
  over-blurs small faces next to a large one and under-blurs nothing), with a floor of
  ``MIN_SIGMA`` px so that faces of 10-20 px are blurred at all;
- the soft mask is cut at the padded box, so every pixel outside the padded boxes keeps its
  exact value (DataComp's blurred mask leaks about 3 sigma past the padded box).

Only the padded box and a 3-sigma margin around it are blurred, not the whole image.
Boxes are ``[x_min, y_min, x_max, y_max]`` normalised to [0, 1] of the image, as in
``face_bboxes``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence

from PIL import Image, ImageChops, ImageDraw, ImageFilter, JpegImagePlugin

PAD_FRACTION = 0.1
SIGMA_FRACTION = 0.1
MIN_SIGMA = 2.0
DEFAULT_QUALITY = 95  # the crawler's default --quality, used where the sample's own cannot be read back
_BLURRABLE_MODES = ("L", "RGB", "RGBA")


class UndecodableImage(ValueError):
    """The sample's bytes are not an image PIL can decode."""


def padded_box(box: Sequence[float], width: int, height: int, pad: float = PAD_FRACTION) -> tuple[int, int, int, int] | None:
    """Pixel box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) of a normalised box grown by ``pad`` x its longer
    side on each side, clipped to the image; None for an empty box or one wholly outside the image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):  # also catches NaN
        return None
    px0, py0, px1, py1 = x0 * width, y0 * height, x1 * width, y1 * height
    grow = pad * max(px1 - px0, py1 - py0)
    bx0, by0 = max(0, math.floor(px0 - grow)), max(0, math.floor(py0 - grow))
    bx1, by1 = min(width, math.ceil(px1 + grow)), min(height, math.ceil(py1 + grow))
    if bx1 <= bx0 or by1 <= by0:
        return None
    return bx0, by0, bx1, by1


def face_sigma(box: Sequence[float], width: int, height: int, fraction: float = SIGMA_FRACTION) -> float:
    """Gaussian sigma in pixels for a face: ``fraction`` of its longer side, at least MIN_SIGMA."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return max(MIN_SIGMA, fraction * max((x1 - x0) * width, (y1 - y0) * height))


def blur_faces(
    image: Image.Image,
    boxes: Iterable[Sequence[float]],
    pad: float = PAD_FRACTION,
    sigma_fraction: float = SIGMA_FRACTION,
) -> Image.Image:
    """A copy of ``image`` with each face box blurred; pixels outside the padded boxes are unchanged.

    Modes L, RGB and RGBA are kept; others (P, CMYK, I;16, ...) come back as RGB or RGBA.
    """
    out = image.copy() if image.mode in _BLURRABLE_MODES else image.convert("RGBA" if "A" in image.getbands() else "RGB")
    width, height = out.size
    for box in boxes:
        region = padded_box(box, width, height, pad)
        if region is None:
            continue
        _blur_region(out, region, face_sigma(box, width, height, sigma_fraction))
    return out


def _blur_region(img: Image.Image, region: tuple[int, int, int, int], sigma: float) -> None:
    """Blend a Gaussian-blurred copy into ``region`` of ``img`` (in place) through a soft mask cut at the region."""
    x0, y0, x1, y1 = region
    margin = math.ceil(3 * sigma)
    cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
    cx1, cy1 = min(img.width, x1 + margin), min(img.height, y1 + margin)
    crop = img.crop((cx0, cy0, cx1, cy1))
    blurred = crop.filter(ImageFilter.GaussianBlur(sigma))
    hard = Image.new("L", crop.size, 0)
    ImageDraw.Draw(hard).rectangle((x0 - cx0, y0 - cy0, x1 - cx0 - 1, y1 - cy0 - 1), fill=255)
    soft = ImageChops.multiply(hard.filter(ImageFilter.GaussianBlur(sigma)), hard)  # zero outside the region
    img.paste(Image.composite(blurred, crop, soft), (cx0, cy0))


def blur_faces_bytes(
    data: bytes,
    boxes: Sequence[Sequence[float]],
    quality: int = DEFAULT_QUALITY,
    pad: float = PAD_FRACTION,
    sigma_fraction: float = SIGMA_FRACTION,
) -> bytes:
    """Decode a stored image, blur its faces and re-encode it in the same format.

    JPEG keeps the source's quantization tables and chroma subsampling (so its quality);
    WebP is written at ``quality`` (lossless if the source was); PNG losslessly. Returns
    ``data`` itself when there is no box. Raises UndecodableImage if the bytes do not decode.
    """
    if not boxes:
        return data
    try:
        src = Image.open(io.BytesIO(data))
        src.load()
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError... per bad file
        raise UndecodableImage(f"{type(e).__name__}: {e}") from e
    fmt = src.format or "JPEG"
    out = blur_faces(src, boxes, pad, sigma_fraction)
    buf = io.BytesIO()
    out.save(buf, fmt, **_save_options(src, fmt, quality, _webp_is_lossless(data) if fmt == "WEBP" else False))
    return buf.getvalue()


def _save_options(src: Image.Image, fmt: str, quality: int, lossless: bool) -> dict:
    """Encoder options that reproduce the source's encoding as closely as PIL allows."""
    opts: dict = {}
    if src.info.get("icc_profile"):
        opts["icc_profile"] = src.info["icc_profile"]
    if fmt == "JPEG":
        tables = getattr(src, "quantization", None)
        if tables:
            opts["qtables"] = tables
            sampling = JpegImagePlugin.get_sampling(src)
            if sampling != -1:
                opts["subsampling"] = sampling
        else:
            opts["quality"] = quality
    elif fmt == "WEBP":
        opts["lossless"] = lossless
        opts["quality"] = quality
    elif fmt == "PNG":
        opts["compress_level"] = 6
    return opts


def _webp_is_lossless(data: bytes) -> bool:
    """Whether a WebP file's image chunk is VP8L (lossless); PIL does not report it."""
    pos = 12  # after "RIFF", size, "WEBP"
    while pos + 8 <= len(data):
        fourcc, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if fourcc in (b"VP8L", b"VP8 "):
            return fourcc == b"VP8L"
        pos += 8 + size + (size & 1)
    return False
