"""How the one-process ``shards`` stage scales: rows/s and peak RSS at 1M, 10M... rows.

    df -h /tmp   # 1M rows: ~0.3 GB of parts, ~4.5 GB of shards (16x16 JPEGs, 3 tar members a sample)
    flock /tmp/capcrawl-cpu.lock .venv/bin/python bench/shards_scale_bench.py --rows 1000000
    flock /tmp/capcrawl-cpu.lock .venv/bin/python bench/shards_scale_bench.py --rows 10000000 --skip-write

Builds synthetic scored parts once per size under ``--data`` (kept between runs):
tiny JPEGs (16x16, a pool of ``--image-pool`` images reused with distinct URLs), a
distinct random sha256 and pHash per row, except ``--exact-dups`` (fraction) rows
that copy another row's sha256 and pHash and ``--near-dups`` rows whose pHash is
another's with 1..4 bits flipped; captions, alt text, page titles and a ~200
character context like a crawl's. Then runs :func:`shards.stage.run_shards` on them
in a fresh process (OUT deleted first) and reports wall time, rows/s, the peak
RSS of that process, and for each step of ``run_shards`` its seconds and the RSS
after it, plus the sizes of the main structures (Arrow metadata of the candidates,
hash arrays, per-row Python lists), so it says where the memory goes.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import subprocess
import sys
import time
from functools import wraps
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.fileio import atomic_write_parquet  # noqa: E402
from common.layout import SCORED_DIR, part_name  # noqa: E402
from common.records import SCORED_SCHEMA, Status, conform  # noqa: E402
from tests.synthetic import FETCHED_AT, encode, make_image  # noqa: E402

log = logging.getLogger("shards_scale_bench")

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_WORDS = "image photo web crawl caption river mountain city street portrait museum garden bridge old new red blue".split()


def hex_strings(raw: np.ndarray) -> pa.Array:
    """Lower-case hex of each row of a (n, k) uint8 array, as an Arrow string array."""
    n, k = raw.shape
    chars = np.empty((n, 2 * k), dtype=np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    offsets = np.arange(0, n * 2 * k + 1, 2 * k, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def phash_hex(values: np.ndarray) -> pa.Array:
    """16-hex-character pHashes of uint64 values."""
    return hex_strings(values.astype(">u8").view(np.uint8).reshape(-1, 8))


def plant_duplicates(rows: int, exact: float, near: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global ``(sha bytes (n, 32), phash uint64, sha_source)``: exact copies share sha and pHash, near copies a close pHash."""
    sha = rng.integers(0, 256, size=(rows, 32), dtype=np.uint8)
    phash = rng.integers(0, np.iinfo(np.uint64).max, size=rows, dtype=np.uint64, endpoint=True)
    n_exact, n_near = int(rows * exact), int(rows * near)
    picked = rng.choice(rows, size=2 * (n_exact + n_near), replace=False)
    src, dst = picked[: n_exact + n_near], picked[n_exact + n_near :]
    sha[dst[:n_exact]] = sha[src[:n_exact]]
    phash[dst[:n_exact]] = phash[src[:n_exact]]
    flips = np.zeros(n_near, dtype=np.uint64)
    for k in range(4):  # up to 4 bits (positions may repeat: distance 1..4)
        flips |= np.uint64(1) << rng.integers(0, 64, size=n_near).astype(np.uint64)
    phash[dst[n_exact:]] = phash[src[n_exact:]] ^ flips
    return sha, phash, picked


def build_part(first: int, count: int, sha: np.ndarray, phash: np.ndarray, pool: list[bytes], contexts: list[str], rng: np.random.Generator) -> pa.Table:
    """One scored part of ``count`` rows starting at global row ``first``."""
    ids = range(first, first + count)
    words = [_WORDS[i % len(_WORDS)] + " " + _WORDS[(i // 7) % len(_WORDS)] for i in ids]
    cols: dict[str, Any] = {
        "url": pa.array([f"https://img{i % 997}.example.org/a/{i:010d}.jpg" for i in ids], pa.string()),
        "page_url": pa.array([f"https://www{i % 997}.example.org/p/{i // 20:09d}.html" for i in ids], pa.string()),
        "page_title": pa.array([f"Page {i // 20} about {w}" for i, w in zip(ids, words)], pa.string()),
        "alt": pa.array([f"a {w} number {i}" for i, w in zip(ids, words)], pa.string()),
        "context": pa.array([contexts[i % len(contexts)] for i in ids], pa.string()),
        "license": pa.array([("CC-BY-4.0" if i % 3 == 0 else None) for i in ids], pa.string()),
        "status": pa.array([Status.OK.value] * count, pa.string()),
        "image": pa.array([pool[i % len(pool)] for i in ids], pa.binary()),
        "image_format": pa.array(["jpg"] * count, pa.string()),
        "sha256": hex_strings(sha[first : first + count]),
        "phash": phash_hex(phash[first : first + count]),
        "fetched_at": pa.array([FETCHED_AT] * count, pa.timestamp("ms", tz="UTC")),
        "caption_source": pa.array(["alt"] * count, pa.string()),
        "clip_score": pa.array(rng.uniform(0.2, 0.4, count).astype(np.float32)),
        "alt_score": pa.array(rng.uniform(0.2, 0.4, count).astype(np.float32)),
        "kept": pa.array(np.ones(count, dtype=bool)),
    }
    for name in ("width", "height", "original_width", "original_height"):
        cols[name] = pa.array(np.full(count, 16, dtype=np.int32))
    cols["final_url"] = cols["url"]
    cols["caption"] = cols["alt"]
    return conform(pa.table(cols), SCORED_SCHEMA)


def make_work(work: Path, rows: int, rows_per_part: int, args: argparse.Namespace) -> None:
    """WORK/scored/part-*.parquet with ``rows`` rows, unless a complete copy is already there."""
    done = work / "complete.json"
    if done.is_file() and json.loads(done.read_text()) == {"rows": rows, "rows_per_part": rows_per_part, "seed": args.seed}:
        log.info("reusing %s", work)
        return
    shutil.rmtree(work, ignore_errors=True)
    rng = np.random.default_rng(args.seed)
    pool = [encode(make_image(seed, size=16)) for seed in range(args.image_pool)]
    contexts = [" ".join(rng.choice(_WORDS, size=30)) + f" {i}" for i in range(997)]
    sha, phash, _ = plant_duplicates(rows, args.exact_dups, args.near_dups, rng)
    start = time.perf_counter()
    for index, first in enumerate(range(0, rows, rows_per_part)):
        table = build_part(first, min(rows_per_part, rows - first), sha, phash, pool, contexts, rng)
        atomic_write_parquet(table, work / SCORED_DIR / part_name(index))
    done.write_text(json.dumps({"rows": rows, "rows_per_part": rows_per_part, "seed": args.seed}))
    log.info("built %d rows in %s (%.0f s)", rows, work, time.perf_counter() - start)


# --- the measured process ---------------------------------------------------------


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _instrument(module: Any, name: str, steps: list[dict], inspect: Callable[[Any], dict] | None = None) -> None:
    """Replace ``module.name`` by a wrapper that records seconds and RSS around each call."""
    inner = getattr(module, name)

    @wraps(inner)
    def wrapper(*a: Any, **kw: Any) -> Any:
        before, start = _rss_mib(), time.perf_counter()
        result = inner(*a, **kw)
        step = {"step": name, "seconds": round(time.perf_counter() - start, 2), "rss_before_mib": round(before), "rss_after_mib": round(_rss_mib()), "peak_so_far_mib": round(_peak_mib())}
        if inspect is not None:
            step.update(inspect(result))
        steps.append(step)
        return result

    setattr(module, name, wrapper)


def _candidates_info(cands: Any) -> dict:
    meta = cands.meta
    per_column = sorted(((c, meta.column(c).nbytes) for c in meta.column_names), key=lambda x: -x[1])
    return {
        "candidates": meta.num_rows,
        "arrow_meta_mib": round(meta.nbytes / 2**20),
        "largest_columns_mib": {c: round(b / 2**20, 1) for c, b in per_column[:6]},
    }


def _hashes_info(hashes: Any) -> dict:
    sha = hashes.sha256
    sha_bytes = sha.nbytes if isinstance(sha, pa.Array) else sys.getsizeof(sha) + sum(sys.getsizeof(s) for s in sha)
    return {
        "sha256_mib": round(sha_bytes / 2**20),
        "phash_arrays_mib": round((hashes.phash.nbytes + hashes.phash_valid.nbytes) / 2**20),
    }


class _NoWriter:
    """Stands in for the ShardWriter when ``--skip-write`` leaves pass 2 out."""

    written: list = []


def _skip_write(config: Any, cands: Any, verdicts: Any, *rest: Any) -> tuple[list[None], _NoWriter, int]:
    return [None] * cands.meta.num_rows, _NoWriter(), 0


def measure(work: Path, out: Path, skip_write: bool) -> dict:
    """Run ``run_shards`` once in this process, instrumented (pass 2 replaced by a no-op if ``skip_write``)."""
    import shards.dedup
    import shards.stage
    from shards.config import ShardsConfig

    steps: list[dict] = []
    if skip_write:
        shards.stage.write_samples = _skip_write
    _instrument(shards.stage, "load_candidates", steps, _candidates_info)
    _instrument(shards.stage, "load_existing", steps)
    _instrument(shards.stage, "_candidate_hashes", steps, _hashes_info)
    _instrument(shards.stage, "priority_rank", steps)
    _instrument(shards.stage, "decide", steps, lambda v: {"verdict_lists_mib": round(3 * sys.getsizeof(v.reason) / 2**20)})
    _instrument(shards.stage, "write_samples", steps)
    _instrument(shards.stage, "write_dedup_log", steps)
    for name in ("exact_duplicates", "near_duplicates"):
        _instrument(shards.dedup, name, steps)
    rss_start = _rss_mib()
    start = time.perf_counter()
    manifest = shards.stage.run_shards(ShardsConfig(work=work, out=out, samples_per_shard=10_000))
    seconds = time.perf_counter() - start
    stage = manifest["runs"][-1]["stages"]["shards"]
    return {
        "skip_write": skip_write,
        "rows": stage["input_rows"],
        "written": stage["written"],
        "dropped": stage["dropped"],
        "seconds": round(seconds, 1),
        "rows_per_s": round(stage["input_rows"] / seconds),
        "rss_at_start_mib": round(rss_start),
        "peak_rss_mib": round(_peak_mib()),
        "steps": steps,
    }


def run_fresh(work: Path, out: Path, skip_write: bool) -> dict:
    """:func:`measure` in a fresh Python process, OUT emptied first."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--worker", "--work", str(work), "--out", str(out)] + (["--skip-write"] if skip_write else [])
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["out_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--rows-per-part", type=int, default=100_000)
    parser.add_argument("--image-pool", type=int, default=1000)
    parser.add_argument("--exact-dups", type=float, default=0.01)
    parser.add_argument("--near-dups", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("/tmp/capcrawl-shards-scale"), help="parts are built here once per size")
    parser.add_argument("--keep-out", action="store_true", help="leave the last OUT on disk")
    parser.add_argument("--skip-write", action="store_true", help="leave out pass 2 (tar writing): dedup decisions, dedup log and manifest only")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.work, args.out, args.skip_write)))
        return []
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    for rows in args.rows:
        work = args.data / f"work-{rows}"
        make_work(work, rows, args.rows_per_part, args)
        out = args.data / f"out-{rows}"
        result = run_fresh(work, out, args.skip_write)
        if not args.keep_out:
            shutil.rmtree(out, ignore_errors=True)
        log.info(json.dumps(result))
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
