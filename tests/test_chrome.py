"""Site chrome and empty alts: a real crawl of a templated site, then the filter and shards --no-filter."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from common.chrome import MAX_SHARE, MIN_HOST_PAGES, MIN_PAGES, chrome_reason

from .conftest import crawl_rows, jpeg, run_cli
from .synthetic import encode, make_image


def test_chrome_rule():
    assert chrome_reason("nav", None, None) == "nav"
    assert chrome_reason(None, 12, 40) == "repeated:12/40"
    assert chrome_reason(None, 9, 40) is None  # under a quarter of the pages
    assert chrome_reason(None, 3, 4) is None  # too few pages to tell
    assert chrome_reason(None, 1, 1000) is None
    assert MIN_PAGES <= MAX_SHARE * 40 and MIN_HOST_PAGES <= 40


PAGES = 10


@pytest.fixture
def templated_site(site):
    """Ten article pages sharing a template: a logo in <nav>, a banner in every page's body, and
    each article's own photo (one with a camera file name for an alt, one with a figcaption)."""
    nav = '<nav><a href="/"><img src="/logo.jpg" alt="Home"></a></nav>'
    links = "".join(f'<a href="/a{i}.html">article {i}</a>' for i in range(PAGES))
    site.add("/", f"<html><head><title>Blog</title></head><body>{nav}<p>Welcome.</p>{links}</body></html>")
    for i in range(PAGES):
        alt = "IMG_2041.jpg" if i == 0 else f"photo number {i} of the harbour"
        body = (f'<p>Article {i} is about boats.</p><figure><img src="/photo{i}.jpg" alt="{alt}">'
                f'<figcaption>Boats in the harbour, picture {i}</figcaption></figure>')
        site.add(f"/a{i}.html", f"<html><head><title>Article {i}</title></head><body>{nav}"
                                f'<div class="content"><img src="/banner.jpg" alt="summer sale">{body}</div></body></html>')
        site.add(f"/photo{i}.jpg", encode(make_image(300 + i, size=160)), content_type="image/jpeg")
    site.add("/logo.jpg", jpeg("navy", size=(96, 96), pattern=1), content_type="image/jpeg")
    site.add("/banner.jpg", jpeg("orange", size=(300, 100), pattern=2), content_type="image/jpeg")
    return site


def test_chrome_and_boilerplate_alts_are_no_samples(tmp_path, templated_site, tiny):
    site, work = templated_site, tmp_path / "work"
    run_cli("crawl", site.url("/"), "--work", str(work), "--allow-private-addresses", check=True)
    rows = {r["url"].removeprefix(site.base): r for r in crawl_rows(work)}
    assert rows["/logo.jpg"]["chrome"] == "nav" and rows["/banner.jpg"]["chrome"] is None
    counts = pq.read_table(work / "crawl" / "image_pages.parquet").to_pylist()
    banner = next(c for c in counts if c["url"].endswith("/banner.jpg"))
    assert (banner["page_count"], banner["host_pages"]) == (PAGES, PAGES + 1)
    assert site.requested("/banner.jpg") == 1

    # without the model: the crawl's own captions
    out = tmp_path / "out"
    run_cli("shards", "--work", str(work), "--out", str(out), "--no-filter", check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    dropped = manifest["totals"]["dropped"]
    assert dropped == {"site_chrome": 2, "no_caption": 1}, dropped  # logo, banner; IMG_2041.jpg names nothing
    samples = pq.read_table(out / "00000.parquet").to_pylist()
    assert sorted(s["url"].removeprefix(site.base) for s in samples) == [f"/photo{i}.jpg" for i in range(1, PAGES)]

    # with the filter (thresholds of -1: whatever the model scores, only the rules decide)
    model, ckpt = tiny
    run_cli("filter", "--work", str(work), "--model", str(model), "--pretrained", str(ckpt), "--device", "cpu",
            "--workers", "0", "--threshold", "-1", check=True)
    scored = {r["url"].removeprefix(site.base): r for p in sorted((work / "scored").glob("part-*.parquet"))
              for r in pq.read_table(p).to_pylist()}
    assert (scored["/logo.jpg"]["kept"], scored["/logo.jpg"]["filter_reason"]) == (False, "site_chrome")
    assert (scored["/banner.jpg"]["filter_reason"], scored["/banner.jpg"]["chrome"]) == ("site_chrome", f"repeated:{PAGES}/{PAGES + 1}")
    assert (scored["/banner.jpg"]["page_count"], scored["/banner.jpg"]["host_pages"]) == (PAGES, PAGES + 1)
    first = scored["/photo0.jpg"]
    assert first["alt"] == "IMG_2041.jpg" and first["alt_ignored"] == "file name" and first["alt_score"] is None
    assert first["kept"] and first["caption_source"] == "figcaption", "the figcaption, not the camera's file name"
    assert all(scored[f"/photo{i}.jpg"]["kept"] for i in range(PAGES))
    stats = json.loads((work / "scored" / "stats.json").read_text())
    assert stats["filter_reason"] == {"site_chrome": 2}
