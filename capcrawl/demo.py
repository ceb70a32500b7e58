"""`capcrawl demo`: a generated site on loopback, crawled, CLIP-filtered and sharded, offline.

The site is drawn with the same shapes the project's tiny open_clip model is trained on
(coloured circles, squares, ...), so the filter's decisions can be read at a glance: right
alt texts are kept, wrong ones replaced or dropped, missing ones filled from the page.
"""

from __future__ import annotations

import io
import json
import logging
import random
from pathlib import Path

from crawler.config import CrawlConfig

from .localsite import LocalSite

log = logging.getLogger(__name__)

CC_BY = "https://creativecommons.org/licenses/by/4.0/"


def _jpeg(img, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _page(title: str, body: str, head: str = "") -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>{head}</head>"
            f"<body><h1>{title}</h1>{body}<p><a href='/'>home</a></p></body></html>")


def build_demo_site(root: Path, seed: int = 7) -> dict[str, int]:
    """Write the demo site's files under ``root``; returns counts of what was planted."""
    from .tiny import COLORS, SHAPES, caption_for, render_shape

    rng = random.Random(seed)
    img_dir = root / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    (root / "private").mkdir(exist_ok=True)
    (root / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n")
    colors = list(COLORS)

    def draw(shape: str, color: str, name: str, size: int = 192) -> str:
        (img_dir / name).write_bytes(_jpeg(render_shape(shape, color, size=size, rng=rng.randrange(1 << 30))))
        return f"/img/{name}"

    pages: list[tuple[str, str]] = []
    planted = {"right_alt": 0, "wrong_alt": 0, "no_alt_context": 0, "figcaption": 0, "filename": 0, "duplicates": 0}
    for p, shape in enumerate(SHAPES):
        blocks = []
        for j, color in enumerate(colors[:4]):
            cap = caption_for(shape, color)
            kind = (p + j) % 5
            if kind == 0:
                src = draw(shape, color, f"p{p}-{j}.jpg")
                blocks.append(f"<p>Item {j}.</p><img src='{src}' alt='{cap}'>")
                planted["right_alt"] += 1
            elif kind == 1:
                wrong = caption_for(SHAPES[(p + 1) % len(SHAPES)], colors[(j + 2) % len(colors)])
                src = draw(shape, color, f"p{p}-{j}.jpg")
                blocks.append(f"<p>Our photographer called this {cap}. It is lovely.</p><img src='{src}' alt='{wrong}'>")
                planted["wrong_alt"] += 1
            elif kind == 2:
                src = draw(shape, color, f"p{p}-{j}.jpg")
                blocks.append(f"<p>Here we show {cap} on a plain background. Nothing else is in the picture.</p><img src='{src}'>")
                planted["no_alt_context"] += 1
            elif kind == 3:
                src = draw(shape, color, f"p{p}-{j}.jpg")
                blocks.append(f"<figure><img src='{src}' alt=''><figcaption>{cap}</figcaption></figure>")
                planted["figcaption"] += 1
            else:
                src = draw(shape, color, f"{color}-{shape}-{p}{j}.jpg")
                blocks.append(f"<div><img src='{src}' alt=''></div>")
                planted["filename"] += 1
        # a near duplicate (the same picture re-encoded smaller) and an exact duplicate under another URL
        first = img_dir / f"p{p}-0.jpg"
        if first.exists():
            from PIL import Image

            with Image.open(first) as im:
                (img_dir / f"p{p}-0-small.jpg").write_bytes(_jpeg(im.resize((172, 172)), quality=80))
            (img_dir / f"p{p}-0-copy.jpg").write_bytes(first.read_bytes())
            cap0 = caption_for(shape, colors[0])
            blocks.append(f"<img src='/img/p{p}-0-small.jpg' alt='{cap0}'><img src='/img/p{p}-0-copy.jpg' alt='{cap0}'>")
            planted["duplicates"] += 2
        pages.append((f"{shape}s.html", _page(f"All about {shape}s", "".join(blocks),
                                              head=f"<link rel='license' href='{CC_BY}'>")))
    # opted out, disallowed and broken things: counted, never samples
    (img_dir / "optout.jpg").write_bytes(_jpeg(render_shape("star", "yellow", size=160, rng=1)))
    pages.append(("noai.html", _page("Please do not train on me", "<img src='/img/optout.jpg' alt='a yellow star'>",
                                     head="<meta name='robots' content='noai, noimageai'>")))
    (root / "private" / "secret.jpg").write_bytes(_jpeg(render_shape("circle", "black", size=160, rng=2)))
    pages.append(("misc.html", _page("Odds and ends", "<img src='/private/secret.jpg' alt='a black circle'>"
                                     "<img src='/img/gone.jpg' alt='a missing picture'>")))
    for name, html in pages:
        (root / name).write_text(html, encoding="utf-8")
    links = "".join(f"<li><a href='/{name}'>{name}</a></li>" for name, _ in pages)
    (root / "index.html").write_text(_page("capcrawl demo site", f"<ul>{links}</ul>"), encoding="utf-8")
    return planted


class _DemoSite(LocalSite):
    """Serves ``root`` with ``/`` mapped to index.html."""

    def fallback(self, path: str):
        return super().fallback("/index.html" if path in ("/", "") else path)


def print_samples(out: Path, n: int = 6) -> None:
    import webdataset as wds

    tars = sorted(str(p) for p in out.glob("*.tar"))
    if not tars:
        print("no shards were written")
        return
    print(f"\n== {n} samples from {tars[0]} ==")
    ds = wds.WebDataset(tars, shardshuffle=False).decode("pil")
    for i, sample in enumerate(ds):
        if i >= n:
            break
        meta = sample["json"]
        img = next(v for k, v in sample.items() if k in ("jpg", "webp", "png"))
        print(f"  {sample['__key__']}  {img.size[0]}x{img.size[1]}  caption={sample['txt']!r:<28} "
              f"source={meta['caption_source']:<12} clip={meta['clip_score']:.2f} alt={meta['alt']!r} "
              f"license={meta['license']}")


def run_demo(directory: Path, quiet: bool = False, model_cache: Path | None = None) -> int:
    """Build, serve, crawl, filter and shard the demo site; print where everything is."""
    import shutil

    from filter.config import FilterConfig
    from shards.config import ShardsConfig

    from .pipeline import run_pipeline
    from .tiny import TINY_THRESHOLD, ensure_tiny_model

    directory = directory.resolve()
    site_dir, work, out = directory / "site", directory / "work", directory / "shards"
    for old in (site_dir, work, out):  # each demo run starts afresh (the trained model is kept)
        shutil.rmtree(old, ignore_errors=True)
    planted = build_demo_site(site_dir)
    print(f"demo site written to {site_dir} ({json.dumps(planted)})")
    print("training (or loading) the project's tiny open_clip model ...")
    model_json, checkpoint = ensure_tiny_model(model_cache or directory / "model")
    with _DemoSite("127.0.0.1", root=site_dir) as site:
        print(f"serving it on {site.base} (loopback only)")
        crawl_cfg = CrawlConfig(work=str(work), seeds=(site.url("/"),), allow_private_addresses=True,
                                max_pages=50, image_size=256, progress=not quiet)
        filter_cfg = FilterConfig(work=work, model=str(model_json), pretrained=str(checkpoint), device="cpu",
                                  batch_size=64, workers=0, threshold=TINY_THRESHOLD)
        result = run_pipeline(crawl_cfg, filter_cfg, ShardsConfig(work=work, out=out))
    if result.code:
        return result.code
    print_samples(out)
    print(f"\ncrawl records: {work / 'crawl'}\nscored records: {work / 'scored'}\nshards: {out}")
    print(f"dataset card: {out / 'README.md'}")
    print(f"\nOpen the report in a browser: {result.report.as_uri()}")
    return 0
