"""JPEG decoding and open_clip's preprocessing as tensor operations, on the model's device.

On a GPU the DataLoader's CPU workers would otherwise cap the filter at what they can decode
and resize (~1-2 ms an image each): with ``--decode torch`` (the default on CUDA) the workers
only read bytes and tokenise, and each batch of stored JPEGs is decoded by nvJPEG
(``torchvision.io.decode_jpeg(device="cuda")``), resized, centre-cropped and normalised on the
GPU. Non-JPEG images (PNG, WebP) still go through the PIL path in the workers.

The tensor path reproduces open_clip's transform (resize the shorter side with antialiased
bicubic, centre crop, normalise); pixels differ from PIL's by rounding, and CLIP scores by
about 1e-3 (tests/test_filter.py compares both paths).
"""

from __future__ import annotations

from typing import Sequence

import torch

from common.errors import ConfigError

_JPEG_MAGIC = b"\xff\xd8\xff"
#: ``--decode`` values: ``auto`` = ``torch`` on CUDA, ``pil`` on CPU.
DECODERS = ("auto", "pil", "torch")


def is_jpeg(data: bytes | None) -> bool:
    return bool(data) and data[:3] == _JPEG_MAGIC


class TensorPreprocess:
    """open_clip's image preprocessing for a model, applied to decoded uint8 CHW tensors."""

    def __init__(self, cfg: dict, device: torch.device):
        size = cfg.get("size", 224)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mode = cfg.get("resize_mode", "shortest")
        if self.mode not in ("shortest", "squash"):
            raise ConfigError(f"--decode torch does not support open_clip's resize_mode {self.mode!r}; pass --decode pil")
        self.interpolation = cfg.get("interpolation", "bicubic")
        self.device = device
        self.mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=device).view(3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=device).view(3, 1, 1)

    @classmethod
    def for_model(cls, model: torch.nn.Module, device: torch.device) -> "TensorPreprocess":
        import open_clip

        return cls(open_clip.get_model_preprocess_cfg(model), device)

    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(B, 3, H, W)`` float pixels from uint8 ``(3, h, w)`` images of any sizes."""
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        interp = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}.get(
            self.interpolation, InterpolationMode.BICUBIC)
        out = torch.empty((len(images), 3, *self.size), device=self.device)
        for i, img in enumerate(images):
            x = img.to(self.device, non_blocking=True)
            if x.shape[0] == 1:
                x = x.expand(3, -1, -1)
            if self.mode == "squash":
                x = TF.resize(x, list(self.size), interpolation=interp, antialias=True)
            else:
                x = TF.resize(x, min(self.size), interpolation=interp, antialias=True)
                x = TF.center_crop(x, list(self.size))
            out[i] = (x.float().clamp_(0, 255) / 255.0 - self.mean) / self.std
        return out


def decode_jpegs(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """Decoded RGB uint8 tensors (None where a JPEG does not decode), on ``device``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    try:
        return list(decode_jpeg(raw, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # one bad file fails the batch: decode one by one to name it
        out: list[torch.Tensor | None] = []
        for r in raw:
            try:
                out.append(decode_jpeg(r, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out
