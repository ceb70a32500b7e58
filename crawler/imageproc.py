"""Decode, check, resize, re-encode and hash downloaded image bytes.

Runs in worker processes (never on the reactor thread). Pure functions of bytes and
options, so they are tested directly and shared by crawl and URL-list modes.

JPEGs that are shrunk with the default ``area`` resampling take a faster road when
simplejpeg (libjpeg-turbo's TurboJPEG API) and OpenCV are installed: the file is decoded at
a reduced scale in the DCT domain (1/2, 1/4 or 1/8, chosen by :func:`dct_scale`), resized
the rest of the way (bilinear down by at most 1.77x, ``cv2.INTER_AREA`` up by at most 1.13x
or by area averaging when no reduced decode applies) and encoded by
libjpeg-turbo straight from the decoded array. Without them, or for anything else (PNG,
WebP, CMYK JPEGs, files libjpeg-turbo only half decodes), Pillow does the work as before,
with the same choice of scale.

Samples are sRGB: an image that embeds another ICC colour profile (Display P3 from phones,
Adobe RGB, a CMYK press profile) is converted to sRGB with LittleCMS, after the resize; the
re-encoded sample carries no profile, so a viewer takes it as sRGB, as it now is.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from common.phash import PHASH_SOURCE_MIN_SIDE, perceptual_hash
from common.records import Status

log = logging.getLogger(__name__)

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


#: A JPEG bound for a smaller size may be decoded at 1/k scale in the DCT domain (k = 2, 4
#: or 8) when the decoded image keeps at least this share of the target size on each side.
#: Area averaging over boxes of s source pixels passes frequencies up to 0.443/s cycles per
#: pixel at half power or more (|sinc(0.443)| = 0.71); a 1/k decode keeps every frequency
#: below 1/(2k). At decoded/target = s/k >= 0.886 the DCT keeps all that the area filter
#: passes at half power or more, so what a reduced decode loses is what the area average
#: itself all but removes. The rest of the way is an area average down, or an area-overlap
#: interpolation up by at most 1/0.886 = 1.13x. Measured against a full decode with an exact
#: area resize in bench/quality_guard.py (bench/README.md).
DCT_SCALE_MIN_SHARE = 0.886
_DCT_SCALES = (8, 4, 2)


def dct_scale(w: int, h: int, tw: int, th: int, min_share: float = DCT_SCALE_MIN_SHARE) -> int:
    """The largest k in 8, 4, 2 (else 1) at which a w x h JPEG decoded at 1/k keeps at least
    ``min_share`` of the target size tw x th on both sides (1.0: the decode covers the target)."""
    for k in _DCT_SCALES:
        if -(-w // k) >= min_share * tw and -(-h // k) >= min_share * th:
            return k
    return 1


class _FastCodecs:
    """simplejpeg and OpenCV when both import (see the module docstring); ``None`` otherwise."""

    modules: tuple[Any, Any] | None = None
    loaded = False
    enabled = True


def fast_codecs() -> tuple[Any, Any] | None:
    """``(simplejpeg, cv2)``, or ``None`` when either is missing or the fast road is switched off.

    OpenCV is told to use one thread: each image worker is a process of its own already.
    """
    if not _FastCodecs.enabled:
        return None
    if not _FastCodecs.loaded:
        _FastCodecs.loaded = True
        try:
            import cv2
            import simplejpeg
        except ImportError as e:
            log.debug("simplejpeg or OpenCV missing (%s): JPEGs are decoded and resized with Pillow", e)
        else:
            cv2.setNumThreads(1)
            _FastCodecs.modules = (simplejpeg, cv2)
    return _FastCodecs.modules


def use_fast_codecs(enabled: bool) -> bool:
    """Switch the simplejpeg/OpenCV road on or off in this process; returns the previous setting.

    For tests and the quality benchmark, which compare both roads on the same files."""
    previous, _FastCodecs.enabled = _FastCodecs.enabled, enabled
    return previous


def _reduced_size(w: int, h: int, k: int) -> tuple[int, int]:
    """The size of a w x h JPEG decoded at 1/k (libjpeg rounds up)."""
    return -(-w // k), -(-h // k)


def _scale(img: Image.Image, opts: ImageOptions, target: tuple[int, int] | None = None, reduced: bool = False) -> Image.Image:
    """The image at its target size, before any crop or border.

    ``target`` is the size computed from the original file; ``reduced`` says the image is a
    JPEG decoded at 1/k (:func:`dct_scale`), within 0.886-1.77x of the target, and brought to
    it with Pillow's bilinear (triangle) filter, not the Lanczos of a real enlargement.
    """
    tw, th = target or _target_size(img.width, img.height, opts)
    if (tw, th) == img.size:
        return img
    if opts.resample == "area" and reduced:
        # At most 1.77x down or 1.13x up is left. Pillow's BOX takes whole pixels by their
        # centres, too coarse at such ratios (1600x1200 decoded at 1/4 = 400x300 -> 341x256:
        # 1.7 dB under an exact area average); its triangle filter is closer.
        return img.resize((tw, th), Image.Resampling.BILINEAR)
    if opts.resample == "area" and tw <= img.width and th <= img.height:
        return img.resize((tw, th), Image.Resampling.BOX)
    flt = Image.Resampling.BICUBIC if opts.resample == "bicubic" else Image.Resampling.LANCZOS
    return img.resize((tw, th), flt, reducing_gap=3.0)


#: The longest side each output format can hold (JPEG: 65,535 less libjpeg's margin; WebP: 2^14 - 1).
FORMAT_MAX_SIDE = {"jpg": 65500, "webp": 16383, "png": 2**31 - 1}


def _unfit_size(target: tuple[int, int], opts: ImageOptions) -> tuple[Status, str] | None:
    """Why an image cannot be resized to ``target`` (a 64x20000 strip that keep_ratio makes
    256x80000): more pixels than --max-pixels in the resized image, which the workers would
    have to hold, or a final side longer than the output format holds. None when it fits."""
    tw, th = target
    if tw * th > opts.max_pixels:
        return Status.DECOMPRESSION_BOMB, f"resized to {tw}x{th}: {tw * th} pixels is over {opts.max_pixels} pixels"
    fw, fh = _framed_size(tw, th, opts)
    limit = FORMAT_MAX_SIDE.get(opts.image_format, FORMAT_MAX_SIDE["png"])
    if max(fw, fh) > limit:
        return Status.TOO_LARGE, f"resized to {fw}x{fh}: {opts.image_format} holds at most {limit} px a side"
    return None


def _framed_size(w: int, h: int, opts: ImageOptions) -> tuple[int, int]:
    """The final size of a w x h scaled image: center_crop cuts only a side longer than the
    square's (a side already shorter, with --resize-only-if-bigger, stays whole rather than
    being padded with black); border pads up to it; the other modes keep the scaled size."""
    s = opts.image_size
    if opts.resize_mode == "center_crop":
        return min(s, w), min(s, h)
    if opts.resize_mode == "border":
        return max(s, w), max(s, h)
    return w, h


def _frame(img: Image.Image, opts: ImageOptions) -> Image.Image:
    """Crop (center_crop) or pad (border) a scaled image to its final size (:func:`_framed_size`)."""
    fw, fh = _framed_size(img.width, img.height, opts)
    if (fw, fh) == img.size:
        return img
    if opts.resize_mode == "center_crop":
        left, top = (img.width - fw) // 2, (img.height - fh) // 2
        return img.crop((left, top, left + fw, top + fh))
    canvas = Image.new("RGB", (fw, fh), (255, 255, 255))
    canvas.paste(img, ((fw - img.width) // 2, (fh - img.height) // 2))
    return canvas


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
    """RGB, transparent pixels on white (an alpha channel, or a palette's, grey's or RGB's
    transparent colour: PNG's tRNS, GIF's)."""
    keyed = "transparency" in img.info and img.mode in ("P", "L", "RGB")
    if img.mode == "RGB" and not keyed:
        return img
    if img.mode.startswith("I") or img.mode == "F":  # 16-bit (or 32-bit) grey: convert() would clip at 255
        img = _grey_to_8_bits(img)
    if img.mode in ("RGBA", "LA", "PA") or keyed:
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB")


_XMP_RIGHTS = re.compile(rb"<dc:rights>.*?<rdf:li[^>]*>(.*?)</rdf:li>", re.S)
_XMP_WEB = re.compile(rb"xmpRights:WebStatement(?:=\"([^\"]+)\"|>([^<]+)<)")


def _grey_to_8_bits(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or floating-point grey image (PNG, TIFF) as 8-bit grey. A file that
    says it is 16-bit (mode I;16) is divided by 257, however dark; a float image whose values
    lie in 0-1 is taken as normalised (times 255); otherwise values over 255 are taken as
    16-bit and an image whose values all fit in 8 bits keeps them."""
    values = np.asarray(img)
    if values.dtype.kind == "f":
        values = np.nan_to_num(values)
    top = float(values.max()) if values.size else 0.0
    if img.mode.startswith("I;16") or top > 255:
        scaled = values / 257.0
    elif values.dtype.kind == "f" and top <= 1.0:
        scaled = values * 255.0
    else:
        scaled = values
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


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


#: ``Image.transpose`` methods for EXIF orientations 2-8 (what ``ImageOps.exif_transpose`` does).
_ORIENTATION_METHODS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112


@functools.lru_cache(maxsize=1)
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.lru_cache(maxsize=32)
def _srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """LittleCMS transform from an embedded ICC profile to sRGB for images of ``mode`` (RGB or
    CMYK), or None where nothing is to be done: the profile is sRGB's, not of that colour space
    (a grey one), or unreadable (the pixels are then taken as sRGB, as a browser would)."""
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if mode == "RGB" and "srgb" in (ImageCms.getProfileDescription(src) or "").lower():
            return None
        return ImageCms.buildTransform(src, _srgb(), mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as e:
        log.debug("ICC profile not used (%s)", e)
        return None


def _icc(img: Image.Image) -> bytes | None:
    icc = img.info.get("icc_profile")
    return icc if isinstance(icc, bytes) and icc else None


def _to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """An RGB image in its embedded profile's colours, as sRGB (unchanged without one)."""
    transform = _srgb_transform(icc, "RGB") if icc else None
    if transform is None:
        return img
    out = ImageCms.applyTransform(img, transform)
    out.info.pop("icc_profile", None)  # LittleCMS tags it sRGB; samples carry no profile
    return out


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened image, as far as it is still to be applied; 1
    when absent or invalid. Pillow's TIFF reader turns the image itself (at load) and already
    reports the upright size, which counts as applied: turning it again squashes it."""
    value = img.getexif().get(_EXIF_ORIENTATION, 1)
    if value not in _ORIENTATION_METHODS:
        return 1
    if value >= 5 and img.format == "TIFF" and img.size != (img.tag_v2.get(256), img.tag_v2.get(257)):
        return 1
    return value


def _shrink_plan(img: Image.Image, opts: ImageOptions) -> tuple[tuple[int, int], int]:
    """The target size of an opened image, upright, and the DCT scale k to decode it at (1
    for anything but a shrunk JPEG). EXIF orientations 5-8 turn the image a quarter, so that
    its stored width is its upright height."""
    w, h = img.size
    turned = _orientation(img) >= 5
    uw, uh = (h, w) if turned else (w, h)
    tw, th = _target_size(uw, uh, opts)
    k = 1
    if img.format == "JPEG" and opts.resize_mode != "no" and tw <= uw and th <= uh:
        # Bicubic and Lanczos keep the old rule: the reduced decode covers the target.
        share = DCT_SCALE_MIN_SHARE if opts.resample == "area" else 1.0
        k = dct_scale(w, h, *((th, tw) if turned else (tw, th)), min_share=share)
    return (tw, th), k


#: The first bytes of the image formats browsers show (WHATWG MIME sniffing's image patterns).
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"\x00\x00\x01\x00", b"\x00\x00\x02\x00",
                b"II*\x00", b"MM\x00*")


def looks_like_image(data: bytes) -> bool:
    """The bytes start as an image file does (JPEG, PNG, GIF, WebP, BMP, ICO, TIFF, AVIF/HEIF)."""
    if data.startswith(_IMAGE_MAGIC):
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1")


def process_image(data: bytes, opts: ImageOptions, content_type: str | None = None) -> ImageResult:
    """Turn downloaded bytes into a sample image, or a status saying why not."""
    sha = hashlib.sha256(data).hexdigest()
    res = ImageResult(status=Status.OK.value, sha256=sha)
    if content_type and content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml") \
            and not looks_like_image(data):
        # A soft 404 or an error page. An image that a script sends as text/html (a forgotten
        # header) is read: browsers sniff <img> responses too.
        return _fail(res, Status.NOT_AN_IMAGE, f"content type {content_type}")
    # Pillow's own decompression-bomb guard stays on, at the same limit as --max-pixels: it
    # refuses at open() what is over twice the limit, and warns (turned into an error at
    # load(), below) for a frame that decodes larger than its header says.
    Image.MAX_IMAGE_PIXELS = opts.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # named just below
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # Pillow's words name its own (2x) limit; ours is --max-pixels
        size = re.search(r"\((\d+) pixels\)", str(e))
        return _fail(res, Status.DECOMPRESSION_BOMB, f"{size.group(1) if size else 'more than twice'} pixels is over {opts.max_pixels} pixels")
    except UnidentifiedImageError:
        if looks_like_image(data):
            return _fail(res, Status.CORRUPT, "starts as an image file but cannot be read (damaged, or a kind "
                                              "Pillow does not decode, such as a 12-bit JPEG)")
        return _fail(res, Status.NOT_AN_IMAGE, "not a decodable image format")
    except Exception as e:  # Pillow raises many types for broken headers
        return _fail(res, Status.CORRUPT, f"{type(e).__name__}: {e}")
    ow, oh = img.size
    try:
        turned = _orientation(img) >= 5
    except (OSError, SyntaxError, ValueError):  # the EXIF is damaged: decided below, with the rest
        turned = False
    # the original's size as it is shown (turned a quarter by EXIF 5-8), like the sample's
    res.original_width, res.original_height = (oh, ow) if turned else (ow, oh)
    shown = f"{res.original_width}x{res.original_height}"
    if ow * oh > opts.max_pixels:
        return _fail(res, Status.DECOMPRESSION_BOMB, f"{shown} is over {opts.max_pixels} pixels")
    if min(ow, oh) < max(1, opts.min_image_size):
        return _fail(res, Status.TOO_SMALL, f"{shown} is under {opts.min_image_size} px")
    try:
        res.rights, res.rights_url = embedded_rights(img, data)
        target, k = _shrink_plan(img, opts)
    except (OSError, SyntaxError, ValueError) as e:
        return _fail(res, Status.CORRUPT, f"{type(e).__name__}: {e}")
    if (unfit := _unfit_size(target, opts)) is not None:
        return _fail(res, *unfit)
    if _fast_jpeg(data, img, opts, target, k, res):
        return res
    try:
        if k > 1:  # decode at 1/k in the DCT domain (dct_scale); Pillow's draft takes the k that fits
            img.draft("RGB", (max(1, ow // k), max(1, oh // k)))
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy when there is nothing to turn
        icc = _icc(img)
        if img.mode == "CMYK" and icc and (cmyk := _srgb_transform(icc, "CMYK")) is not None:
            img, icc = ImageCms.applyTransform(img, cmyk), None  # by its press profile, not Pillow's naive inversion
            img.info.pop("icc_profile", None)
        img = _to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        return _fail(res, Status.CORRUPT, f"{type(e).__name__}: {e}")
    reduced = k > 1 and img.width * img.height < ow * oh  # Pillow's draft may decline (several tiles)
    scaled = _scale(img, opts, target, reduced=reduced)
    res.phash = perceptual_hash(_phash_source(img, scaled))
    out = _frame(_to_srgb(scaled, icc), opts)
    res.image, res.image_format = _encode(out, opts), opts.image_format
    res.width, res.height = out.size
    return res


def _fast_jpeg(data: bytes, img: Image.Image, opts: ImageOptions, target: tuple[int, int], k: int, res: ImageResult) -> bool:
    """Decode (at 1/k), resize, hash and encode a shrunk JPEG with simplejpeg and OpenCV.

    Fills ``res`` and returns True; returns False, touching nothing, where Pillow has to do
    it: the codecs are missing, the resampling is not ``area``, the image is enlarged, the file
    is not YCbCr or greyscale (CMYK, YCCK), or libjpeg-turbo reports it damaged (Pillow then
    decides between ``ok`` and ``corrupt``, as it always did).
    """
    codecs = fast_codecs()
    w, h = img.size
    if codecs is None or img.format != "JPEG" or img.mode not in ("RGB", "L") or opts.resample != "area":
        return False
    orientation = _orientation(img)
    tw, th = target
    uw, uh = (h, w) if orientation >= 5 else (w, h)
    if tw > uw or th > uh:  # enlarged: Pillow's Lanczos, as always
        return False
    simplejpeg, cv2 = codecs
    dw, dh = _reduced_size(w, h, k)
    try:
        decoded = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=dw, min_height=dh, min_factor=k)
    except ValueError as e:  # damaged or unusual: Pillow's decoder decides, as before
        log.debug("simplejpeg could not decode (%s); Pillow decodes", e)
        return False
    if orientation != 1:
        decoded = np.asarray(Image.fromarray(decoded).transpose(_ORIENTATION_METHODS[orientation]))
    if decoded.shape[:2] == (th, tw):
        scaled = decoded
    elif k > 1 and decoded.shape[1] > tw:
        # At most 1.77x down is left after the reduced decode, which has already band-limited
        # the image to the decoded grid: bilinear is within 0.06 dB of an area average there
        # (bench/README.md, quality guard) and 4-5x faster than OpenCV's fractional INTER_AREA.
        scaled = cv2.resize(decoded, (tw, th), interpolation=cv2.INTER_LINEAR)
    else:
        scaled = cv2.resize(decoded, (tw, th), interpolation=cv2.INTER_AREA)
    src = scaled if scaled.size < decoded.size and min(th, tw) >= PHASH_SOURCE_MIN_SIDE else decoded
    res.phash = perceptual_hash(Image.fromarray(src))
    if (icc := _icc(img)) and (transform := _srgb_transform(icc, "RGB")) is not None:
        scaled = np.asarray(ImageCms.applyTransform(Image.fromarray(scaled), transform))
    if opts.image_format == "jpg" and opts.resize_mode in ("keep_ratio", "keep_ratio_largest", "no"):
        res.image = simplejpeg.encode_jpeg(scaled, quality=opts.quality, colorspace="RGB", colorsubsampling="420")
        res.width, res.height = tw, th
    else:
        out = _frame(Image.fromarray(scaled), opts)
        res.image = _encode(out, opts)
        res.width, res.height = out.size
    res.image_format = opts.image_format
    return True


def _fail(res: ImageResult, status: Status, error: str) -> ImageResult:
    res.status, res.error = status.value, error
    return res


def corrupt(data: bytes, error: str) -> ImageResult:
    """The row of an image that processing failed on in a way no check foresaw."""
    return ImageResult(status=Status.CORRUPT.value, error=error[:500], sha256=hashlib.sha256(data).hexdigest())


def init_worker(owner: int | None = None) -> None:
    """Worker-process start: leave Ctrl-C to the crawl process, which stops gracefully and
    still needs its workers to finish the images in flight; and end with ``owner`` (the crawl
    process's pid).

    Workers run at a lower priority (``WORKER_NICE``) than the crawl process, whose one event
    loop every image passes through.

    A worker's parent is the fork server, not the crawl process, so nothing tells it when the
    crawl process is killed (``kill -9``, the OOM killer): it would wait for its next task
    forever, and hold the fork server alive with it. A daemon thread looks once a second.
    """
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(WORKER_NICE)
    if owner is not None:
        import threading

        threading.Thread(target=_exit_without, args=(owner,), name="owner-watch", daemon=True).start()


#: How much lower a worker's priority is than its crawl process's. The crawl process is the one
#: serial step; when it and the workers all want a core, the workers wait, not it (they catch up
#: in its idle moments). Base set, 7 alternated download + shards pairs against 0: median 1.08x
#: faster, 6 of 7 pairs faster (bench/README.md, sixth session).
WORKER_NICE = 10

#: Seconds between a worker's checks that its crawl process is still there.
OWNER_CHECK_S = 1.0


def _exit_without(owner: int) -> None:
    import os
    import time

    while True:
        time.sleep(OWNER_CHECK_S)
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            os._exit(0)  # the crawl process is gone: its results have nowhere to go
        except PermissionError:
            pass  # a process of that pid exists


def warm_up() -> None:
    """Run once in each new worker so that the first real batch pays no import or first-call cost."""
    img = Image.new("RGB", (64, 48), (128, 64, 32))
    process_image(_encode(img, ImageOptions()), ImageOptions(image_size=40))


def _encode(img: Image.Image, opts: ImageOptions) -> bytes:
    buf = io.BytesIO()
    fmt = IMAGE_FORMATS[opts.image_format]
    img.info.pop("icc_profile", None)  # the pixels are sRGB (_to_srgb); Pillow's PNG writer would copy the source's profile
    if fmt == "PNG":
        img.save(buf, fmt, optimize=False, compress_level=6)
    else:
        img.save(buf, fmt, quality=opts.quality)
    return buf.getvalue()


def process_batch(items: list[tuple[bytes, str | None]], opts: ImageOptions) -> list[ImageResult]:
    """Process several images in one task (fewer round trips to the worker pool). An image
    that fails in a way no check foresaw is ``corrupt`` with the error, alone: its batch-mates'
    rows are kept."""
    return [_process_or_report(data, opts, ctype) for data, ctype in items]


def _process_or_report(data: bytes, opts: ImageOptions, content_type: str | None) -> ImageResult:
    try:
        return process_image(data, opts, content_type)
    except Exception as e:  # an encoder's or decoder's failure that no check above foresaw
        log.warning("image processing failed: %s: %s", type(e).__name__, e)
        return corrupt(data, f"{type(e).__name__}: {e}")
