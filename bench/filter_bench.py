"""Filter-stage throughput: end to end (decode, preprocess, both towers, fill, write) vs. the model alone.

The "model alone" baseline runs the image tower on pre-made pixel tensors and the text
tower on pre-tokenised alts, already on the device, at the same batch size: the least
work any CLIP filter must do per image. The ratio end-to-end / model-alone should be
>= 0.9 where the model dominates (ViT-B-32 on a GPU, or on CPU); for the tiny model on
CPU decoding dominates and the ratio measures the cost of JPEG decoding instead.

    .venv/bin/python bench/filter_bench.py --n 384 --parts 3 --models ViT-B-32 tiny --batch-sizes 64
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from filter.config import FilterConfig  # noqa: E402
from filter.model import LoadedModel, load_model  # noqa: E402
from filter.stage import FilterStage  # noqa: E402
from capcrawl.tiny import COLORS, SHAPES, TINY_THRESHOLD, caption_for, ensure_tiny_model, render_shape  # noqa: E402


def make_crawl_parts(work: Path, n: int, parts: int = 1, size: int = 256) -> list[str]:
    """``n`` rendered shapes (JPEG) with unique alts, over ``parts`` crawl parts; returns the alts."""
    from common.fileio import atomic_write_parquet
    from common.layout import CRAWL_DIR, part_name
    from common.records import CRAWL_SCHEMA, Status, table_from_rows

    rng = np.random.default_rng(0)
    rows, alts = [], []
    for i in range(n):
        shape, color = SHAPES[i % len(SHAPES)], list(COLORS)[(i // len(SHAPES)) % len(COLORS)]
        buf = io.BytesIO()
        render_shape(shape, color, size, rng).save(buf, "JPEG", quality=90)
        alts.append(f"{caption_for(shape, color)} number {i}")
        rows.append({"url": f"https://bench.example/{i}.jpg", "status": Status.OK.value, "image": buf.getvalue(),
                     "alt": alts[-1]})
    per = -(-n // parts)
    for k in range(parts):
        chunk = rows[k * per : (k + 1) * per]
        if chunk:
            atomic_write_parquet(table_from_rows(chunk, CRAWL_SCHEMA), work / CRAWL_DIR / part_name(k), row_group_size=256)
    return alts


def _sync(model: LoadedModel) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def model_alone(model: LoadedModel, alts: list[str], batch_size: int, repeats: int = 1) -> float:
    """Images/s of image tower + text tower on pre-made device tensors."""
    size = getattr(model.model.visual, "image_size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    pixels = torch.randn(batch_size, 3, size, size, device=model.device)
    batches = [model.tokenizer(alts[i : i + batch_size]).to(model.device) for i in range(0, len(alts), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches
    model.encode_images(pixels), model.encode_tokens(batches[0])  # warm-up
    _sync(model)
    start = time.perf_counter()
    for _ in range(repeats):
        for tokens in batches:
            model.encode_images(pixels[: len(tokens)])
            model.encode_tokens(tokens)
    _sync(model)
    return repeats * sum(len(b) for b in batches) / (time.perf_counter() - start)


def end_to_end(model: LoadedModel, config: FilterConfig, n: int) -> float:
    """Images/s of FilterStage over the crawl part, outputs written."""
    stage = FilterStage(config, model=model)
    start = time.perf_counter()
    stage.run()
    _sync(model)
    return n / (time.perf_counter() - start)


def bench_one(name: str, model_arg: str, pretrained: str, threshold: float, args, work: Path, alts: list[str]) -> None:
    for precision in args.precisions:
        model = load_model(model_arg, pretrained, args.device, precision)
        for bs in args.batch_sizes:
            alone = model_alone(model, alts, bs)
            for decode in args.decoders:
                out = Path(tempfile.mkdtemp(dir=work))
                (out / "crawl").symlink_to(work / "crawl")
                config = FilterConfig(work=out, model=model_arg, pretrained=pretrained, device=args.device,
                                      precision=precision, batch_size=bs, workers=args.workers, threshold=threshold,
                                      decode=decode, embeddings=True)
                e2e = end_to_end(model, config, len(alts))
                print(f"{name:10s} {str(model.device):7s} {precision:5s} bs={bs:<5d} workers={args.workers:<3d} "
                      f"decode={decode:5s} model-alone {alone:9.1f} img/s   end-to-end {e2e:9.1f} img/s   "
                      f"ratio {e2e / alone:5.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256, help="images in the generated crawl parts")
    p.add_argument("--parts", type=int, default=1, help="crawl parts the images are spread over (the filter streams them through one loader)")
    p.add_argument("--models", nargs="+", default=["ViT-B-32", "tiny"], help="open_clip names (random weights) or 'tiny'")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    p.add_argument("--precisions", nargs="+", default=["auto"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--decoders", nargs="+", default=["auto"], help="--decode values to try: pil, torch, auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tiny-cache", default=str(Path(tempfile.gettempdir()) / "capcrawl-tiny"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        alts = make_crawl_parts(work, args.n, args.parts)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, n={args.n}, parts={args.parts}", flush=True)
        for name in args.models:
            if name == "tiny":
                config_json, ckpt = ensure_tiny_model(args.tiny_cache)
                bench_one(name, str(config_json), str(ckpt), TINY_THRESHOLD, args, work, alts)
            else:
                bench_one(name, name, "none", 0.28, args, work, alts)


if __name__ == "__main__":
    main()
