"""Decode, check, resize, re-encode and hash downloaded image bytes.

Runs in worker processes (never on the reactor thread). Pure functions of bytes and
options, so they are tested directly and shared by crawl and URL-list modes.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from common.phash import PHASH_SOURCE_MIN_SIDE, perceptual_hash
from common.records import Status

RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
#: Resampling filters. "area" averages the covered pixels when shrinking (what img2dataset's
#: cv2.INTER_AREA does) and uses Lanczos when enlarging; the others use one filter both ways.
RESAMPLE_FILTERS = ("area", "bicubic", "lanczos")
IMAGE_FORMATS = {"jpg": "JPEG", "webp": "WEBP", "png": "PNG"}



@dataclass(frozen=True)
class ImageOptions:
    image_size: int = 256
    resize_mode: str = "keep_ratio"
    image_format: str = "jpg"
    quality: int = 95
    min_image_size: int = 0
    max_pixels: int = 89_478_485  # Pillow's default decompression-bomb limit
    resize_only_if_bigger: bool = False
    resample: str = "area"


@dataclass
class ImageResult:
    status: str
    error: str | None = None
    image: bytes | None = None
    image_format: str | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    sha256: str | None = None
    phash: str | None = None
    rights: str | None = None
    rights_url: str | None = None


def _target_size(w: int, h: int, opts: ImageOptions) -> tuple[int, int]:
    """Size after resizing, before any crop/border (img2dataset's semantics)."""
    s = opts.image_size
    if opts.resize_mode == "no":
        return w, h
    if opts.resize_mode in ("keep_ratio", "center_crop"):
        scale = s / min(w, h)
    else:  # keep_ratio_largest, border
        scale = s / max(w, h)
    if opts.resize_only_if_bigger and scale >= 1:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))


def _scale(img: Image.Image, opts: ImageOptions) -> Image.Image:
    """The image at its target size, before any crop or border."""
    tw, th = _target_size(img.width, img.height, opts)
    if (tw, th) == img.size:
        return img
    if opts.resample == "area" and tw <= img.width and th <= img.height:
        return img.resize((tw, th), Image.Resampling.BOX)
    flt = Image.Resampling.BICUBIC if opts.resample == "bicubic" else Image.Resampling.LANCZOS
    return img.resize((tw, th), flt, reducing_gap=3.0)


def _frame(img: Image.Image, opts: ImageOptions) -> Image.Image:
    """Crop (center_crop) or pad (border) a scaled image to the final square."""
    s = opts.image_size
    if opts.resize_mode == "center_crop" and (img.width > s or img.height > s):
        left, top = (img.width - s) // 2, (img.height - s) // 2
        img = img.crop((left, top, left + min(s, img.width), top + min(s, img.height)))
    elif opts.resize_mode == "border" and (img.width, img.height) != (s, s):
        canvas = Image.new("RGB", (max(s, img.width), max(s, img.height)), (255, 255, 255))
        canvas.paste(img, ((canvas.width - img.width) // 2, (canvas.height - img.height) // 2))
        img = canvas
    return img


def _phash_source(decoded: Image.Image, scaled: Image.Image) -> Image.Image:
    """The smaller of the decoded and the scaled image that still has >= 32 px a side.

    pHash shrinks its input to 32x32 anyway, so a smaller source costs a fraction of the
    work for nearly the same hash. Scaled means before any crop or border, so the hash is
    of the whole picture; large JPEGs were already decoded at their draft (reduced) size.
    """
    if scaled.width * scaled.height < decoded.width * decoded.height and min(scaled.size) >= PHASH_SOURCE_MIN_SIDE:
        return scaled
    return decoded


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB")


_XMP_RIGHTS = re.compile(rb"<dc:rights>.*?<rdf:li[^>]*>(.*?)</rdf:li>", re.S)
_XMP_WEB = re.compile(rb"xmpRights:WebStatement(?:=\"([^\"]+)\"|>([^<]+)<)")


def embedded_rights(img: Image.Image, data: bytes) -> tuple[str | None, str | None]:
    """Copyright notice and WebStatement URL embedded in the file (XMP, IPTC, EXIF)."""
    notice = url = None
    start = data.find(b"<x:xmpmeta")
    if start >= 0:
        packet = data[start : data.find(b"</x:xmpmeta>", start) + 12]
        if m := _XMP_RIGHTS.search(packet):
            notice = m.group(1).decode("utf-8", "replace").strip() or None
        if m := _XMP_WEB.search(packet):
            url = (m.group(1) or m.group(2)).decode("utf-8", "replace").strip() or None
    if notice is None:
        try:
            from PIL import IptcImagePlugin

            iptc = IptcImagePlugin.getiptcinfo(img) or {}
            raw = iptc.get((2, 116))
            if isinstance(raw, list):
                raw = raw[0]
            if raw:
                notice = raw.decode("utf-8", "replace").strip() or None
        except Exception:  # malformed IPTC is not worth a failed sample; the notice stays unknown
            pass
    if notice is None:
        exif_copyright = img.getexif().get(0x8298)
        if isinstance(exif_copyright, str) and exif_copyright.strip():
            notice = exif_copyright.strip()
    return notice, url


def process_image(data: bytes, opts: ImageOptions, content_type: str | None = None) -> ImageResult:
    """Turn downloaded bytes into a sample image, or a status saying why not."""
    sha = hashlib.sha256(data).hexdigest()
    res = ImageResult(status=Status.OK.value, sha256=sha)
    if content_type and content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return _fail(res, Status.NOT_AN_IMAGE, f"content type {content_type}")
    # Pillow's own decompression-bomb guard stays on, at the same limit as --max-pixels: it
    # refuses at open() what is over twice the limit, and warns (turned into an error at
    # load(), below) for a frame that decodes larger than its header says.
    Image.MAX_IMAGE_PIXELS = opts.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # named just below
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        return _fail(res, Status.DECOMPRESSION_BOMB, str(e))
    except UnidentifiedImageError:
        return _fail(res, Status.NOT_AN_IMAGE, "not a decodable image format")
    except Exception as e:  # Pillow raises many types for broken headers
        return _fail(res, Status.CORRUPT, f"{type(e).__name__}: {e}")
    ow, oh = img.size
    res.original_width, res.original_height = ow, oh
    if ow * oh > opts.max_pixels:
        return _fail(res, Status.DECOMPRESSION_BOMB, f"{ow}x{oh} is over {opts.max_pixels} pixels")
    if min(ow, oh) < max(1, opts.min_image_size):
        return _fail(res, Status.TOO_SMALL, f"{ow}x{oh} is under {opts.min_image_size} px")
    try:
        res.rights, res.rights_url = embedded_rights(img, data)
        if img.format == "JPEG" and opts.resize_mode != "no":
            # Decode at a reduced scale (1/2, 1/4, 1/8) that still covers the target size.
            tw, th = _target_size(ow, oh, opts)
            img.draft("RGB", (tw, th))
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy when there is nothing to turn
        img = _to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        return _fail(res, Status.CORRUPT, f"{type(e).__name__}: {e}")
    scaled = _scale(img, opts)
    res.phash = perceptual_hash(_phash_source(img, scaled))
    out = _frame(scaled, opts)
    res.image, res.image_format = _encode(out, opts), opts.image_format
    res.width, res.height = out.size
    return res


def _fail(res: ImageResult, status: Status, error: str) -> ImageResult:
    res.status, res.error = status.value, error
    return res


def init_worker() -> None:
    """Worker-process start: leave Ctrl-C to the crawl process, which stops gracefully and
    still needs its workers to finish the images in flight."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def warm_up() -> None:
    """Run once in each new worker so that the first real batch pays no import or first-call cost."""
    img = Image.new("RGB", (64, 48), (128, 64, 32))
    process_image(_encode(img, ImageOptions()), ImageOptions(image_size=40))


def _encode(img: Image.Image, opts: ImageOptions) -> bytes:
    buf = io.BytesIO()
    fmt = IMAGE_FORMATS[opts.image_format]
    if fmt == "PNG":
        img.save(buf, fmt, optimize=False, compress_level=6)
    else:
        img.save(buf, fmt, quality=opts.quality)
    return buf.getvalue()


def process_batch(items: list[tuple[bytes, str | None]], opts: ImageOptions) -> list[ImageResult]:
    """Process several images in one task (fewer round trips to the worker pool)."""
    return [process_image(data, opts, ctype) for data, ctype in items]
