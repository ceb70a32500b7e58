"""The crawl stage against real HTTP servers on loopback (nothing mocked on the crawl path)."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from common.layout import list_parts
from common.records import CRAWL_SCHEMA, Status

from .conftest import ROOT, by_url, crawl_rows, jpeg, png, run_cli


def bomb_png(width: int = 6000, height: int = 6000) -> bytes:
    """A small file that decodes to width*height pixels (a decompression bomb)."""
    raw = zlib.compress(b"\x00" * (width + 1) * height, 9)  # filter byte + one grey byte a pixel

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def page(body: str, head: str = "", title: str = "Test page") -> str:
    return f"<!doctype html><html><head><title>{title}</title>{head}</head><body>{body}</body></html>"


IMG = "image/jpeg"


def build_site(a, b) -> dict[str, str]:
    """Every misbehaviour the crawler must survive; returns names -> absolute image URLs."""
    a.add("/robots.txt", "User-agent: *\nDisallow: /private/\n", content_type="text/plain")
    links = ["/lic.html", "/lazy.html", "/base/index.html", "/latin1.html", "/noai.html", "/bad.html",
             "/trap/0.html", "/private/page.html", b.url("/off.html"), "/away.html"]
    a.add("/", page("<p>Welcome to the test site, which has images.</p>"
                    + "".join(f'<a href="{h}">{h}</a> ' for h in links)
                    + '<a href="mailto:x@example.com">mail</a><a href="#top">top</a>'))
    # licences
    a.add("/lic.html", page(
        '<p>A page under a page-wide licence, with some text.</p><img src="/img/pagelic.jpg" alt="page licence">'
        '<figure><img src="/img/figlic.jpg" alt="figure licence"><figcaption>A red square, photographed</figcaption>'
        '<a rel="license" href="https://creativecommons.org/licenses/by-sa/4.0/">CC BY-SA</a></figure>'
        '<img src="/img/jsonld.jpg" alt="json-ld">'
        '<div itemscope itemtype="https://schema.org/ImageObject"><img itemprop="contentUrl" src="/img/micro.jpg" alt="microdata">'
        '<link itemprop="license" href="https://creativecommons.org/publicdomain/mark/1.0/"></div>'
        '<a rel="license" href="https://creativecommons.org/licenses/by/4.0/">This page is CC BY 4.0</a>',
        head='<script type="application/ld+json">{"@context":"https://schema.org","@type":"ImageObject",'
             '"contentUrl":"/img/jsonld.jpg","license":"https://creativecommons.org/publicdomain/zero/1.0/"}</script>'))
    # srcset, lazy, picture, og:image, data: URIs
    a.add("/lazy.html", page(
        '<img src="/img/small.jpg" srcset="/img/small.jpg 320w, /img/large.jpg 1024w" alt="srcset">'
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/img/lazy.jpg" alt="lazy">'
        '<picture><source srcset="/img/pic-s.webp 1x, /img/pic-l.webp 2x" type="image/webp"><img src="/img/pic.jpg" alt="picture"></picture>'
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline">',
        head='<meta property="og:image" content="/img/og.jpg">'))
    a.add("/base/index.html", page('<img src="rel.jpg" alt="based"><img src="../up.jpg" alt="up">',
                                   head='<base href="/assets/deep/">'))
    latin = page('<p>Une phrase en fran\u00e7ais.</p><img src="/img/cafe.jpg" alt="caf\u00e9 cr\u00e8me">',
                 head='<meta charset="iso-8859-1">', title="Caf\u00e9")
    a.add("/latin1.html", latin.encode("latin-1"), content_type="text/html")
    a.add("/noai.html", page('<img src="/img/optout.jpg" alt="opted out">', head='<meta name="robots" content="index, noimageai">'))
    a.add("/bad.html", page("".join(f'<img src="{p}" alt="{n}">' for n, p in [
        ("truncated", "/img/truncated.jpg"), ("html", "/img/html.jpg"), ("pixel", "/img/pixel.png"),
        ("bomb", "/img/bomb.png"), ("big", "/img/big.jpg"), ("endless", "/img/endless.jpg"),
        ("stall", "/img/stall.jpg"), ("redirect", "/img/r1.jpg"), ("missing", "/img/missing.jpg"),
        ("flaky", "/img/flaky.jpg"), ("slow", "/img/slow.jpg"), ("ratelimited", "/img/ratelimited.jpg"),
        ("xrobots", "/img/xrobots.jpg"), ("private", "/private/img.jpg"), ("cdn", b.url("/cdn.jpg")),
        ("dup", "/img/og.jpg"),
    ])))
    for i in range(50):  # an endless chain of pages
        a.add(f"/trap/{i}.html", page(f'<a href="/trap/{i + 1}.html">next</a><img src="/img/trap{i}.jpg" alt="trap {i}">'))
        a.add(f"/img/trap{i}.jpg", jpeg("gray", pattern=i + 1), content_type=IMG)
    a.add("/private/page.html", page("secret"))
    a.add("/private/img.jpg", jpeg("black"), content_type=IMG)
    b.add("/off.html", page('<img src="/offimg.jpg" alt="off">'))
    a.add("/away.html", redirect_to=b.url("/redirected.html"))
    b.add("/redirected.html", page('<img src="/redirimg.jpg" alt="redirected away">'))
    b.add("/cdn.jpg", jpeg("purple"), content_type=IMG)

    good = ["pagelic", "figlic", "jsonld", "micro", "large", "lazy", "pic-l.webp", "og", "cafe", "optout", "final",
            "flaky", "slow", "ratelimited", "xrobots"]
    for n, name in enumerate(good):
        path = f"/img/{name}" if name.endswith(".webp") else f"/img/{name}.jpg"
        a.add(path, jpeg((n * 15 % 255, 80, 200 - n * 10), pattern=n + 2), content_type=IMG)
    a.add("/assets/deep/rel.jpg", jpeg("orange"), content_type=IMG)
    a.add("/assets/up.jpg", jpeg("olive"), content_type=IMG)
    whole = jpeg("red", size=(400, 300), pattern=6)
    a.add("/img/truncated.jpg", whole[: len(whole) // 2], content_type=IMG)
    a.add("/img/html.jpg", page("<p>I am not an image</p>"), content_type=IMG)
    a.add("/img/pixel.png", png(size=(1, 1)), content_type="image/png")
    a.add("/img/bomb.png", bomb_png(), content_type="image/png")
    a.add("/img/big.jpg", os.urandom(3 * 1024 * 1024), content_type=IMG)
    a.add("/img/endless.jpg", content_type=IMG, endless=True)
    a.add("/img/stall.jpg", jpeg("blue"), content_type=IMG, delay=8)
    a.add("/img/r1.jpg", redirect_to="/img/r2.jpg")
    a.add("/img/r2.jpg", redirect_to="/img/final.jpg")
    a.routes["/img/flaky.jpg"].fail_first = 1
    a.routes["/img/slow.jpg"].delay = 0.5
    a.routes["/img/ratelimited.jpg"].fail_first = 1
    a.routes["/img/ratelimited.jpg"].fail_status = 429
    a.routes["/img/ratelimited.jpg"].fail_headers = {"Retry-After": "1"}
    a.routes["/img/xrobots.jpg"].headers = {"X-Robots-Tag": "noai"}
    return {}


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    from capcrawl.localsite import LocalSite

    work = tmp_path_factory.mktemp("crawl")
    with LocalSite("127.0.0.1") as a, LocalSite("127.0.0.2") as b:
        build_site(a, b)
        proc = run_cli("crawl", a.url("/"), "--work", str(work), "--allow-private-addresses",
                       "--max-depth", "3", "--max-pages", "40", "--timeout", "2", "--retries", "1",
                       "--max-image-bytes", "1MB", "--max-pixels", "10000000", "--min-image-size", "10",
                       "--concurrency", "16", timeout=240)
        assert proc.returncode == 0, proc.stderr
        rows = by_url(crawl_rows(work))
        yield {"a": a, "b": b, "rows": rows, "work": work, "proc": proc,
               "stats": json.loads((work / "crawl" / "stats.json").read_text())}


def row(crawled, path: str) -> dict:
    url = crawled["a"].url(path)
    assert url in crawled["rows"], f"{url} not recorded; have {sorted(crawled['rows'])}"
    return crawled["rows"][url]


def test_rows_follow_the_schema(crawled):
    parts = list_parts(crawled["work"] / "crawl")
    import pyarrow.parquet as pq

    assert parts and all(pq.read_schema(p).names == CRAWL_SCHEMA.names for p in parts)
    assert not list((crawled["work"] / "crawl").glob(".*tmp")), "temporary files left behind"


def test_ok_image_is_resized_hashed_and_described(crawled):
    r = row(crawled, "/img/figlic.jpg")
    assert r["status"] == "ok" and r["error"] is None
    assert r["page_url"] == crawled["a"].url("/lic.html") and r["page_title"] == "Test page"
    assert r["figcaption"] == "A red square, photographed" and r["alt"] == "figure licence"
    assert (r["original_width"], r["original_height"]) == (120, 90)
    assert min(r["width"], r["height"]) == 256 and r["image_format"] == "jpg"
    assert Image.open(io.BytesIO(r["image"])).size == (r["width"], r["height"])
    assert len(r["sha256"]) == 64 and len(r["phash"]) == 16
    assert r["fetched_at"] is not None


def test_licences_page_figure_jsonld_microdata(crawled):
    assert (row(crawled, "/img/pagelic.jpg")["license"], row(crawled, "/img/pagelic.jpg")["license_source"]) == ("CC-BY-4.0", "page:a-rel")
    assert (row(crawled, "/img/figlic.jpg")["license"], row(crawled, "/img/figlic.jpg")["license_source"]) == ("CC-BY-SA-4.0", "figure:a-rel")
    assert (row(crawled, "/img/jsonld.jpg")["license"], row(crawled, "/img/jsonld.jpg")["license_source"]) == ("CC0-1.0", "json-ld")
    assert (row(crawled, "/img/micro.jpg")["license"], row(crawled, "/img/micro.jpg")["license_source"]) == ("CC-PDM-1.0", "microdata")
    assert row(crawled, "/img/figlic.jpg")["license_url"] == "https://creativecommons.org/licenses/by-sa/4.0/"


def test_srcset_lazy_picture_og_and_no_data_uris(crawled):
    assert row(crawled, "/img/large.jpg")["status"] == "ok"
    assert crawled["a"].requested("/img/small.jpg") == 0, "the smaller srcset candidate was fetched"
    assert row(crawled, "/img/lazy.jpg")["alt"] == "lazy"
    assert row(crawled, "/img/pic-l.webp")["alt"] == "picture"
    assert row(crawled, "/img/og.jpg")["status"] == "ok"
    assert not [u for u in crawled["rows"] if u.startswith("data:")]
    assert crawled["stats"]["skipped"]["data_uri"] >= 1


def test_base_href_and_relative_urls(crawled):
    assert row(crawled, "/assets/deep/rel.jpg")["status"] == "ok"
    assert row(crawled, "/assets/up.jpg")["status"] == "ok"


def test_latin1_page_decodes(crawled):
    r = row(crawled, "/img/cafe.jpg")
    assert r["alt"] == "caf\u00e9 cr\u00e8me" and r["page_title"] == "Caf\u00e9"


def test_alt_absent_and_empty_kept_apart():
    from crawler.extract import extract_page

    info = extract_page('<img src="a.jpg"><img src="b.jpg" alt=""><img src="c.jpg" alt=" x ">', "http://h/")
    assert [i.alt for i in info.images] == [None, "", "x"]


def test_noai_meta_and_header(crawled):
    r = row(crawled, "/img/optout.jpg")
    assert r["status"] == "noai" and r["image"] is None
    assert crawled["a"].requested("/img/optout.jpg") == 0, "an opted-out image was downloaded"
    assert row(crawled, "/img/xrobots.jpg")["status"] == "noai"
    assert row(crawled, "/img/xrobots.jpg")["image"] is None
    assert crawled["stats"]["pages"]["noai"] == 1


def test_robots_disallowed_never_requested(crawled):
    a = crawled["a"]
    assert row(crawled, "/private/img.jpg")["status"] == "robots"
    assert a.requested("/private/img.jpg") == 0 and a.requested("/private/page.html") == 0
    assert a.requested("/robots.txt") == 1
    assert crawled["stats"]["pages"]["robots"] == 1


@pytest.mark.parametrize("path,status", [
    ("/img/truncated.jpg", Status.CORRUPT), ("/img/html.jpg", Status.NOT_AN_IMAGE),
    ("/img/pixel.png", Status.TOO_SMALL), ("/img/bomb.png", Status.DECOMPRESSION_BOMB),
    ("/img/big.jpg", Status.TOO_LARGE), ("/img/endless.jpg", Status.TOO_LARGE),
    ("/img/stall.jpg", Status.TIMEOUT), ("/img/missing.jpg", "http_404"),
])
def test_bad_images_get_named_statuses(crawled, path, status):
    r = row(crawled, path)
    assert r["status"] == str(status), r["error"]
    assert r["image"] is None and r["error"]


def test_retries_redirects_and_slow_responses(crawled):
    a = crawled["a"]
    r = row(crawled, "/img/r1.jpg")
    assert r["status"] == "ok" and r["final_url"] == a.url("/img/final.jpg")
    assert row(crawled, "/img/flaky.jpg")["status"] == "ok" and a.requested("/img/flaky.jpg") == 2
    assert row(crawled, "/img/slow.jpg")["status"] == "ok"
    assert row(crawled, "/img/ratelimited.jpg")["status"] == "ok" and a.requested("/img/ratelimited.jpg") == 2
    log = [e for e in a.log if e.path == "/img/ratelimited.jpg"]
    assert log[1].at - log[0].at >= 0.9, "Retry-After was not honoured"


def test_same_image_on_two_pages_fetched_once(crawled):
    assert crawled["a"].requested("/img/og.jpg") == 1


def test_link_trap_cut_by_depth(crawled):
    a = crawled["a"]
    assert a.requested("/trap/2.html") == 1 and a.requested("/trap/3.html") == 0
    assert crawled["stats"]["pages"]["max_depth"] >= 1


def test_offsite_pages_not_crawled_but_cdn_images_are(crawled):
    b = crawled["b"]
    assert b.requested("/off.html") == 0
    assert crawled["stats"]["pages"]["offsite"] >= 2
    assert b.requested("/redirimg.jpg") == 0, "a page redirected off-site was crawled"
    assert crawled["rows"][b.url("/cdn.jpg")]["status"] == "ok"


def test_honest_user_agent(crawled):
    agents = {e.user_agent for e in crawled["a"].log}
    assert agents and all(ua.startswith("capcrawl/") for ua in agents)


def test_every_discovered_image_is_a_row(crawled):
    stats = crawled["stats"]
    assert stats["images_total"] == len(crawled["rows"]) and stats["pending"] == 0
    assert sum(stats["images"].values()) == len(crawled["rows"])
    assert "images" in crawled["proc"].stdout and "decompression_bomb" in crawled["proc"].stdout


def test_max_pages_limit(tmp_path, site):
    for i in range(30):
        site.add(f"/trap/{i}.html", page(f'<a href="/trap/{i + 1}.html">n</a>'))
    run_cli("crawl", site.url("/trap/0.html"), "--work", str(tmp_path), "--allow-private-addresses",
            "--max-pages", "5", "--max-depth", "100", check=True)
    assert sum(site.requested(f"/trap/{i}.html") for i in range(30)) == 5
    stats = json.loads((tmp_path / "crawl" / "stats.json").read_text())
    assert stats["pages"] == {"max_pages": 1, "ok": 5}


def test_max_page_bytes_cuts_a_large_page(tmp_path, site):
    """--max-page-bytes caps HTML pages (not images, which have --max-image-bytes): the large
    page is too_large and its images are never seen; the small one is read."""
    site.add("/", page('<a href="/big.html">b</a><a href="/small.html">s</a>'))
    site.add("/big.html", page('<img src="/big.jpg" alt="in a big page">' + "<p>filler text</p>" * 2000))
    site.add("/small.html", page('<img src="/small.jpg" alt="in a small page">'))
    site.add("/small.jpg", jpeg(size=(200, 150)), content_type=IMG)
    site.add("/big.jpg", jpeg(size=(200, 150)), content_type=IMG)
    run_cli("crawl", site.url("/"), "--work", str(tmp_path), "--allow-private-addresses", "--max-page-bytes", "16KB",
            "--min-image-size", "10", check=True)
    stats = json.loads((tmp_path / "crawl" / "stats.json").read_text())
    assert stats["pages"] == {"ok": 2, "too_large": 1}
    assert site.requested("/small.jpg") == 1 and site.requested("/big.jpg") == 0


def test_private_addresses_refused_by_default(tmp_path, site):
    site.add("/", page('<img src="/a.jpg" alt="a">'))
    proc = run_cli("crawl", site.url("/"), "--work", str(tmp_path), check=True)
    assert site.log == [], "a private address was contacted"
    stats = json.loads((tmp_path / "crawl" / "stats.json").read_text())
    assert stats["pages"] == {"private_address": 1}
    assert "no image was fetched" in proc.stdout


def test_private_addresses_are_classified():
    from crawler.middlewares import address_allowed, is_public_ip, parse_networks

    assert not is_public_ip("127.0.0.1") and not is_public_ip("10.1.2.3") and not is_public_ip("169.254.1.1")
    assert not is_public_ip("::1") and not is_public_ip("::ffff:192.168.0.1") and is_public_ip("93.184.216.34")
    allowed = parse_networks(["10.1.0.0/16", "127.0.0.1"])
    assert address_allowed("10.1.2.3", allowed) and address_allowed("127.0.0.1", allowed)
    assert not address_allowed("10.2.0.1", allowed) and not address_allowed("127.0.0.2", allowed)


def test_private_redirect_target_refused(tmp_path, site, other_site):
    """A start that is allowed (--allow-address) and redirects to a private address that is not
    is refused after the redirect: the redirect target is never contacted."""
    site.add("/", page('<img src="/jump.jpg" alt="jump"><img src="/fine.jpg" alt="fine">'))
    site.add("/fine.jpg", jpeg(), content_type=IMG)
    site.add("/jump.jpg", redirect_to=other_site.url("/secret.jpg"))
    other_site.add("/secret.jpg", jpeg("black"), content_type=IMG)
    run_cli("crawl", site.url("/"), "--work", str(tmp_path), "--allow-address", "127.0.0.1", check=True)
    rows = by_url(crawl_rows(tmp_path))
    assert rows[site.url("/fine.jpg")]["status"] == "ok"
    jumped = rows[site.url("/jump.jpg")]
    assert jumped["status"] == "private_address" and "127.0.0.2" in jumped["error"]
    # the row names the refused target, and says the listed URL itself was requested
    assert jumped["final_url"] == other_site.url("/secret.jpg")
    assert jumped["error"].startswith(f"redirected to {other_site.url('/secret.jpg')}: ")
    assert site.requested("/jump.jpg") == 1 and other_site.log == [], "the private redirect target was contacted"
    stats = json.loads((tmp_path / "crawl" / "stats.json").read_text())
    assert stats["events"]["private_address_refused"] == 1, "Scrapy-side counters reach stats.json"


def _resume_site(site, pages: int = 40, per_page: int = 5) -> set[str]:
    expected = set()
    for p in range(pages):
        imgs = "".join(f'<img src="/img/{p}-{i}.jpg" alt="image {p} {i}">' for i in range(per_page))
        nxt = f'<a href="/p/{p + 1}.html">next</a>' if p + 1 < pages else ""
        site.add(f"/p/{p}.html", page(imgs + nxt + '<img src="/img/0-0.jpg" alt="on every page">'))
        for i in range(per_page):
            site.add(f"/img/{p}-{i}.jpg", jpeg((p * 6 % 255, i * 50, 90), pattern=i + 1), content_type=IMG, delay=0.03)
            expected.add(site.url(f"/img/{p}-{i}.jpg"))
    return expected


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_kill_9_leaves_no_worker_behind(tmp_path, site):
    """A crawl process killed with -9 can tell nobody: its image workers (children of the fork
    server, not of it) notice that it is gone and exit, and the fork server follows them."""
    slow = site.add("/slow.jpg", jpeg(pattern=1), content_type=IMG, delay=60.0)
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 2), content_type=IMG) for i in range(4)] + [slow]
    (tmp_path / "list.txt").write_text("\n".join(urls) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "capcrawl", "-q", "download", str(tmp_path / "list.txt"), "--work",
                             str(tmp_path / "w"), "--allow-private-addresses", "--image-workers", "2"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not site.requested("/slow.jpg") and time.monotonic() < deadline:
            time.sleep(0.05)
        helpers = _descendants(proc.pid)  # the fork server and the image workers it forked
        assert len(helpers) >= 3, helpers
    finally:
        proc.kill()
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (alive := [p for p in helpers if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"left behind after kill -9: {alive} of {helpers}"


def _kill_after_parts(crawl_dir: Path, args: list[str], parts: int, ctrl_c_first: bool = False) -> None:
    """Run capcrawl ``args`` and kill it (-9; after a Ctrl-C and 0.3 s with ``ctrl_c_first``)
    once ``crawl_dir`` holds ``parts`` parts."""
    proc = subprocess.Popen([sys.executable, "-m", "capcrawl", "-q", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list_parts(crawl_dir)) < parts and time.monotonic() < deadline:
        time.sleep(0.05)
    if ctrl_c_first:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    proc.kill()
    proc.wait(timeout=30)


def test_interrupt_then_kill_then_resume_records_each_image_once(tmp_path, site):
    expected = _resume_site(site)
    args = ["crawl", site.url("/p/0.html"), "--work", str(tmp_path), "--allow-private-addresses", "--max-depth", "100",
            "--concurrency", "2", "--per-host-concurrency", "2", "--part-rows", "5", "--no-autothrottle"]
    _kill_after_parts(tmp_path / "crawl", args, 3, ctrl_c_first=True)
    first = crawl_rows(tmp_path)
    assert 0 < len(first) < len(expected), "the interruption came too late to test anything"
    run_cli(*args, check=True)
    rows = crawl_rows(tmp_path)
    urls = [r["url"] for r in rows]
    assert len(urls) == len(set(urls)), "an image URL was recorded twice"
    assert set(urls) == expected
    assert all(r["status"] == "ok" for r in rows)
    # finished images were not downloaded again
    again = sum(site.requested(u.removeprefix(site.base)) > 1 for u in {r["url"] for r in first})
    assert again == 0
    stats = json.loads((tmp_path / "crawl" / "stats.json").read_text())
    assert stats["images"] == {"ok": len(expected)} and stats["pending"] == 0
    assert not list((tmp_path / "crawl").glob(".*.tmp")), "the killed run's temporary part was left behind"


def test_a_list_killed_then_resumed_counts_only_its_real_repeats(tmp_path, site):
    """kill -9 writes no stats.json: the rerun must still know that the URLs already in parts
    came from this list's own first pass, not count them as duplicates of an earlier one."""
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG, delay=0.2) for i in range(60)]
    (tmp_path / "list.txt").write_text("\n".join(urls + urls[:10]) + "\n")  # 10 real repeats, at the end
    args = ["download", str(tmp_path / "list.txt"), "--work", str(tmp_path), "--allow-private-addresses",
            "--concurrency", "2", "--per-host-concurrency", "2", "--part-rows", "5", "--no-autothrottle"]
    _kill_after_parts(tmp_path / "crawl", args, 3)
    first = crawl_rows(tmp_path)
    assert 0 < len(first) < 60, "the kill came too late to test anything"
    run_cli(*args, check=True)
    stats = json.loads((tmp_path / "crawl" / "stats.json").read_text())
    assert stats["images_total"] == 60 and len(by_url(crawl_rows(tmp_path))) == 60
    assert stats["skipped"] == {"duplicate_url": 10}
    assert stats["images_total"] + stats["skipped"]["duplicate_url"] == 70  # every line of the list, once
    run_cli(*args, check=True)  # a third pass over a finished list counts the same
    assert json.loads((tmp_path / "crawl" / "stats.json").read_text())["skipped"] == {"duplicate_url": 10}


def _write_list(path: Path, fmt: str, urls: list[str], caps: list[str]) -> None:
    if fmt == "txt":
        path.write_text("# images\n" + "\n".join(urls) + "\n")
    elif fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        path.write_text(f"url{sep}text\n" + "".join(f'{u}{sep}"{c}"\n' if fmt == "csv" else f"{u}{sep}{c}\n" for u, c in zip(urls, caps)))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"url": u, "text": c}) + "\n" for u, c in zip(urls, caps)))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"url": urls, "text": caps}), path)


def test_a_seed_is_a_page_whatever_its_path_ends_with(tmp_path, site):
    """MediaWiki's description pages are named like their file (/wiki/File:Sunset.jpg): as a
    seed it is fetched as the page it is; as a link it is taken for an image file, not followed."""
    site.add("/wiki/File:Sunset.jpg", page('<img src="/upload/sunset.jpg" alt="Sunset over the sea">'
                                           '<a href="/wiki/File:Other.jpg">other</a>'))
    site.add("/upload/sunset.jpg", jpeg(pattern=3), content_type=IMG)
    site.add("/wiki/File:Other.jpg", page('<img src="/upload/other.jpg" alt="x">'))
    run_cli("crawl", site.url("/wiki/File:Sunset.jpg"), "--work", str(tmp_path), "--allow-private-addresses", check=True)
    rows = by_url(crawl_rows(tmp_path))
    assert list(rows) == [site.url("/upload/sunset.jpg")] and rows[site.url("/upload/sunset.jpg")]["status"] == "ok"
    assert site.requested("/wiki/File:Other.jpg") == 0


def test_linked_image_files_are_fetched_as_images(tmp_path, site):
    """A gallery's thumbnail links to its original, which is fetched too (with the thumbnail's
    alt) and kept over the thumbnail by dedup; a link to a file is never followed as a page."""
    big = jpeg(size=(800, 600), pattern=4)
    buf = io.BytesIO()
    Image.open(io.BytesIO(big)).resize((200, 150), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=85)
    thumb = buf.getvalue()
    site.add("/", page('<p>Our gallery of harbour views.</p>'
                       '<a href="/full/harbour.jpg" title="Open full size"><img src="/thumb/harbour.jpg" alt="The harbour at dawn"></a>'
                       '<p>Download <a href="/files/map.png">the map</a> of the walk.</p>'
                       '<a href="/wiki/File:Other.jpg">description page</a>'))
    site.add("/full/harbour.jpg", big, content_type=IMG)
    site.add("/thumb/harbour.jpg", thumb, content_type=IMG)
    site.add("/files/map.png", png(size=(400, 300)), content_type="image/png")
    site.add("/wiki/File:Other.jpg", page("<p>a description page</p>"))
    run_cli("crawl", site.url("/"), "--work", str(tmp_path / "work"), "--allow-private-addresses", check=True)
    rows = by_url(crawl_rows(tmp_path / "work"))
    assert set(rows) == {site.url(u) for u in ("/full/harbour.jpg", "/thumb/harbour.jpg", "/files/map.png")}
    full = rows[site.url("/full/harbour.jpg")]
    assert full["status"] == "ok" and (full["original_width"], full["original_height"]) == (800, 600)
    assert full["alt"] == "The harbour at dawn" and full["title_attr"] == "Open full size"
    assert rows[site.url("/files/map.png")]["status"] == "ok" and rows[site.url("/files/map.png")]["alt"] is None
    assert "the map" in rows[site.url("/files/map.png")]["context"]
    assert site.requested("/wiki/File:Other.jpg") == 0 and site.requested("/full/harbour.jpg") == 1
    run_cli("shards", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--no-filter", check=True)
    import pyarrow.parquet as pq

    kept = pq.read_table(tmp_path / "out" / "00000.parquet").column("url").to_pylist()
    assert site.url("/full/harbour.jpg") in kept and site.url("/thumb/harbour.jpg") not in kept


def test_a_directory_listing_is_crawled_for_its_image_files(tmp_path):
    """Python's own http.server lists a folder as links to its files: every image in it is a
    row (a non-image file is not_an_image), and the listing's sub-folder is crawled too."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    (root / "trips").mkdir(parents=True)
    names = {"beach day.jpg": jpeg(size=(320, 240), pattern=1), "dunes.png": png(size=(300, 200)),
             "trips/forest.jpg": jpeg(size=(300, 300), pattern=2)}
    for name, data in names.items():
        (root / name).write_bytes(data)
    (root / "notes.jpg").write_bytes(b"not really a picture")
    (root / "readme.txt").write_text("text")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        run_cli("crawl", base, "--work", str(tmp_path / "work"), "--allow-private-addresses", check=True)
    finally:
        server.shutdown()
        server.server_close()
    rows = by_url(crawl_rows(tmp_path / "work"))
    ok = {u for u, r in rows.items() if r["status"] == "ok"}
    assert ok == {base + "beach%20day.jpg", base + "dunes.png", base + "trips/forest.jpg"}
    assert rows[base + "notes.jpg"]["status"] == "not_an_image"


@pytest.mark.parametrize("fmt", ["txt", "csv", "jsonl", "seeds"])
def test_lists_saved_with_a_byte_order_mark_are_read(tmp_path, site, fmt):
    """Notepad and Excel's "CSV UTF-8" start a file with a BOM: it is no part of the first URL
    (or of the first column's name)."""
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG) for i in range(2)]
    lst = tmp_path / f"urls.{'txt' if fmt == 'seeds' else fmt}"
    if fmt == "seeds":
        site.add("/", page("".join(f'<img src="/img/{i}.jpg" alt="image {i}">' for i in range(2))))
        lst.write_text("\ufeff" + site.url("/") + "\n", encoding="utf-8")
        args = ["crawl", str(lst)]
    else:
        _write_list(lst, fmt, urls, ["one", "two"])
        lst.write_text("\ufeff" + lst.read_text().removeprefix("# images\n"), encoding="utf-8")
        args = ["download", str(lst), *([] if fmt == "txt" else ["--caption-col", "text"])]
    run_cli(*args, "--work", str(tmp_path / "w"), "--allow-private-addresses", check=True)
    rows = by_url(crawl_rows(tmp_path / "w"))
    assert sorted(rows) == sorted(urls) and {r["status"] for r in rows.values()} == {"ok"}


@pytest.mark.parametrize("fmt", ["txt", "csv", "tsv", "parquet", "jsonl"])
def test_download_url_lists(tmp_path, site, fmt):
    site.add("/robots.txt", "User-agent: *\nDisallow: /no/\n", content_type="text/plain")
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG) for i in range(6)]
    urls += [site.url("/no/x.jpg"), site.url("/img/missing.jpg"), "ftp://example.com/x.jpg", urls[0]]
    caps = [f"caption, number {i}" for i in range(len(urls))]
    lst = tmp_path / f"urls.{fmt}"
    _write_list(lst, fmt, urls, caps)
    extra = [] if fmt == "txt" else ["--caption-col", "text"]
    run_cli("download", str(lst), "--work", str(tmp_path / "w"), "--allow-private-addresses", *extra, check=True)
    rows = by_url(crawl_rows(tmp_path / "w"))
    assert [rows[u]["status"] for u in urls[:6]] == ["ok"] * 6
    assert rows[urls[6]]["status"] == "robots" and site.requested("/no/x.jpg") == 0
    assert rows[urls[7]]["status"] == "http_404" and rows[urls[8]]["status"] == "bad_url"
    assert all(r["page_url"] is None for r in rows.values())
    if fmt != "txt":
        assert rows[urls[2]]["caption_in"] == "caption, number 2"
    stats = json.loads((tmp_path / "w" / "crawl" / "stats.json").read_text())
    assert stats["skipped"]["duplicate_url"] == 1 and stats["images_total"] == 9


def test_both_http_clients_give_the_same_records(tmp_path, site):
    """--http-client twisted (Scrapy's classic client) stays a working fallback: the same list
    gives the same statuses, errors aside, and the same image bytes as the default aiohttp."""
    site.add("/robots.txt", "User-agent: *\nDisallow: /no/\n", content_type="text/plain")
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG) for i in range(3)]
    site.add("/moved.jpg", redirect_to=urls[0])
    site.add("/huge.jpg", jpeg(size=(900, 900), quality=100, pattern=7), content_type=IMG)
    site.add("/page.jpg", "<html>not an image</html>", content_type="text/html")
    site.add("/boom.jpg", b"", status=500)
    site.add("/tofile.jpg", redirect_to="file:///etc/passwd")  # not followed: the URL it names is at fault
    urls += [site.url(p) for p in ("/moved.jpg", "/huge.jpg", "/page.jpg", "/boom.jpg", "/no/x.jpg", "/img/missing.jpg")]
    urls.append("http://127.0.0.1:1/refused.jpg")  # nothing listens on port 1
    urls.append(site.url("/tofile.jpg"))
    # The web as it is: a stock nginx's 11 KB Content-Security-Policy, a 12 KB cookie and 150
    # headers (over aiohttp's own limits); a script's image sent as text/html; a small gzip
    # body that inflates past --max-image-bytes.
    big = {"Content-Security-Policy": "default-src 'self' " + "a" * 11000, "Set-Cookie": "big=" + "x" * 12000,
           **{f"X-Header-{i}": "v" for i in range(150)}}
    urls.append(site.add("/big-headers.jpg", jpeg(pattern=4), content_type=IMG, headers=big))
    urls.append(site.add("/script.php", jpeg(pattern=5), content_type="text/html"))
    urls.append(site.add("/inflates.jpg", gzip.compress(b"\0" * 100_000), content_type=IMG,
                         headers={"Content-Encoding": "gzip"}))
    # redirects to what no request can be made of: the target is at fault (bad_url)
    urls.append(site.add("/tojs.jpg", redirect_to="javascript:void(0)"))
    urls.append(site.add("/tobadport.jpg", redirect_to="http://127.0.0.1:99999/x.jpg"))
    lst = tmp_path / "urls.txt"
    lst.write_text("\n".join(urls) + "\n")
    got = {}
    for client in ("aiohttp", "twisted"):
        run_cli("download", str(lst), "--work", str(tmp_path / client), "--allow-private-addresses", "--http-client", client,
                "--retries", "0", "--max-image-bytes", "20000", check=True)
        got[client] = {u: (r["status"], r["sha256"], r["image"]) for u, r in by_url(crawl_rows(tmp_path / client)).items()}
    assert got["aiohttp"] == got["twisted"]
    statuses = [got["aiohttp"][u][0] for u in urls]
    assert statuses == ["ok"] * 4 + ["too_large", "not_an_image", "http_500", "robots", "http_404", "connection_error",
                                     "bad_url", "ok", "ok", "too_large", "bad_url", "bad_url"]
    assert site.requested("/no/x.jpg") == 0
    assert "to a file: URL" in by_url(crawl_rows(tmp_path / "aiohttp"))[site.url("/tofile.jpg")]["error"]
    for client in got:  # error texts say what happened, without objects' addresses
        errors = [r["error"] for r in crawl_rows(tmp_path / client) if r["error"]]
        assert errors and not [e for e in errors if " at 0x" in e or e.endswith(": ")], errors


@pytest.mark.parametrize("args,needle", [
    (["crawl", "--work", "w"], "required"),
    (["crawl", "http://127.0.0.1:9/", "--work", "w", "--image-size", "0"], "--image-size"),
    (["crawl", "http://127.0.0.1:9/", "--work", "w", "--resize-mode", "stretch"], "--resize-mode"),
    (["crawl", "no-such-seeds.txt", "--work", "w"], "no-such-seeds.txt"),
    (["crawl", "ftp://x/", "--work", "w"], "bad seed URL"),
    (["crawl", "http://127.0.0.1:9/", "--work", "w", "--max-image-bytes", "lots"], "not a size"),
    (["download", "missing.csv", "--work", "w"], "does not exist"),
])
def test_bad_cli_input_one_line(tmp_path, args, needle):
    proc = run_cli(*[a if a != "w" else str(tmp_path / "w") for a in args], timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_csv_without_url_column_fails_at_start(tmp_path):
    lst = tmp_path / "l.csv"
    lst.write_text("link,text\nhttp://x/a.jpg,a\n")
    proc = run_cli("download", str(lst), "--work", str(tmp_path / "w"), timeout=60)
    assert proc.returncode == 2 and "--url-col" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_scrapy_crawl_command_uses_the_same_spider(tmp_path, site):
    site.add("/", page('<img src="/a.jpg" alt="an image">'))
    site.add("/a.jpg", jpeg(), content_type=IMG)
    proc = subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "images", "-a", f"seeds={site.url('/')}", "-a", f"work={tmp_path}",
         "-a", "allow_private_addresses=true", "-s", "LOG_LEVEL=WARNING"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = crawl_rows(tmp_path)
    assert [(r["url"], r["status"], r["alt"]) for r in rows] == [(site.url("/a.jpg"), "ok", "an image")]


def _one_page_of_images(site, n: int, delay: float = 0.0) -> None:
    """``/`` holding ``n`` distinct images ``/img/{i}.jpg``, each answered after ``delay`` s."""
    site.add("/", page("".join(f'<img src="/img/{i}.jpg" alt="image {i}">' for i in range(n))))
    for i in range(n):
        site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG, delay=delay)


def test_deadline_stops_the_run_and_a_rerun_finishes(tmp_path, site):
    _one_page_of_images(site, 20, delay=0.4)
    args = ["crawl", site.url("/"), "--work", str(tmp_path), "--allow-private-addresses",
            "--concurrency", "1", "--per-host-concurrency", "1", "--no-autothrottle"]
    started = time.monotonic()
    run_cli(*args, "--deadline", "2", check=True)
    assert time.monotonic() - started < 30
    stats = json.loads((tmp_path / "crawl" / "stats.json").read_text())
    assert stats["finish_reason"] == "closespider_timeout"
    assert stats["pending"] > 0 and stats["images_total"] + stats["pending"] == 20
    run_cli(*args, check=True)
    rows = by_url(crawl_rows(tmp_path))
    assert len(rows) == 20 and all(r["status"] == "ok" for r in rows.values())


def test_a_url_list_waits_for_room_instead_of_filling_the_scheduler(tmp_path, site):
    """While the downloader is full, the list is not read ahead: stopped by --deadline, the run
    leaves a handful of requests pending, not the rest of the list (Scrapy takes start requests
    back to back while its engine needs backing out)."""
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i % 7 + 1), content_type=IMG, delay=0.2) for i in range(400)]
    (tmp_path / "list.txt").write_text("\n".join(urls) + "\n")
    run_cli("download", str(tmp_path / "list.txt"), "--work", str(tmp_path / "w"), "--allow-private-addresses",
            "--concurrency", "2", "--per-host-concurrency", "2", "--no-autothrottle", "--deadline", "2", check=True)
    stats = json.loads((tmp_path / "w" / "crawl" / "stats.json").read_text())
    assert stats["finish_reason"] == "closespider_timeout"
    assert stats["images_total"] < 400, "the run ended before the deadline: nothing was left to read ahead"
    [listed] = stats["lists"].values()
    assert listed["lines_read"] - stats["images_total"] <= 8, (listed, stats["images_total"])
    # pending: the few requests on their way and the lines not read yet, which a rerun fetches
    assert stats["pending"] == 400 - stats["images_total"]


def test_robots_crawl_delay_is_honoured(tmp_path, site):
    site.add("/robots.txt", "User-agent: *\nCrawl-delay: 1\n", content_type="text/plain")
    _one_page_of_images(site, 4)
    run_cli("crawl", site.url("/"), "--work", str(tmp_path), "--allow-private-addresses", check=True)
    times = sorted(e.at for e in site.log if e.path.startswith("/img/"))
    assert len(times) == 4
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps[1:]) >= 0.9, gaps


def test_progress_line_on_a_terminal(tmp_path, site):
    import pty

    site.add("/", page('<img src="/a.jpg" alt="a"><img src="/missing.jpg" alt="b">'))
    site.add("/a.jpg", jpeg(), content_type=IMG)
    master, slave = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "capcrawl", "crawl", site.url("/"), "--work", str(tmp_path), "--allow-private-addresses"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120,
    )
    os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert proc.returncode == 0
    assert b"images ok 1 | failed 1 (http_404 1)" in screen, screen


def _ctrl_c_once_requested(site, path: str, args: list[str], presses: int = 1) -> tuple[subprocess.Popen, str]:
    """Run capcrawl ``args``; once ``path`` was requested, press Ctrl-C ``presses`` times (0.3 s
    apart); return the finished process and its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "capcrawl", "-q", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while site.requested(path) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    for press in range(presses):
        if press:
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc, err


def test_ctrl_c_stops_gracefully_and_says_how_to_resume(tmp_path, site):
    _one_page_of_images(site, 40, delay=0.5)
    args = ["crawl", site.url("/"), "--work", str(tmp_path), "--allow-private-addresses",
            "--concurrency", "4", "--per-host-concurrency", "4", "--no-autothrottle"]
    proc, err = _ctrl_c_once_requested(site, "/img/8.jpg", args)
    assert proc.returncode == 130
    assert err.strip() == "capcrawl: interrupted; run the same command again to resume.", err
    stats = json.loads((tmp_path / "crawl" / "stats.json").read_text())
    assert stats["finish_reason"] == "shutdown" and stats["pending"] > 0
    assert stats["images"] == {"ok": 40 - stats["pending"]}, "an image in flight was lost or failed on Ctrl-C"
    run_cli(*args, check=True)
    assert len(by_url(crawl_rows(tmp_path))) == 40


_CTRL_C_WHILE_OPENING = """
import os, signal, sys
from scrapy import signals
import crawler.spiders.images as images
if __name__ == "__main__":
    opened = images.ImagesSpider.from_crawler.__func__
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = opened(cls, crawler, *args, **kwargs)
        ctrl_c = lambda: os.kill(os.getpid(), signal.SIGINT)  # before the engine runs
        crawler.signals.connect(ctrl_c, signal=signals.spider_opened, weak=False)
        return spider
    images.ImagesSpider.from_crawler = classmethod(from_crawler)
    from capcrawl.cli import run
    sys.argv = ["capcrawl", "-q", "download", sys.argv[1], "--work", sys.argv[2], "--allow-private-addresses"]
    run()
"""


def test_ctrl_c_while_the_spider_opens_stops_the_crawl(tmp_path, site):
    """A Ctrl-C in the crawl's first second, before Scrapy's engine runs: Scrapy marked the
    crawler stopped without stopping the engine, which downloaded everything and then hung."""
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG, delay=0.2) for i in range(30)]
    (tmp_path / "list.txt").write_text("\n".join(urls) + "\n")
    (tmp_path / "script.py").write_text(_CTRL_C_WHILE_OPENING)
    proc = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(tmp_path / "list.txt"), str(tmp_path / "w")],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 130, proc.stderr[-2000:]
    stats = json.loads((tmp_path / "w" / "crawl" / "stats.json").read_text())
    assert stats["finish_reason"] == "shutdown" and stats["images_total"] + stats["pending"] == 30


@pytest.mark.parametrize("command", ["download", "run"])
def test_a_second_ctrl_c_stops_at_once_and_records_nothing_unfinished(tmp_path, site, command):
    """Ctrl-C twice: Scrapy cancels the downloads under way. They must not be recorded (as
    CancelledError failures, never retried), the finished rows and stats.json must be kept,
    the exit code is 130 and `run` goes no further than the crawl."""
    _one_page_of_images(site, 40)
    for i in range(8, 40):
        site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG, delay=3.0)  # still under way at the 2nd
    (tmp_path / "list.txt").write_text("".join(site.url(f"/img/{i}.jpg") + "\n" for i in range(40)))
    out = tmp_path / "out"
    first = ["download", str(tmp_path / "list.txt")] if command == "download" else \
        ["run", site.url("/"), "--no-filter", "--out", str(out)]
    args = [*first, "--work", str(tmp_path / "w"), "--allow-private-addresses",
            "--concurrency", "4", "--per-host-concurrency", "4", "--no-autothrottle"]
    proc, err = _ctrl_c_once_requested(site, "/img/8.jpg", args, presses=2)
    assert proc.returncode == 130, err
    assert err.strip() == "capcrawl: interrupted; run the same command again to resume.", err
    stats = json.loads((tmp_path / "w" / "crawl" / "stats.json").read_text())
    rows = crawl_rows(tmp_path / "w")
    assert stats["finish_reason"] == "shutdown"
    assert {r["status"] for r in rows} <= {"ok"}, [r["error"] for r in rows if r["status"] != "ok"]
    assert stats["images"] == ({"ok": len(rows)} if rows else {})
    assert len(rows) + stats["pending"] == 40, "an image is neither recorded nor pending"
    assert not out.exists(), "run went on to the shards after the crawl was stopped"
    for i in range(8, 40):
        site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG)
    run_cli(*args, check=True)
    rows = by_url(crawl_rows(tmp_path / "w"))
    assert len(rows) == 40 and {r["status"] for r in rows.values()} == {"ok"}


_HANDLERS_AFTER_CRAWL = """
import signal, sys
import crawler
from crawler.config import CrawlConfig
if __name__ == "__main__":
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    crawler.run(CrawlConfig(work=sys.argv[1], url_list=sys.argv[2], allow_private_addresses=True))
    print([signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before)
"""


def test_the_crawl_gives_the_signal_handlers_back(tmp_path, site):
    """Scrapy's Ctrl-C handlers outlive its crawl; left in place, `run` would ignore Ctrl-C
    while it filters and writes shards."""
    (tmp_path / "list.txt").write_text(site.add("/a.jpg", jpeg(), content_type=IMG) + "\n")
    (tmp_path / "script.py").write_text(_HANDLERS_AFTER_CRAWL)
    proc = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(tmp_path / "w"), str(tmp_path / "list.txt")],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "True"
    assert len(crawl_rows(tmp_path / "w")) == 1


def test_a_second_download_into_the_same_work_is_refused(tmp_path, site):
    """Two commands writing one WORK/crawl would overwrite each other's parts: while one runs
    (here, this process holds its lock as a running download would), another is refused at
    once with exit code 2; a crawl worker's shared hold keeps a local crawl out too."""
    from common.fileio import locked_dir

    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG) for i in range(3)]
    (tmp_path / "list.txt").write_text("\n".join(urls) + "\n")
    args = ["download", str(tmp_path / "list.txt"), "--work", str(tmp_path / "w"), "--allow-private-addresses"]
    for shared in (False, True):
        with locked_dir(tmp_path / "w" / "crawl", "WORK", shared=shared):
            proc = run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == (f"capcrawl: error: Another capcrawl command is writing {tmp_path / 'w' / 'crawl'}; "
                                       "wait for it to finish."), proc.stderr
        assert not crawl_rows(tmp_path / "w") and not site.requested("/img/0.jpg")
    run_cli(*args, check=True)
    assert len(by_url(crawl_rows(tmp_path / "w"))) == 3


@pytest.mark.parametrize("spider_name", ["images", "image_list"])
def test_components_switched_off_keep_the_project_middlewares(tmp_path, spider_name):
    """A spider's components_off is merged into the project's middleware dicts, never replacing
    them: robots, private-address and Retry-After handling stay on in both modes."""
    from scrapy.settings import Settings
    from scrapy.utils.test import get_crawler

    import crawler.settings as project
    from crawler.config import CrawlConfig
    from crawler.spiders.images import ImageListSpider, ImagesSpider

    cls = {"images": ImagesSpider, "image_list": ImageListSpider}[spider_name]
    (tmp_path / "urls.txt").write_text("http://127.0.0.1:9/a.jpg\n")
    config = CrawlConfig(work=str(tmp_path / "work"), seeds=("http://127.0.0.1:9/",), url_list=str(tmp_path / "urls.txt"))
    settings = Settings()
    settings.setmodule(project, priority="project")
    crawler = get_crawler(cls)
    crawler.settings = settings
    cls.from_crawler(crawler, config=config)
    down = crawler.settings.getwithbase("DOWNLOADER_MIDDLEWARES")
    spider_mw = crawler.settings.getwithbase("SPIDER_MIDDLEWARES")
    for ours in ("middlewares.PrivateAddressMiddleware", "upstream.RobotsMiddleware", "middlewares.RetryAfterMiddleware"):
        assert down[f"crawler.{ours}"] is not None
    assert down["scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware"] is None  # replaced by ours
    assert spider_mw["scrapy.spidermiddlewares.depth.DepthMiddleware"] is None
    assert spider_mw["scrapy.spidermiddlewares.referer.RefererMiddleware"] is not None
    list_only = spider_name == "image_list"
    assert (down["scrapy.downloadermiddlewares.redirect.MetaRefreshMiddleware"] is None) == list_only
    assert spider_mw["scrapy.spidermiddlewares.urllength.UrlLengthMiddleware"] is None  # it dropped long URLs unrecorded
    assert crawler.settings.getbool("REMOTE_CONTROL_ENABLED") is False


@pytest.mark.parametrize("level", ["WARNING", "INFO"])
def test_scrapy_records_only_at_the_level_asked_for(tmp_path, level):
    """Scrapy's logging set-up puts its logger at DEBUG and resets the ones below it; run_crawl
    sets them after it: no per-response debug record is built only to be dropped, and at the
    default level the per-image warnings (oversized, retries given up) stay quiet."""
    urls = tmp_path / "urls.txt"
    urls.write_text("")
    code = (
        "import logging, sys\n"
        "from crawler.config import CrawlConfig\n"
        "from crawler.stage import run\n"
        "from crawler.upstream import QUIET_AT_WARNING\n"
        "run(CrawlConfig(work=sys.argv[1], url_list=sys.argv[2]), sys.argv[3])\n"
        "print(logging.getLogger('scrapy.core.engine').getEffectiveLevel(),"
        " *(logging.getLogger(n).getEffectiveLevel() for n in sorted(QUIET_AT_WARNING)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w"), str(urls), level], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    engine, *quiet = map(int, proc.stdout.split()[-4:])
    assert engine == getattr(logging, level)
    # sorted names: the two download handlers (ERROR), then the retry middleware (CRITICAL)
    assert quiet == ([logging.ERROR, logging.ERROR, logging.CRITICAL] if level == "WARNING" else [logging.INFO] * 3)


def test_depth_is_the_shortest_link_distance(tmp_path, site):
    """A page first reached by a longer path gets its shortest depth when a shorter path turns
    up, and its links are followed from there: --max-depth never refuses a page within reach."""
    site.add("/", page('<a href="/target.html">target</a>'), delay=1.5)  # the short path comes late
    site.add("/deep/start.html", page('<a href="/deep/1.html">on</a>'))
    site.add("/deep/1.html", page('<a href="/target.html">on</a>'))
    site.add("/target.html", page('<a href="/leaf.html">leaf</a><img src="/t.jpg" alt="t">'))
    site.add("/leaf.html", page('<img src="/leaf.jpg" alt="leaf">'))
    for name in ("/t.jpg", "/leaf.jpg"):
        site.add(name, jpeg(pattern=len(name)), content_type=IMG)
    run_cli("crawl", site.url("/deep/start.html"), site.url("/"), "--work", str(tmp_path), "--allow-private-addresses",
            "--max-depth", "2", check=True)
    assert site.requested("/leaf.html") == 1, "the leaf is 2 links from a seed"
    assert site.requested("/target.html") == 1, "a shorter path does not fetch a page again"
    depth = {}
    for line in (tmp_path / "crawl" / "pages.jsonl").read_text().splitlines():
        entry = json.loads(line)
        depth[entry["url"].removeprefix(site.base)] = entry["depth"]  # the last line wins
    assert depth == {"/": 0, "/deep/start.html": 0, "/deep/1.html": 1, "/target.html": 1, "/leaf.html": 2}
    assert by_url(crawl_rows(tmp_path))[site.url("/leaf.jpg")]["status"] == "ok"


def test_blocklist_at_crawl_time(tmp_path, site, other_site):
    """--blocklist (the format `capcrawl remove` writes): URL and domain entries are never
    requested; sha256 and pHash entries are discarded after the download, bytes and all."""
    from common.blocklist import BlockEntry, EntryKind
    from common.phash import perceptual_hash

    same_picture = jpeg("teal", size=(200, 150), pattern=9)
    site.add("/", page('<img src="/url.jpg" alt="a"><img src="/sha.jpg" alt="b"><img src="/ph.jpg" alt="c">'
                       '<img src="/fine.jpg" alt="d">' f'<a href="{other_site.url("/p.html")}">elsewhere</a>'
                       f'<img src="{other_site.url("/cdn.jpg")}" alt="e">'))
    for name, body in (("/url.jpg", jpeg(pattern=1)), ("/sha.jpg", jpeg(pattern=2)), ("/fine.jpg", jpeg(pattern=3)),
                       ("/ph.jpg", jpeg("teal", size=(200, 150), pattern=9, quality=70))):
        site.add(name, body, content_type=IMG)
    other_site.add("/p.html", page("<img src='/x.jpg'>"))
    other_site.add("/cdn.jpg", jpeg(pattern=4), content_type=IMG)
    blocklist = tmp_path / "blocklist.jsonl"
    import hashlib

    entries = [
        BlockEntry(EntryKind.URL, site.url("/url.jpg"), site.url("/url.jpg")),
        BlockEntry(EntryKind.DOMAIN, "127.0.0.2", "domain:127.0.0.2"),
        BlockEntry(EntryKind.SHA256, hashlib.sha256(jpeg(pattern=2)).hexdigest(), "sha256:..."),
        BlockEntry(EntryKind.PHASH, perceptual_hash(Image.open(io.BytesIO(same_picture))), "my_photo.jpg", 4),
    ]
    blocklist.write_text("".join(e.to_json() + "\n" for e in entries))
    run_cli("crawl", site.url("/"), "--work", str(tmp_path / "w"), "--allow-private-addresses", "--allow-domain", "127.0.0.2",
            "--blocklist", str(blocklist), check=True)
    rows = by_url(crawl_rows(tmp_path / "w"))
    status = {u.removeprefix(site.base): (r["status"], r["image"] is None) for u, r in rows.items()}
    assert status["/url.jpg"] == ("blocked", True) and site.requested("/url.jpg") == 0
    assert status["/sha.jpg"] == ("blocked", True) and site.requested("/sha.jpg") == 1
    assert status["/ph.jpg"] == ("blocked", True), "a near copy of the taken-down picture"
    assert status["/fine.jpg"] == ("ok", False)
    assert rows[other_site.url("/cdn.jpg")]["status"] == "blocked" and other_site.log == [], "a blocked domain is never contacted"
    stats = json.loads((tmp_path / "w" / "crawl" / "stats.json").read_text())
    assert stats["images"]["blocked"] == 4 and stats["pages"]["blocked"] == 1
    assert "blocklist: " in rows[site.url("/url.jpg")]["error"]
    evidence = [(r["opt_out_signal"], r["opt_out_source"], r["opt_out_value"]) for r in (rows[site.url("/url.jpg")], rows[site.url("/sha.jpg")])]
    assert evidence == [("blocked", "takedown blocklist", site.url("/url.jpg")), ("blocked", "takedown blocklist", "sha256:...")]
    proc = run_cli("crawl", site.url("/"), "--work", str(tmp_path / "w2"), "--blocklist", str(tmp_path / "none.jsonl"))
    assert proc.returncode == 2 and "blocklist" in proc.stderr


@pytest.mark.parametrize("client", ["aiohttp", "twisted"])
def test_dns_rebinding_is_caught_when_connecting(tmp_path, site, client):
    """A name that the pre-request check cannot resolve (as a rebinding name answers publicly
    first) but that resolves to loopback when the client connects (through the resolver plugged
    in with --resolve) is refused: the server never sees a request."""
    site.add("/", page('<img src="/a.jpg" alt="a">'))
    site.add("/a.jpg", jpeg(), content_type=IMG)
    seed = f"http://rebind.test:{site.port}/"
    run_cli("crawl", seed, "--work", str(tmp_path / "w"), "--resolve", f"rebind.test:{site.host}", "--http-client", client,
            check=True)
    assert site.log == [], "a request reached a private address"
    stats = json.loads((tmp_path / "w" / "crawl" / "stats.json").read_text())
    assert stats["pages"] == {"private_address": 1}
    # the same name, private addresses allowed: the plugged resolver is what connects
    run_cli("crawl", seed, "--work", str(tmp_path / "ok"), "--resolve", f"rebind.test:{site.host}", "--http-client", client,
            "--allow-private-addresses", check=True)
    assert by_url(crawl_rows(tmp_path / "ok"))[f"http://rebind.test:{site.port}/a.jpg"]["status"] == "ok"


def test_malformed_urls_on_a_page_are_counted_and_the_page_is_kept(tmp_path, site):
    """URLs that cannot be parsed or requested (an unclosed IPv6 bracket, a port out of range)
    and a URL over Scrapy's 2,083-character limit: each image gets a row, each link is counted,
    and the good image and link after them are still crawled."""
    long_path = "/img/" + "l" * 2100 + ".jpg"
    site.add(long_path, jpeg(pattern=3), content_type=IMG)
    good = site.add("/img/good.jpg", jpeg(pattern=1), content_type=IMG)
    site.add("/next.html", page('<img src="/img/next.jpg" alt="next">'))
    site.add("/img/next.jpg", jpeg(pattern=2), content_type=IMG)
    site.add("/", page('<img src="http://[::1" alt="v6"><img src="http://127.0.0.1:99999/x.jpg" alt="port">'
                       f'<img src="{long_path}" alt="long"><img src="/img/good.jpg" alt="good">'
                       '<a href="http://[zz/">bad</a><a href="http://127.0.0.1:70000/p.html">port</a>'
                       '<a href="/next.html">next</a><link rel="license" href="http://[::1">'))
    run_cli("crawl", site.url("/"), "--work", str(tmp_path), "--allow-private-addresses", "--max-depth", "1", check=True)
    rows = by_url(crawl_rows(tmp_path))
    assert rows["http://[::1"]["status"] == "bad_url" and "unparsable" in rows["http://[::1"]["error"]
    assert rows["http://127.0.0.1:99999/x.jpg"]["status"] == "bad_url"
    assert rows[site.url(long_path)]["status"] == "ok" and rows[good]["status"] == "ok"
    assert rows[site.url("/img/next.jpg")]["status"] == "ok"
    stats = json.loads((tmp_path / "crawl" / "stats.json").read_text())
    assert stats["pages"] == {"ok": 2, "bad_url": 2}
    assert stats["complete"] is True and stats["pending"] == 0


def test_a_url_list_goes_on_past_a_url_scrapy_refuses(tmp_path, site):
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG) for i in range(2)]
    bad = "http://127.0.0.1:99999/x.jpg"
    (tmp_path / "urls.txt").write_text(f"{urls[0]}\n{bad}\n{urls[1]}\n")
    run_cli("download", str(tmp_path / "urls.txt"), "--work", str(tmp_path / "w"), "--allow-private-addresses", check=True)
    rows = by_url(crawl_rows(tmp_path / "w"))
    assert [rows[u]["status"] for u in (urls[0], bad, urls[1])] == ["ok", "bad_url", "ok"]
    assert "Port out of range" in rows[bad]["error"]


@pytest.mark.parametrize("robots_status,expected", [(500, "robots"), (503, "robots"), (429, "robots"), (404, "ok"), (403, "ok")])
def test_unreachable_robots_txt_disallows_the_host(tmp_path, site, robots_status, expected):
    """RFC 9309: a robots.txt answered with a server error (or 429) is unreachable, so nothing on
    the host is fetched; a 4xx means there is none, so everything is allowed."""
    site.add("/robots.txt", "oops", status=robots_status, content_type="text/plain")
    site.add("/", page('<img src="/img/a.jpg" alt="a">'))
    site.add("/img/a.jpg", jpeg(pattern=1), content_type=IMG)
    run_cli("crawl", site.url("/"), "--work", str(tmp_path), "--allow-private-addresses", "--retries", "0", check=True)
    stats = json.loads((tmp_path / "crawl" / "stats.json").read_text())
    if expected == "robots":
        assert site.requested("/") == 0 and site.requested("/img/a.jpg") == 0
        assert stats["pages"] == {"robots": 1}
    else:
        assert by_url(crawl_rows(tmp_path))[site.url("/img/a.jpg")]["status"] == "ok"


def test_unreachable_robots_txt_is_the_evidence_of_a_refused_image(tmp_path, site):
    site.add("/robots.txt", "oops", status=503, content_type="text/plain")
    url = site.add("/img/a.jpg", jpeg(pattern=1), content_type=IMG)
    (tmp_path / "urls.txt").write_text(url + "\n")
    run_cli("download", str(tmp_path / "urls.txt"), "--work", str(tmp_path / "w"), "--allow-private-addresses",
            "--retries", "0", check=True)
    row = by_url(crawl_rows(tmp_path / "w"))[url]
    assert row["status"] == "robots" and site.requested("/img/a.jpg") == 0
    assert row["opt_out_value"] == "robots.txt unreachable (HTTP 503)"
    assert row["error"] == "robots.txt unreachable (HTTP 503): not requested"


def test_no_request_goes_out_while_robots_txt_cannot_be_connected_to(tmp_path, site):
    """robots.txt redirects to a port that refuses connections: no robots.txt was read, so
    the image is not requested (RFC 9309); it fails with the connection error, named."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    site.add("/robots.txt", b"", status=301, headers={"Location": f"http://127.0.0.1:{closed}/robots.txt"})
    url = site.add("/img/a.jpg", jpeg(pattern=1), content_type=IMG)
    (tmp_path / "urls.txt").write_text(url + "\n")
    run_cli("download", str(tmp_path / "urls.txt"), "--work", str(tmp_path / "w"), "--allow-private-addresses",
            "--retries", "1", check=True)
    row = by_url(crawl_rows(tmp_path / "w"))[url]
    assert site.requested("/img/a.jpg") == 0 and site.requested("/robots.txt") >= 2  # asked again by the retry
    assert row["status"] not in ("ok", "pending") and "efused" in (row["error"] or ""), row


def test_robots_groups_are_matched_on_the_product_token_alone(tmp_path, site):
    """RFC 9309 2.2.1: the group is capcrawl's, else *. Words of the User-Agent header
    ("image-caption dataset builder") name no group of ours."""
    x = site.add("/x/a.jpg", jpeg(pattern=1), content_type=IMG)
    y = site.add("/y/b.jpg", jpeg(pattern=2), content_type=IMG)
    robots = {"star": "User-agent: dataset\nAllow: /\n\nUser-agent: *\nDisallow: /x/\n",
              "own": "User-agent: image-caption\nDisallow: /\n\nUser-agent: CapCrawl\nDisallow: /x/\n"}
    for name, text in robots.items():
        site.add("/robots.txt", text, content_type="text/plain")
        (tmp_path / f"{name}.txt").write_text(f"{x}\n{y}\n")
        run_cli("download", str(tmp_path / f"{name}.txt"), "--work", str(tmp_path / name), "--allow-private-addresses",
                "--retries", "0", check=True)
        rows = by_url(crawl_rows(tmp_path / name))
        assert (rows[x]["status"], rows[y]["status"]) == ("robots", "ok"), name
        assert rows[x]["opt_out_value"] == "Disallow: /x/", name


@pytest.mark.parametrize("size,client", [(600_000, "aiohttp"), (11_000_000, "aiohttp"), (11_000_000, "twisted")])
def test_a_huge_robots_txt_is_read_for_its_first_500_kib(tmp_path, site, size, client):
    """RFC 9309 2.5: at least 500 KiB is parsed and the rest may be ignored. An 11 MB file
    (over --max-page-bytes) was cancelled and made the host unreachable; now its first rules
    apply, and a rule past the limit does not."""
    head = "User-agent: *\nDisallow: /private/\n"
    tail = "Disallow: /late/\n"
    filler = "# padding padding padding padding padding padding padding padding padding\n"
    site.add("/robots.txt", head + filler * ((size - len(head) - len(tail)) // len(filler)) + tail, content_type="text/plain")
    urls = [site.add(p, jpeg(pattern=i), content_type=IMG) for i, p in enumerate(["/d.jpg", "/private/p.jpg", "/late/l.jpg"])]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    run_cli("download", str(tmp_path / "urls.txt"), "--work", str(tmp_path / "w"), "--allow-private-addresses",
            "--retries", "0", "--http-client", client, check=True)
    rows = by_url(crawl_rows(tmp_path / "w"))
    assert [rows[u]["status"] for u in urls] == ["ok", "robots", "ok"]


def test_a_page_without_declared_encoding_reads_as_windows_1252(tmp_path, site):
    """No BOM, no charset in Content-Type or meta, not UTF-8: a browser reads windows-1252 (Scrapy
    alone guessed cp1250 for this short page: 'crčme brűlée')."""
    site.add("/", "<html><head><title>Cr\u00e8me br\u00fbl\u00e9e</title></head><body>"
                  '<img src="/img/m.jpg" alt="cr\u00e8me br\u00fbl\u00e9e \u2013 dessert"></body></html>'.encode("cp1252"),
             content_type="text/html")
    url = site.add("/img/m.jpg", jpeg(pattern=1), content_type=IMG)
    run_cli("crawl", site.url("/"), "--work", str(tmp_path), "--allow-private-addresses", check=True)
    r = by_url(crawl_rows(tmp_path))[url]
    assert r["alt"] == "cr\u00e8me br\u00fbl\u00e9e \u2013 dessert" and r["page_title"] == "Cr\u00e8me br\u00fbl\u00e9e"


def test_a_rate_limited_image_is_asked_for_retries_plus_one_times(tmp_path, site):
    """429 and 503 follow --retries as other failures do: 1 + 2 requests, then http_429."""
    url = site.add("/img/busy.jpg", jpeg(pattern=1), content_type=IMG, status=429, headers={"Retry-After": "0"})
    (tmp_path / "urls.txt").write_text(url + "\n")
    run_cli("download", str(tmp_path / "urls.txt"), "--work", str(tmp_path / "w"), "--allow-private-addresses",
            "--retries", "2", check=True)
    assert by_url(crawl_rows(tmp_path / "w"))[url]["status"] == "http_429"
    assert site.requested("/img/busy.jpg") == 3


def test_a_stop_does_not_wait_out_a_long_crawl_delay(tmp_path, site):
    """Stopped by --deadline (as by Ctrl-C), a crawl sends none of the requests still queued for
    a host behind its Crawl-delay: they stay pending for the next run. Scrapy alone sent each
    of them, 30 s apart, before it closed."""
    site.add("/robots.txt", "User-agent: *\nCrawl-delay: 30\n", content_type="text/plain")
    _one_page_of_images(site, 5)
    run_cli("crawl", site.url("/"), "--work", str(tmp_path), "--allow-private-addresses", "--deadline", "3", check=True)
    stats = json.loads((tmp_path / "crawl" / "stats.json").read_text())
    assert stats["finish_reason"] == "closespider_timeout" and stats["complete"] is False
    # robots.txt, then every request to the host waits 30 s: none was sent (Scrapy alone would
    # have sent each before closing, so the server's log tells, not the clock), none is refused
    assert [e.path for e in site.log] == ["/robots.txt"] and stats["pages"] == {} and stats["images_total"] == 0


def test_every_line_of_every_list_into_one_work_is_counted(tmp_path, site):
    """Two URL lists downloaded into one WORK: every line is a row or a skipped duplicate_url,
    whether it repeats a line of its own list or a URL the other list recorded; reruns of
    either list count nothing twice."""
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG) for i in range(4)]
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("\n".join([urls[0], urls[1], urls[0]]) + "\n")  # one repeat inside the list
    second.write_text("\n".join([urls[2], urls[1], urls[3]]) + "\n")  # urls[1]: the first list's
    work = tmp_path / "w"

    def download(lst: Path) -> dict:
        run_cli("download", str(lst), "--work", str(work), "--allow-private-addresses", check=True)
        return json.loads((work / "crawl" / "stats.json").read_text())

    stats = download(first)
    assert (stats["images_total"], stats["skipped"]) == (2, {"duplicate_url": 1})
    for lst in (second, second, first):
        stats = download(lst)
        assert (stats["images_total"], stats["skipped"]) == (4, {"duplicate_url": 2}), lst.name
    assert stats["images_total"] + stats["skipped"]["duplicate_url"] == 6  # the lines of both lists
    assert site.requested("/img/1.jpg") == 1
