"""Redis memory per URL of the crawl frontier, measured through the frontier's own scripts.

Starts a private redis-server (loopback, no persistence), admits N image URLs found on N/30
pages (each page also linking to 20 pages, all admitted: the page seen-set and page queue
hold N/30 * 20 pages... capped at N pages) with a realistic row (page URL and title, alt text,
a 300-character context, licence), then measures ``used_memory`` at three points:

1. everything admitted and waiting: image queue + pages queue + both seen-sets;
2. after every image was leased and committed in parts of 1,000 rows (what stays: the seen-sets
   and page state), i.e. the memory of a finished crawl's seen-sets;
3. the same URLs' seen-set as a plain set of full URL strings, for comparison.

    python bench/frontier_memory.py --n 100000 1000000 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from crawler.frontier import Frontier

CONTEXT = ("A quiet street at dusk, lamps coming on one by one along the canal, bicycles leaning on the railings "
           "and a café with its chairs still out. The photographer waited for the last light to catch the water. "
           "Shot on a rainy evening in late autumn, handheld, with a fifty millimetre lens and no flash at all.")


def image_url(i: int) -> str:
    return f"https://images.example-cdn.com/photos/2024/{i % 12 + 1:02d}/{i:010d}-{(i * 2654435761) % 16**8:08x}.jpg"


def page_url(i: int) -> str:
    return f"https://www.example.com/articles/{i:09d}/a-walk-along-the-canal-at-dusk.html"


def item(url: str, page: str) -> dict:
    return {"url": url, "page_url": page, "page_title": "A walk along the canal at dusk | Example Magazine",
            "alt": "Lamps reflected in a canal at dusk, bicycles on a railing", "title_attr": None, "figcaption": None,
            "context": CONTEXT, "license": "CC-BY-4.0", "license_url": "https://creativecommons.org/licenses/by/4.0/",
            "license_source": "page:a-rel"}


def used(client: redis.Redis) -> int:
    client.execute_command("MEMORY", "PURGE")
    return int(client.info("memory")["used_memory"])


async def fill(f: Frontier, n: int, per_page: int = 30, links: int = 20) -> int:
    pages = 0
    for start in range(0, n, per_page):
        page = page_url(pages)
        images = [(image_url(i), item(image_url(i), page), False) for i in range(start, min(n, start + per_page))]
        out = [(page_url(pages * links + k + 1), True) for k in range(links)]
        await f.admit(page, 0, 10**6, 10**9, images, out)
        pages += 1
    return pages


async def drain(f: Frontier, n: int, rows: int = 1000) -> None:
    index = 0
    while True:
        got = [x for x in await f.lease(rows) if x.kind == "i"]
        if not got:
            return
        f.commit_part(index, [x.url for x in got])
        f.part_done(index)
        index += 1


def measure(n: int, port: int) -> dict:
    client = redis.Redis(port=port)
    client.flushall()
    base = used(client)
    with tempfile.TemporaryDirectory() as tmp:
        f = Frontier(f"redis://127.0.0.1:{port}/0", Path(tmp), lease_timeout=600.0, worker_id=0)
        f.connect("bench")
        sizes: dict = {}

        async def run() -> None:
            t0 = time.monotonic()
            sizes["pages_admitted"] = await fill(f, n)
            sizes["admit_s"] = time.monotonic() - t0
            sizes["queued"] = used(client) - base
            for key in ("q:i", "q:p", "seen:i", "depth:p"):
                sizes[key] = client.memory_usage("capcrawl:" + key, samples=0) or 0
            await drain(f, n)
            await f.aclose()

        asyncio.run(run())
        f.leave()
        pages = client.hlen("capcrawl:depth:p")
        admit_s, queued = sizes["admit_s"], sizes["queued"]
        q_img, q_pages, seen_i, depth_p = sizes["q:i"], sizes["q:p"], sizes["seen:i"], sizes["depth:p"]
    # what a finished crawl keeps: the seen-sets (the page queue is still full: no page was fetched)
    client.delete("capcrawl:q:p")
    done = used(client) - base
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.sadd("plain:urls", image_url(i))
        if i % 10000 == 9999:
            pipe.execute()
    pipe.execute()
    plain = client.memory_usage("plain:urls", samples=0) or 0
    client.flushall()
    return {
        "image_urls": n, "pages": pages, "admit_s": round(admit_s, 1),
        "frontier_bytes": queued, "bytes_per_image_waiting": round(q_img / n, 1),
        "bytes_per_page_waiting": round(q_pages / pages, 1),
        "seen_image_bytes_per_url": round(seen_i / n, 1), "page_depth_bytes_per_page": round(depth_p / pages, 1),
        "after_crawl_bytes": done, "after_crawl_bytes_per_image_url": round(done / n, 1),
        "plain_url_set_bytes_per_url": round(plain / n, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--json")
    args = ap.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        version = redis.Redis(port=port).info("server")["redis_version"]
        results = []
        for n in args.n:
            r = {"redis": version, **measure(n, port)}
            print(json.dumps(r), flush=True)
            results.append(r)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
