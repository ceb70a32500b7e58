"""CPU of one crawl worker (``--frontier``) against the embedded crawl, on loopback.

600 images on 40 pages over two ``LocalSite`` hosts (127.0.0.1, 127.0.0.2) and a fresh
redis-server; each run is ``capcrawl crawl`` from a source tree, embedded (``TREE:single``) or as
worker 0 of a frontier (``TREE``), alternated ``--reps`` times; prints wall seconds and the CPU of
the command and its children (the crawl process and its image worker).

    python bench/worker_cpu.py                      # this tree: embedded, then worker
    python bench/worker_cpu.py /old/tree:single /old/tree .   # compare trees
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capcrawl.localsite import LocalSite  # noqa: E402
from tests.conftest import jpeg  # noqa: E402
from tests.test_crawl import page  # noqa: E402
from tests.test_frontier import RedisServer  # noqa: E402


def children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="*", default=[f"{ROOT}:single", str(ROOT)])
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    redis = RedisServer(tmp / "redis").start()
    try:
        with LocalSite("127.0.0.1") as a, LocalSite("127.0.0.2") as b:
            for p in range(20):
                for site in (a, b):
                    site.add(f"/p/{p}.html", page("".join(f'<img src="/i/{p}-{i}.jpg" alt="x">' for i in range(15))))
                    for i in range(15):
                        site.add(f"/i/{p}-{i}.jpg", jpeg(pattern=(p * 15 + i) % 40 + 1), content_type="image/jpeg")
            seeds = tmp / "seeds.txt"
            seeds.write_text("".join(f"{s.url(f'/p/{p}.html')}\n" for p in range(20) for s in (a, b)))
            for _ in range(args.reps):
                for tree in args.trees:
                    path, _, mode = tree.partition(":")
                    work = tmp / "work"
                    shutil.rmtree(work, ignore_errors=True)
                    redis.client().flushall()
                    extra = [] if mode == "single" else ["--frontier", redis.url, "--worker-id", "0"]
                    t, c = time.monotonic(), children_cpu()
                    subprocess.run([sys.executable, "-m", "capcrawl", "-q", "crawl", str(seeds), "--work", str(work),
                                    "--allow-private-addresses", "--allow-domain", "127.0.0.2", "--concurrency", "64",
                                    "--per-host-concurrency", "64", "--no-autothrottle", "--image-workers", "1", *extra],
                                   cwd=tmp, env={**os.environ, "PYTHONPATH": str(Path(path).resolve())}, check=True,
                                   stdout=subprocess.DEVNULL)
                    print(f"{tree}: wall {time.monotonic() - t:.2f} s, CPU {children_cpu() - c:.2f} s", flush=True)
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
