"""Helpers for the filter tests: crawl parts built from rendered shapes, options parsed like the CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
from pathlib import Path

import numpy as np

from capcrawl.tiny import TINY_THRESHOLD, render_shape
from common.fileio import atomic_write_parquet
from common.layout import CRAWL_DIR, part_name
from common.options import add_options, from_namespace
from common.records import CRAWL_SCHEMA, Status, table_from_rows
from filter.config import FilterConfig


def shape_jpeg(shape: str, color: str, size: int = 192, seed: int = 0) -> bytes:
    """A rendered shape as the crawler would store it (JPEG)."""
    buf = io.BytesIO()
    render_shape(shape, color, size, np.random.default_rng(seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def crawl_row(shape: str | None, color: str | None, n: int, **text: str | None) -> dict:
    """An ``ok`` crawl row (or with ``status=...`` / ``image=...`` overrides) for a rendered shape."""
    url = text.pop("url", None) or f"https://shapes.example/img/{n:04d}.jpg"
    image = text.pop("image", None)
    if image is None and shape:
        image = shape_jpeg(shape, color, seed=n)
    status = text.pop("status", Status.OK.value)
    row = {
        "url": url,
        "page_url": "https://shapes.example/page.html",
        "status": status,
        "image": image if status == Status.OK.value else None,
        "image_format": "jpeg",
        "sha256": hashlib.sha256(image or b"").hexdigest(),
        "fetched_at": dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc),
    }
    row.update(text)
    return row


def write_part(work: Path, index: int, rows: list[dict]) -> Path:
    """``WORK/crawl/part-NNNNN.parquet`` in CRAWL_SCHEMA."""
    return atomic_write_parquet(table_from_rows(rows, CRAWL_SCHEMA), Path(work) / CRAWL_DIR / part_name(index))


def filter_config(work: Path, *argv: str) -> FilterConfig:
    """Parse ``argv`` through the real option parser, then validate, exactly as the CLI does."""
    parser = argparse.ArgumentParser()
    add_options(parser, FilterConfig, skip=("work",))
    return from_namespace(FilterConfig, parser.parse_args(list(argv)), work=str(work))


def tiny_args(tiny: tuple[Path, Path], *extra: str) -> list[str]:
    """Options selecting the tiny model on CPU through the public --model/--pretrained path."""
    config_json, checkpoint = tiny
    return [
        "--model", str(config_json), "--pretrained", str(checkpoint), "--device", "cpu",
        "--threshold", str(TINY_THRESHOLD), "--workers", "0", "--batch-size", "16", *extra,
    ]


class Oracle:
    """The tiny model's own verdicts, computed image by image outside the filter stage.

    Tests compare the stage's choices with these instead of with captions one CPU's trained
    checkpoint happens to prefer: a checkpoint trained on another CPU (another SIMD width)
    differs, and must pass the same tests. Where two outcomes are closer than ``TIE`` the
    oracle accepts either.
    """

    TIE = 2e-3

    def __init__(self, tiny: tuple[Path, Path]):
        from filter.model import load_model

        self.model = load_model(str(tiny[0]), str(tiny[1]), "cpu", "fp32")

    def image(self, data: bytes):
        from filter.data import decode_image

        img = decode_image(data)
        assert img is not None
        return self.model.encode_images(self.model.preprocess(img)[None])[0]

    def scores(self, data: bytes, texts: list[str]) -> list[float]:
        if not texts:
            return []
        emb = self.image(data)
        return (self.model.encode_tokens(self.model.tokenizer(texts)) @ emb).tolist()

    def outcomes(self, row: dict, threshold: float = TINY_THRESHOLD, labels: tuple[str, ...] = ()) -> set[tuple]:
        """Every acceptable ``(caption, caption_source, kept)`` for a decodable crawl row under the
        documented policy: the alt if it scores >= threshold; else, among candidates that score
        >= the fill threshold (= threshold here) and more than the alt, the best of the
        highest tier (figcaption / title / caption_in before page text, file names, labels)."""
        from common.text import clean_text
        from filter.candidates import row_candidates
        from filter.stage import TIERS

        alt = clean_text(row.get("alt"))
        cands = [(c.text, c.source) for c in row_candidates(row)]
        scores = self.scores(row["image"], ([alt] if alt else []) + [t for t, _ in cands] + list(labels))
        alt_score = scores.pop(0) if alt else None
        label_scores = scores[len(cands):]
        scored = list(zip(cands, scores[: len(cands)]))
        if labels:  # the stage offers the best label-bank phrase
            best_label = max(range(len(labels)), key=lambda j: label_scores[j])
            scored += [((labels[j], "label"), label_scores[j]) for j in range(len(labels))
                       if abs(label_scores[j] - label_scores[best_label]) < self.TIE]
        out: set[tuple] = set()
        tie = self.TIE

        if alt and alt_score >= threshold - tie:
            out.add((alt, "alt", True))
            if alt_score >= threshold + tie:
                return out
        usable = [((t, src), sc) for (t, src), sc in scored
                  if sc >= threshold - tie and (alt_score is None or sc > alt_score - tie)]
        certain = [((t, src), sc) for (t, src), sc in scored
                   if sc >= threshold + tie and (alt_score is None or sc > alt_score + tie)]
        tier_of = lambda src: TIERS[src] if not isinstance(src, str) else 2  # noqa: E731 - labels are tier 2
        tiers = sorted({tier_of(src) for (_, src), _ in usable})
        for tier in tiers:
            in_tier = [(c, sc) for c, sc in usable if tier_of(c[1]) == tier]
            best = max(sc for _, sc in in_tier)
            for (text, src), sc in in_tier:
                if sc > best - tie:
                    out.add((text, src if isinstance(src, str) else src.value, True))
            if any(tier_of(c[1]) == tier for c, _ in certain):
                break  # a lower tier cannot win over a tier with a certain candidate
        if alt and not certain:
            out.add((alt, "alt", False))
        if not alt and not certain:
            out.add((None, None, False))
        return out
