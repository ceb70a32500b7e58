"""The filter stage: score every crawled image against its alt text, fill bad captions, keep or drop.

``WORK/crawl/part-N.parquet`` -> ``WORK/scored/part-N.parquet`` + ``WORK/scored/emb-N.npy``,
one output per input part, written atomically; the scored part's existence marks
a part as done, so runs resume and many machines can split the parts
(``--shard-index/--num-shards``) without locks.
"""

from __future__ import annotations

import io
import logging
import math
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from common.errors import ConfigError
from common.fileio import atomic_write_bytes, atomic_write_json, atomic_write_parquet, remove_stale_temps
from common.layout import DONE_FILE, STATS_FILE, emb_name, list_parts, parse_part_name
from common.options import digest
from common.records import SCHEMA_VERSION, SCORED_SCHEMA, CaptionSource, FilterReason, Status, conform
from common.text import clean_text
from filter import columns as col
from filter.candidates import Candidate, render_labels, row_candidates
from filter.config import FilterConfig
from filter.data import PartImages, make_loader
from filter.model import LoadedModel, TextEmbeddingCache, check_generation_support, load_model

log = logging.getLogger(__name__)

#: ``progress(part_name, rows_in_part, parts_done, parts_selected)``, called after each part.
ProgressHook = Callable[[str, int, int, int], None]

_LABEL_CHUNK = 4096


@dataclass(frozen=True)
class Decision:
    """The filter's verdict on one row."""

    caption: str | None
    source: CaptionSource | None
    score: float | None
    kept: bool
    reason: FilterReason | None


def decide(
    alt: str,
    alt_score: float,
    best: Candidate | None,
    best_score: float,
    threshold: float,
    fill_threshold: float,
) -> Decision:
    """Pick the caption of a decoded image: its alt if it scores, else the best candidate that does."""
    has_alt = bool(alt) and not math.isnan(alt_score)
    if has_alt and alt_score >= threshold:
        return Decision(alt, CaptionSource.ALT, alt_score, True, None)
    if best is not None and best_score >= fill_threshold and (not has_alt or best_score > alt_score):
        kept = best_score >= threshold
        return Decision(best.text, best.source, best_score, kept, None if kept else FilterReason.BELOW_THRESHOLD)
    if has_alt:
        return Decision(alt, CaptionSource.ALT, alt_score, False, FilterReason.BELOW_THRESHOLD)
    reason = FilterReason.NO_CANDIDATE if best is None else FilterReason.BELOW_THRESHOLD
    return Decision(None, None, None, False, reason)


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

    def _want_generation(self) -> bool:
        mode = self.config.generate
        if mode == "no" or (mode == "auto" and not self.model.is_coca):
            return False
        if not self.model.is_coca:
            raise ConfigError(f"--generate yes needs a CoCa model, and {self.model.name} is not one; pass --generate no")
        check_generation_support()
        return True

    # --- the per-part pipeline -------------------------------------------------------

    def score_part(self, table: pa.Table) -> tuple[pa.Table, np.ndarray]:
        """Scored table (ok rows only, SCORED_SCHEMA) and its row-aligned float16 embeddings."""
        ok = table.filter(pc.equal(table.column(col.STATUS), Status.OK.value))
        alts = [clean_text(a) for a in ok.column(col.ALT).to_pylist()]
        scores = self._embed_part(ok.column(col.IMAGE).to_pylist(), alts)
        decisions = self._decide_rows(ok, alts, scores)
        return _scored_table(ok, scores, decisions), scores.embeddings.cpu().numpy().astype(np.float16)

    def _embed_part(self, images: list[bytes | None], alts: list[str]) -> _PartScores:
        """Run the image tower over all rows and the text tower over their alts, batch by batch."""
        n, cfg, model = len(images), self.config, self.model
        dataset = PartImages(images, alts, model.preprocess, model.tokenizer)
        loader = make_loader(dataset, cfg.batch_size, cfg.workers, pin_memory=model.device.type == "cuda")
        emb_parts, alt_parts, generated = [], [], {}
        for batch in loader:
            rows = batch.indices[batch.ok]
            if not len(rows):
                continue
            img = model.encode_images(batch.pixels)
            emb_parts.append((rows, img))
            with_alt = [k for k, i in enumerate(rows.tolist()) if alts[i]]
            alt_score = None
            if with_alt:
                texts = [alts[i] for i in rows[with_alt].tolist()]
                self.texts.encode_missing_tokens(texts, batch.alt_tokens[batch.ok][with_alt])
                alt_score = (img[with_alt] * self.texts.embed(texts)).sum(-1)
                alt_parts.append((rows[with_alt], alt_score))
            if self.generate:
                generated.update(self._generate_for_batch(rows, batch.pixels, with_alt, alt_score))
        return self._gather(n, emb_parts, alt_parts, generated)

    def _generate_for_batch(
        self, rows: torch.Tensor, pixels: torch.Tensor, with_alt: list[int], alt_score: torch.Tensor | None
    ) -> dict[int, str]:
        """CoCa captions for the rows of a batch whose alt is missing or scores under threshold."""
        need = torch.ones(len(rows), dtype=torch.bool)
        if alt_score is not None:
            need[with_alt] = alt_score.cpu() < self.config.threshold
        if not need.any():
            return {}
        texts = self.model.generate(pixels[need])
        return {int(r): t for r, t in zip(rows[need].tolist(), texts) if t}

    def _gather(self, n: int, emb_parts, alt_parts, generated) -> _PartScores:
        emb = torch.zeros(n, self.embed_dim, device=self.model.device)
        decoded = np.zeros(n, dtype=bool)
        for rows, e in emb_parts:
            emb[rows.to(emb.device)] = e
            decoded[rows.numpy()] = True
        alt_scores = np.full(n, np.nan, dtype=np.float64)
        for rows, s in alt_parts:
            alt_scores[rows.numpy()] = s.cpu().numpy()
        return _PartScores(emb, decoded, alt_scores, generated)

    def _decide_rows(self, ok: pa.Table, alts: list[str], scores: _PartScores) -> list[Decision]:
        """Fill the rows whose alt fails, then decide every row."""
        cfg = self.config
        fill = [
            i for i in range(ok.num_rows)
            if scores.decoded[i] and (not alts[i] or scores.alt_scores[i] < cfg.threshold)
        ]
        best = self._best_candidates(ok, fill, scores)
        out = []
        for i in range(ok.num_rows):
            if not scores.decoded[i]:
                out.append(Decision(None, None, None, False, FilterReason.DECODE_ERROR))
                continue
            cand, cand_score = best.get(i, (None, float("nan")))
            out.append(decide(alts[i], scores.alt_scores[i], cand, cand_score, cfg.threshold, cfg.effective_fill_threshold))
        return out

    def _best_candidates(self, ok: pa.Table, fill: list[int], scores: _PartScores) -> dict[int, tuple[Candidate, float]]:
        """Best (candidate, score) per fill row: row texts, generated caption and label bank, scored together."""
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
        best: dict[int, tuple[Candidate, float]] = {}
        if pair_cand:
            text_emb = self.texts.embed([c.text for c in pair_cand])
            index = torch.tensor(pair_row, device=img.device)
            pair_scores = (img[index] * text_emb).sum(-1).cpu().tolist()
            for k, cand, s in zip(pair_row, pair_cand, pair_scores):
                if fill[k] not in best or s > best[fill[k]][1]:
                    best[fill[k]] = (cand, s)
        if self.label_emb is not None:
            self._merge_labels(fill, img, best)
        return best

    def _merge_labels(self, fill: list[int], img: torch.Tensor, best: dict[int, tuple[Candidate, float]]) -> None:
        """Best label-bank phrase per fill row (a matrix product, chunked), if it beats the row's candidates."""
        for start in range(0, len(fill), _LABEL_CHUNK):
            sims = img[start : start + _LABEL_CHUNK] @ self.label_emb.T
            values, index = sims.max(dim=1)
            for k, (v, j) in enumerate(zip(values.cpu().tolist(), index.cpu().tolist())):
                row = fill[start + k]
                if row not in best or v > best[row][1]:
                    best[row] = (Candidate(self.labels[j], CaptionSource.LABEL), v)

    # --- running over the work directory ---------------------------------------------

    def is_done(self, part: Path) -> bool:
        """A part is done when its scored output (and embeddings, if wanted) exist."""
        return part_done(self.config, part)

    def process_part(self, part: Path) -> int:
        """Score one crawl part and write its outputs (embeddings first, the part last as the marker)."""
        table, emb = self.score_part(pq.read_table(part))
        out = self.config.scored_dir / part.name
        if self.config.embeddings:
            buf = io.BytesIO()
            np.save(buf, emb)
            atomic_write_bytes(buf.getvalue(), out.parent / emb_name(out))
        atomic_write_parquet(table, out)
        return table.num_rows

    def run(self, progress: ProgressHook | None = None) -> dict:
        """Score this machine's unfinished parts, then rewrite ``stats.json`` from all scored parts."""
        cfg = self.config
        parts = select_parts(list_parts(cfg.crawl_dir), cfg.shard_index, cfg.num_shards)
        mine = {p.name for p in parts} | {emb_name(p) for p in parts}
        remove_stale_temps(cfg.scored_dir, lambda final: final in mine)  # a killed run's half-written outputs
        scored = skipped = rows = 0
        started = time.monotonic()
        for done, part in enumerate(parts, 1):
            if self.is_done(part):
                skipped += 1
                log.info("skipping %s: already scored", part.name)
            else:
                n = self.process_part(part)
                scored, rows = scored + 1, rows + n
                log.info("scored %s: %d rows", part.name, n)
            if progress:
                progress(part.name, rows, done, len(parts))
        stats = collect_stats(cfg)
        elapsed = time.monotonic() - started
        stats["this_run"] = {
            "parts_selected": len(parts),
            "parts_scored": scored,
            "parts_skipped": skipped,
            "rows_scored": rows,
            "seconds": round(elapsed, 3),
            "texts_encoded": self.texts.encoded,
        }
        atomic_write_json(stats, cfg.scored_dir / STATS_FILE, sort_keys=True)
        write_done_marker(cfg, parts)
        return stats


def part_done(config: FilterConfig, part: Path) -> bool:
    """A part is done when its scored output (and embeddings, if wanted) exist."""
    out = config.scored_dir / part.name
    return out.is_file() and (not config.embeddings or (out.parent / emb_name(out)).is_file())


def write_done_marker(config: FilterConfig, parts: list[Path]) -> None:
    """``WORK/scored/_SUCCESS`` once every crawl part has its scored part (all machines' shares)."""
    marker = config.scored_dir / DONE_FILE
    every = list_parts(config.crawl_dir)
    if all((config.scored_dir / p.name).is_file() for p in every):
        atomic_write_json({"parts": len(every), "options": digest(config, _SCORING_OPTIONS)}, marker)
    else:
        marker.unlink(missing_ok=True)


#: The options that change what the filter writes (not how fast).
_SCORING_OPTIONS = ("model", "pretrained", "threshold", "fill_threshold", "label_bank", "label_template", "generate")


def _scored_table(ok: pa.Table, scores: _PartScores, decisions: list[Decision]) -> pa.Table:
    """The crawl rows plus the filter's columns, in SCORED_SCHEMA."""
    extra = {
        col.CAPTION: [d.caption for d in decisions],
        col.CAPTION_SOURCE: [d.source.value if d.source else None for d in decisions],
        col.CLIP_SCORE: [d.score for d in decisions],
        col.ALT_SCORE: [None if math.isnan(s) else float(s) for s in scores.alt_scores],
        col.KEPT: [d.kept for d in decisions],
        col.FILTER_REASON: [d.reason.value if d.reason else None for d in decisions],
    }
    table = ok
    for name, values in extra.items():
        table = table.append_column(SCORED_SCHEMA.field(name), pa.array(values, type=SCORED_SCHEMA.field(name).type))
    return conform(table, SCORED_SCHEMA)


def collect_stats(config: FilterConfig) -> dict:
    """Counts over every scored part in ``WORK/scored`` (not just this run's)."""
    reasons: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    rows = kept = parts = 0
    for path in list_parts(config.scored_dir):
        t = pq.read_table(path, columns=[col.KEPT, col.FILTER_REASON, col.CAPTION_SOURCE])
        parts += 1
        rows += t.num_rows
        kept_col = t.column(col.KEPT).to_pylist()
        kept += sum(kept_col)
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
    }


def run_filter(config: FilterConfig, progress: ProgressHook | None = None) -> dict:
    """The filter stage's one entry point: load the model, score unfinished parts, return the stats."""
    config.check_inputs()
    return FilterStage(config).run(progress)
