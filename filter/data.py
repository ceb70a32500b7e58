"""Decode + preprocess + tokenise in DataLoader worker processes, overlapped with the model."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """One model batch: ``pixels`` holds only the rows that decoded (``ok``)."""

    indices: torch.Tensor  # row numbers in the part, shape (B,)
    ok: torch.Tensor  # bool (B,): decoded
    pixels: torch.Tensor  # (ok.sum(), C, H, W)
    alts: list[str]  # cleaned alt text per row ("" = none)
    alt_tokens: torch.Tensor  # (B, context_length)

    def pin_memory(self) -> "Batch":
        self.pixels = self.pixels.pin_memory()
        self.alt_tokens = self.alt_tokens.pin_memory()
        return self


def decode_image(data: bytes | None) -> Image.Image | None:
    """RGB image from stored bytes, or None when they do not decode."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, struct.error... per bad file
        log.debug("image does not decode: %s: %s", type(e).__name__, e)
        return None


class PartImages(Dataset):
    """Rows of one crawl part: decoded, preprocessed image and tokenised alt."""

    def __init__(self, images: Sequence[bytes | None], alts: Sequence[str], preprocess: Callable, tokenizer: Callable):
        self.images = images
        self.alts = alts
        self.preprocess = preprocess
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        img = decode_image(self.images[i])
        return i, (self.preprocess(img) if img is not None else None), self.alts[i]

    def collate(self, items: list[tuple[int, torch.Tensor | None, str]]) -> Batch:
        ok = torch.tensor([px is not None for _, px, _ in items], dtype=torch.bool)
        good = [px for _, px, _ in items if px is not None]
        pixels = torch.stack(good) if good else torch.empty(0)
        alts = [alt for _, _, alt in items]
        return Batch(torch.tensor([i for i, _, _ in items]), ok, pixels, alts, self.tokenizer(alts))


def make_loader(dataset: PartImages, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """Ordered DataLoader over a part (order is kept, so results are deterministic)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=dataset.collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
