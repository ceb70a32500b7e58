"""`capcrawl report`: the static HTML report of a run, read as HTML and in a real (headless) Chromium."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from capcrawl.report import DROPPED_THUMBS, KEPT_THUMBS, REPORT_DIR, write_report
from common.fileio import atomic_write_json
from common.layout import CRAWL_DIR, SCORED_DIR, STATS_FILE
from shards.config import ShardsConfig
from shards.stage import run_shards

from .browser import CHROMIUM, blankness, load_page
from .conftest import run_cli
from .synthetic import encode, image_record, make_image, write_crawl_part, write_scored_part
from .test_pipeline import _run, demo_site  # noqa: F401 - demo_site is a fixture

KEPT, BELOW, NO_CANDIDATE, DUPLICATES = 50, 4, 2, 4
HOSTS = ("https://a.example", "https://b.example")
_THUMB = re.compile(r"<img class='thumb' data-kind='(\w+)' src='([^']+)'")


def _scored_rows() -> list[dict]:
    """50 kept (3 caption sources, 2 hosts), 4 below the threshold (one with a face), 2 with no caption, 4 exact copies."""
    rows = []
    sources = ("alt", "figcaption", "page_context")
    for i in range(KEPT):
        host = HOSTS[i % 2]
        rows.append(image_record(encode(make_image(i)), f"{host}/img/{i}.jpg", page_url=f"{host}/p{i % 5}.html",
                                 caption_source=sources[i % 3], clip_score=0.28 + 0.17 * i / KEPT,
                                 license="CC-BY-4.0" if i % 3 else "CC0-1.0"))
    for j in range(BELOW):
        rows.append(image_record(encode(make_image(1000 + j)), f"{HOSTS[0]}/img/low{j}.jpg", page_url=f"{HOSTS[0]}/p.html",
                                 caption=f"wrong words {j}", caption_source=sources[j % 3], clip_score=0.1 + 0.03 * j,
                                 kept=False, filter_reason="below_threshold",
                                 face_bboxes=[[0.2, 0.2, 0.5, 0.6]] if j == 0 else None))
    for j in range(NO_CANDIDATE):
        rows.append(image_record(encode(make_image(2000 + j)), f"{HOSTS[1]}/img/none{j}.jpg", caption=None,
                                 caption_source=None, clip_score=None, alt_score=None, kept=False, filter_reason="no_candidate"))
    for j in range(DUPLICATES):  # the same bytes under another URL
        rows.append(image_record(encode(make_image(j)), f"{HOSTS[1]}/copy/{j}.jpg", caption_source="alt", clip_score=0.3))
    return rows


def build_run(root: Path, no_filter: bool = False) -> tuple[Path, Path]:
    """WORK (crawl + scored parts and stats, as the stages write them) and OUT from the real shards stage."""
    work, out = root / "work", root / "out"
    rows = _scored_rows()
    refused = [{"url": f"{HOSTS[0]}/private/{k}.jpg", "status": s} for k, s in enumerate(("robots", "robots", "noai", "http_404"))]
    write_crawl_part(work, 0, rows + refused)
    images = Counter(r["status"] for r in rows + refused)
    atomic_write_json({"mode": "crawl", "images": dict(images), "pages": {"ok": 6, "noai": 1, "robots": 1},
                       "options": {"seeds": [HOSTS[0] + "/"], "seed_count": 1, "max_pages": 10, "max_depth": 2,
                                   "user_agent": "capcrawl-test", "ignore_robots": False}},
                      work / CRAWL_DIR / STATS_FILE)
    if not no_filter:
        write_scored_part(work, 0, rows)
        atomic_write_json({"rows": len(rows), "kept": KEPT + DUPLICATES, "model": "ViT-B-32", "pretrained": "weights.pt",
                           "threshold": 0.28, "fill_threshold": 0.28,
                           "filter_reason": {"below_threshold": BELOW, "no_candidate": NO_CANDIDATE}},
                          work / SCORED_DIR / STATS_FILE)
    run_shards(ShardsConfig(work=work, out=out, no_filter=no_filter))
    return work, out


def thumbs(html: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"kept": [], "dropped": []}
    for kind, src in _THUMB.findall(html):
        found[kind].append(src)
    return found


def check_static(report: Path) -> str:
    """The page opens from disk: no script, no stylesheet or image from anywhere but thumbs/ beside it."""
    html = report.read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "<link" not in html.lower()
    for src in re.findall(r"src='([^']*)'", html):
        assert src.startswith("thumbs/") and (report.parent / src).is_file(), src
    return html


@pytest.fixture
def synthetic_run(tmp_path) -> tuple[Path, Path]:
    return build_run(tmp_path)


def test_report_of_a_run(synthetic_run):
    work, out = synthetic_run
    report = write_report(out, work)
    assert report == out / REPORT_DIR / "index.html"
    html = check_static(report)
    got = thumbs(html)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["samples"] == KEPT > KEPT_THUMBS
    assert len(got["kept"]) == KEPT_THUMBS  # bounded
    for src in got["kept"] + got["dropped"]:
        with Image.open(report.parent / src) as im:
            assert im.format == "JPEG" and max(im.size) <= 128
    # every dropped row is shown (10 < DROPPED_THUMBS), the one with a face without its picture
    dropped_total = BELOW + NO_CANDIDATE + sum(manifest["totals"]["dropped"].values())
    assert manifest["totals"]["dropped"] == {"duplicate_sha256": DUPLICATES}
    assert len(got["dropped"]) == dropped_total - 1 and html.count("not shown: faces") == 1
    for reason in ("below_threshold", "no_candidate", "duplicate_sha256"):
        assert f"<span class='badge'>{reason}</span>" in html
    assert html.count("<svg") == 3  # one histogram per caption source with scores
    assert "threshold 0.28" in html and "alt: 21 kept, 2 dropped" in html  # the filter's kept include the copies
    # licences, respect, hosts
    assert re.search(r"<td>CC-BY-4.0</td><td class='n'>33</td>", html) and re.search(r"<td>CC0-1.0</td><td class='n'>17</td>", html)
    # the manifest's "respected" section, or without one the crawl's refusals
    assert re.search(r"<h3>images refused</h3>.*?<td>robots</td><td class='n'>2</td>", html) or \
        re.search(r"<td>robots / images</td><td class='n'>2</td>", html)
    assert "<td>a.example</td>" in html and "<td>b.example</td>" in html
    # a second report replaces the first and leaves nothing behind
    write_report(out, work)
    assert sorted(p.name for p in out.iterdir() if "report" in p.name) == [REPORT_DIR]


def test_report_without_work(synthetic_run, tmp_path):
    """WORK gone: counts from the manifest, kept samples from the shards, dropped ones listed without pictures."""
    work, out = synthetic_run
    shutil.move(work, tmp_path / "elsewhere")
    html = check_static(write_report(out))
    got = thumbs(html)
    assert len(got["kept"]) == KEPT_THUMBS and got["dropped"] == []
    assert "WORK not found" in html and html.count("not shown: WORK not available") == DUPLICATES
    assert "<td>below_threshold</td><td class='n'>4</td>" in html  # the filter's counts, from the manifest


def test_report_of_a_no_filter_run(tmp_path):
    work, out = build_run(tmp_path, no_filter=True)
    html = check_static(write_report(out, work))
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(thumbs(html)["kept"]) == min(KEPT_THUMBS, manifest["totals"]["samples"])
    assert "written with --no-filter" in html


def test_report_command(synthetic_run, tmp_path):
    work, out = synthetic_run
    proc = run_cli("report", str(out), check=True)  # WORK from the manifest
    assert proc.stdout.strip().splitlines()[-1] == f"report: {out / REPORT_DIR / 'index.html'}"
    assert "WORK: " + str(work) in (out / REPORT_DIR / "index.html").read_text()
    proc = run_cli("report", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # a takedown rewrites the report: the removed sample is no longer shown
    assert "<div class='meta'>000000000</div>" in (out / REPORT_DIR / "index.html").read_text()
    takedown = tmp_path / "takedown.txt"
    takedown.write_text(f"{HOSTS[0]}/img/0.jpg\n")
    proc = run_cli("remove", str(out), "--takedown", str(takedown), check=True)
    assert f"report: {out / REPORT_DIR / 'index.html'}" in proc.stdout
    html = (out / REPORT_DIR / "index.html").read_text()
    assert "<div class='meta'>000000000</div>" not in html and f"{HOSTS[0]}/img/0.jpg'" not in html
    # nor its copy under another URL, dropped earlier as its duplicate: a tile without its text,
    # links or the takedown entry that matched it
    assert html.count("not shown: taken down") == 1 and "duplicate of 000000000" not in html
    assert str(takedown) not in html and "blocklist:" not in html
    assert re.search(r"<td>blocklisted</td><td class='n'>1</td>", html)


# --- in a real browser ---------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
COUNTS = {
    "kept": "document.querySelectorAll('#kept img.thumb').length",
    "dropped": "document.querySelectorAll('#dropped img.thumb').length",
    "broken": "[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length",
    "svg": "document.querySelectorAll('svg').length",
    "width": "document.documentElement.scrollWidth",
}


@needs_chromium
def test_browser_harness_sees_errors_and_requests(tmp_path):
    """The checks below can fail: a page with a console error, an exception and a network image is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><html><body><p>x</p><img src='http://127.0.0.1:9/nothing.png'>"
                    "<script>console.error('planted error'); null.boom();</script></body></html>")
    result = load_page(page.as_uri(), COUNTS)
    assert any("planted error" in e for e in result.errors), result.errors
    assert any(e.startswith("exception") for e in result.errors), result.errors
    assert any(u.startswith("http://127.0.0.1:9/") for u in result.requests)
    assert result.values["broken"] == 1


@needs_chromium
def test_report_of_the_pipeline_in_chromium(tmp_path, demo_site, tiny):  # noqa: F811 - demo_site is a fixture
    """`capcrawl run` on the demo site writes the report and prints its path; Chromium shows it without errors."""
    site, _ = demo_site
    work, out = tmp_path / "work", tmp_path / "out"
    proc = _run(site, tiny, work, out)
    assert proc.returncode == 0, proc.stderr
    report = out / REPORT_DIR / "index.html"
    assert f"report: {report}" in proc.stdout
    check_static(report)
    card = (out / "README.md").read_text()  # the datasheet says how OUT was built
    assert f"seed URL(s): <{site.url('/')}>" in card and "robots.txt: obeyed" in card and "threshold 0.5" in card
    manifest = json.loads((out / "manifest.json").read_text())
    filt = manifest["stages"]["filter"]
    dropped_total = sum((filt.get("filter_reason") or {}).values()) + sum(manifest["totals"]["dropped"].values())
    assert manifest["totals"]["samples"] > 0 and dropped_total > 0

    result = load_page(report.as_uri(), COUNTS)
    assert result.errors == [], result.errors
    assert result.requests and all(u.startswith("file://") for u in result.requests), result.requests
    assert result.values["kept"] == min(KEPT_THUMBS, manifest["totals"]["samples"])
    assert result.values["dropped"] == min(DROPPED_THUMBS, dropped_total)
    assert result.values["broken"] == 0 and result.values["svg"] >= 1
    assert result.values["width"] <= 1366, "the page scrolls sideways on a laptop screen"
    (tmp_path / "report.png").write_bytes(result.screenshot)
    with Image.open(io.BytesIO(result.screenshot)) as im:
        assert im.size[0] == 1366 and im.size[1] > 800
    spread, colours = blankness(result.screenshot)
    assert spread > 20 and colours > 1000, (spread, colours)


def test_respected_counts_without_a_respected_section():
    """An OUT whose manifest predates the "respected" section: the crawl's refusals stand in for it."""
    from shards.card import respected_counts

    manifest = {"stages": {"crawl": {"images": {"ok": 5, "robots": 2, "tdmrep": 1}, "pages": {"ok": 3, "noai": 1}}}}
    assert respected_counts(manifest) == {"robots": {"images": 2, "pages": 0}, "noai": {"images": 0, "pages": 1},
                                          "tdmrep": {"images": 1, "pages": 0}}
    assert respected_counts({**manifest, "respected": {"images_refused": {"robots": 2}}}) == {"images_refused": {"robots": 2}}
