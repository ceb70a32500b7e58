"""Decode + preprocess + tokenise in DataLoader worker processes, overlapped with the model.

One loader serves a whole run (every part to score, in order): its worker processes start
once and keep the next batches ready while the model works and while the main process
finishes a part (candidate scoring, writing), so the GPU does not wait between parts. Workers
read only the row groups of a part that a batch needs (``__getitems__``), never a whole part.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from common.alttext import boilerplate_alt
from common.records import Status
from common.text import clean_text

from .tensor_decode import is_jpeg

log = logging.getLogger(__name__)


def clean_alt(raw: str | None) -> tuple[str, str | None]:
    """``(alt to score, why it was ignored)``: whitespace collapsed; a boilerplate alt becomes ``""``."""
    alt = clean_text(raw)
    why = boilerplate_alt(alt) if alt else None
    return ("" if why else alt), why


@dataclass
class Batch:
    """One model batch: ``pixels`` holds the rows the workers decoded (``ok``), in order.

    With tensor decoding, JPEG rows come as ``raw`` bytes instead (their ``ok`` is False until
    the main process decodes them on the model's device).
    """

    parts: torch.Tensor  # index of each row's part in the run, shape (B,)
    indices: torch.Tensor  # row number among its part's ok rows, shape (B,)
    ok: torch.Tensor  # bool (B,): decoded by a worker
    pixels: torch.Tensor  # (ok.sum(), C, H, W)
    alts: list[str]  # cleaned alt text per row ("" = none)
    alt_tokens: torch.Tensor  # (B, context_length)
    raw: list[bytes | None] | None = None  # JPEG bytes left to decode on the device (tensor decoding)

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


@dataclass
class PartPlan:
    """Where a part's ok rows are: their row numbers in the file and its row groups' first rows."""

    path: Path
    ok_rows: np.ndarray  # int64, ascending
    group_starts: np.ndarray  # int64, first file row of each row group, plus the row count at the end

    @classmethod
    def of(cls, path: Path) -> "PartPlan":
        pf = pq.ParquetFile(path)
        status = pf.read(columns=["status"]).column("status")
        ok = np.flatnonzero(pc.fill_null(pc.equal(status, Status.OK.value), False).to_numpy(zero_copy_only=False))
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        return cls(Path(path), ok.astype(np.int64), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))

    def __len__(self) -> int:
        return int(self.ok_rows.size)


class RunImages(Dataset):
    """Every ok row of a run's parts, in order: decoded, preprocessed image and tokenised alt."""

    def __init__(self, plans: Sequence[PartPlan], preprocess: Callable, tokenizer: Callable, raw_jpegs: bool = False):
        self.plans = list(plans)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.raw_jpegs = raw_jpegs  # JPEGs go to the main process undecoded (decoded there on the device)
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in self.plans])]).astype(np.int64)
        self._files: dict[int, pq.ParquetFile] = {}  # opened lazily, in each worker

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> tuple:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple]:
        """A batch of samples, reading each part's needed row groups once."""
        idx = np.asarray(indices, dtype=np.int64)
        part_of = np.searchsorted(self.offsets, idx, side="right") - 1
        out: list = [None] * idx.size
        for k in np.unique(part_of).tolist():
            mine = np.flatnonzero(part_of == k)
            positions = idx[mine] - self.offsets[k]
            plan = self.plans[k]
            rows = plan.ok_rows[positions]
            groups = np.unique(np.searchsorted(plan.group_starts, rows, side="right") - 1)
            table = self._file(k).read_row_groups(groups.tolist(), columns=["image", "alt"])
            base = np.concatenate([[0], np.cumsum(plan.group_starts[groups + 1] - plan.group_starts[groups])])
            local = np.empty(rows.size, dtype=np.int64)
            for g_i, g in enumerate(groups.tolist()):
                inside = (rows >= plan.group_starts[g]) & (rows < plan.group_starts[g + 1])
                local[inside] = base[g_i] + rows[inside] - plan.group_starts[g]
            picked = table.take(local)
            images, alts = picked.column("image").to_pylist(), picked.column("alt").to_pylist()
            for slot, pos, data, raw in zip(mine.tolist(), positions.tolist(), images, alts):
                if self.raw_jpegs and is_jpeg(data):
                    out[slot] = (k, pos, None, clean_alt(raw)[0], data)
                    continue
                img = decode_image(data)
                out[slot] = (k, pos, self.preprocess(img) if img is not None else None, clean_alt(raw)[0], None)
        return out

    def _file(self, k: int) -> pq.ParquetFile:
        if k not in self._files:
            self._files[k] = pq.ParquetFile(self.plans[k].path, memory_map=True)
        return self._files[k]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_files"] = {}  # open files stay in the process that opened them
        return state

    def collate(self, items: list[tuple]) -> Batch:
        ok = torch.tensor([px is not None for _, _, px, _, _ in items], dtype=torch.bool)
        good = [px for _, _, px, _, _ in items if px is not None]
        pixels = torch.stack(good) if good else torch.empty(0)
        alts = [alt for _, _, _, alt, _ in items]
        raw = [data for *_, data in items]
        return Batch(
            torch.tensor([k for k, _, _, _, _ in items]),
            torch.tensor([i for _, i, _, _, _ in items]),
            ok,
            pixels,
            alts,
            self.tokenizer(alts),
            raw if any(r is not None for r in raw) else None,
        )


def make_loader(dataset: RunImages, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """Ordered DataLoader over a run (order is kept, so results are deterministic)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=dataset.collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,  # one loader for the whole run: its workers live as long as it does
    )
