"""Count image samples in WebDataset tars and check them against the benchmark's URL list.

    python bench/count_samples.py OUT_DIR [--urls urls.csv]

Prints one JSON line: ``samples`` (image members in OUT_DIR/*.tar), ``urls`` (distinct source
URLs found in the samples' .json), ``dropped`` (samples capcrawl's `shards` dropped as exact or
near duplicates, from OUT_DIR/manifest.json; 0 for other tools) and, with --urls, ``missing``
(listed URLs with no sample, dropped duplicates included).
Standard library only: it runs under img2dataset's Python too.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tarfile
from pathlib import Path

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--urls", type=Path)
    a = ap.parse_args()
    samples, urls = 0, set()
    for tar in sorted(a.out.rglob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf:
                if m.name.endswith(IMAGE_EXT):
                    samples += 1
                elif m.name.endswith(".json"):
                    urls.add(json.load(tf.extractfile(m))["url"])
    manifest = a.out / "manifest.json"
    dropped = sum(json.loads(manifest.read_text())["totals"]["dropped"].values()) if manifest.exists() else 0
    rec = {"samples": samples, "urls": len(urls), "dropped": dropped}
    if a.urls:
        with open(a.urls, newline="") as fh:
            wanted = {row["url"] for row in csv.DictReader(fh)}
        rec["missing"] = len(wanted - urls)
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
