"""Shard-writing throughput on synthetic 256 px JPEG samples.

    .venv/bin/python bench/shard_write_bench.py --n 20000

Reports samples/s for the writer alone (ShardWriter: tar + parquet + stats +
index) and for the whole ``shards`` stage (read parts, dedup, write) on the
same samples, all distinct so every one is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.records import SCORED_SCHEMA  # noqa: E402
from shards.config import ShardsConfig  # noqa: E402
from shards.stage import run_shards  # noqa: E402
from tests.synthetic import encode, image_record, make_image, write_scored_part  # noqa: E402
from shards.writer import ShardWriter  # noqa: E402

log = logging.getLogger("shard_write_bench")


def synthetic_records(n: int, size: int) -> list[dict]:
    return [image_record(encode(make_image(i, size=size)), f"https://bench.example.org/{i:08d}.jpg") for i in range(n)]


def bench_writer(records: list[dict], out: Path, per_shard: int) -> float:
    """Seconds to write ``records`` with ShardWriter alone."""
    meta_fields = [n for n in SCORED_SCHEMA.names if n != "image"]
    start = time.perf_counter()
    with ShardWriter(out, 0, per_shard) as writer:
        for r in records:
            writer.write({k: r.get(k) for k in meta_fields}, r["image"])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--samples-per-shard", type=int, default=10_000)
    parser.add_argument("--parts", type=int, default=4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    t0 = time.perf_counter()
    records = synthetic_records(args.n, args.size)
    generate = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        writer_s = bench_writer(records, tmp_path / "writer_out", args.samples_per_shard)
        per_part = -(-args.n // args.parts)
        for i in range(args.parts):
            write_scored_part(tmp_path / "work", i, records[i * per_part : (i + 1) * per_part])
        del records
        start = time.perf_counter()
        manifest = run_shards(ShardsConfig(work=tmp_path / "work", out=tmp_path / "out", samples_per_shard=args.samples_per_shard))
        stage_s = time.perf_counter() - start
        tar_mib = sum(p.stat().st_size for p in (tmp_path / "out").glob("*.tar")) / 2**20
    result = {
        "n": args.n,
        "image_px": args.size,
        "generate_s": round(generate, 1),
        "writer_s": round(writer_s, 2),
        "writer_samples_per_s": round(args.n / writer_s),
        "stage_s": round(stage_s, 2),
        "stage_samples_per_s": round(args.n / stage_s),
        "written": manifest["totals"]["samples"],
        "tar_mib": round(tar_mib, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    log.info(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
