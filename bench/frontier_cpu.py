"""Redis's own CPU per image URL for each of the frontier's operations, against a fresh redis-server.

N image URLs (30 a page, 20 links a page) go through admit, lease (64 at a time), commit (parts
of 2,000) and one host-gate token taken and handed back each, as a crawl worker would send
them; Redis's CPU (INFO cpu) is read between the phases. Run once without and once with the
append-only file.

    python bench/frontier_cpu.py [--n 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from frontier_memory import image_url, item, page_url

from crawler.frontier import Frontier


#: Requests asking for their host's tokens together (as many as wait for the host; 8 here).
BATCH = 8


def measure(n: int, aof: str) -> dict[str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp()
    proc = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", aof, "--dir", tmp], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    frontier = Frontier(f"redis://127.0.0.1:{port}/0", Path(tmp), 600, 0)
    frontier.connect("bench")

    def cpu() -> float:
        info = client.info("cpu")
        return info["used_cpu_user"] + info["used_cpu_sys"]

    out: dict[str, float] = {}

    async def run() -> None:
        t = cpu()
        for s in range(0, n, 30):
            images = [(image_url(i), item(image_url(i), page_url(s)), False) for i in range(s, s + 30)]
            await frontier.admit(page_url(s), 0, 9, 10**9, images, [(page_url(s * 7 + k), True) for k in range(20)])
        out["admit"], t = cpu() - t, cpu()
        leased = []
        while got := [x for x in await frontier.lease(64) if x.kind == "i"]:
            leased += got
        out["lease"], t = cpu() - t, cpu()
        for k in range(0, len(leased), 2000):
            frontier.commit_part(k, [x.url for x in leased[k:k + 2000]])
            frontier.part_done(k)
        out["commit"], t = cpu() - t, cpu()
        for i in range(0, n, BATCH):  # requests waiting for a host ask for their tokens together
            holders = [f"0|{frontier.token}|{k}" for k in range(i, min(n, i + BATCH))]
            await frontier.gate_acquire("host", holders, 128, 0, 60_000)
            for holder in holders:
                await frontier.gate_release("host", holder, 0, -1)
            await frontier.flush_releases()
        out["gate"] = cpu() - t
        await frontier.aclose()

    try:
        asyncio.run(run())
        frontier.leave()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6000)
    args = ap.parse_args()
    for aof in ("no", "yes"):
        out = measure(args.n, aof)
        parts = ", ".join(f"{k} {1e6 * v / args.n:.0f}" for k, v in out.items())
        print(f"appendonly {aof}: µs of Redis CPU per image URL: {parts}; total {1e6 * sum(out.values()) / args.n:.0f}")


if __name__ == "__main__":
    main()
