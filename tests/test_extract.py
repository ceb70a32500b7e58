"""Pure functions of the crawl stage: HTML extraction, licences, image processing, URL lists."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from crawler.extract import extract_page, largest_candidate, opt_out_in
from crawler.imageproc import ImageOptions, process_image
from crawler.licenses import normalise, spdx_from_url
from crawler.middlewares import parse_retry_after

from .conftest import crawl_rows, jpeg, run_cli

XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmpRights="http://ns.adobe.com/xap/1.0/rights/" '
       b'xmpRights:WebStatement="https://example.com/rights"><dc:rights><rdf:Alt><rdf:li xml:lang="x-default">'
       b'(c) Jane Doe 2026</rdf:li></rdf:Alt></dc:rights></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


@pytest.mark.parametrize("url,spdx", [
    ("https://creativecommons.org/licenses/by/4.0/", "CC-BY-4.0"),
    ("http://creativecommons.org/licenses/by-sa/4.0/deed.de", "CC-BY-SA-4.0"),
    ("https://creativecommons.org/licenses/by-nc-nd/3.0/", "CC-BY-NC-ND-3.0"),
    ("https://creativecommons.org/licenses/by/2.0/fr/", "LicenseRef-CC-BY-2.0-FR"),  # a port SPDX does not list
    ("https://creativecommons.org/licenses/by-sa/3.0/de/", "CC-BY-SA-3.0-DE"),
    ("https://creativecommons.org/licenses/by-nc-nd/3.0/igo/", "CC-BY-NC-ND-3.0-IGO"),
    ("https://creativecommons.org/licenses/by-nc-sa/2.5/scotland/deed.en", "LicenseRef-CC-BY-NC-SA-2.5-SCOTLAND"),
    ("https://creativecommons.org/licenses/by/3.0/deed.fr", "CC-BY-3.0"),
    ("https://creativecommons.org/licenses/by/2.5/legalcode", "CC-BY-2.5"),
    ("https://creativecommons.org/licenses/by-nd-nc/1.0/", "CC-BY-NC-ND-1.0"),
    ("https://creativecommons.org/licenses/sa/1.0/", "CC-SA-1.0"),
    ("https://creativecommons.org/licenses/publicdomain/", "CC-PDDC"),
    ("https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
    ("https://creativecommons.org/publicdomain/mark/1.0/", "CC-PDM-1.0"),
    ("https://example.com/my-licence", None),
])
def test_cc_urls_to_spdx(url, spdx):
    assert spdx_from_url(url) == spdx


def test_short_licence_names():
    assert normalise("CC BY-SA 4.0") == ("CC-BY-SA-4.0", None)
    assert normalise("CC0") == ("CC0-1.0", None)


def test_largest_srcset_candidate():
    assert largest_candidate("a.jpg 480w, b.jpg 1080w, c.jpg 800w") == "b.jpg"
    assert largest_candidate("a.jpg, b.jpg 2x") == "b.jpg"
    assert largest_candidate("img,1.jpg 1x, img,2.jpg 2x") == "img,2.jpg"


def test_opt_out_directives():
    assert opt_out_in(["index, follow"]) is None
    assert opt_out_in(["noindex", "noimageai"]) == "noimageai"
    assert opt_out_in(["NoAI"]) == "noai"
    assert opt_out_in(["otherbot: noai"], "capcrawl") is None
    assert opt_out_in(["capcrawl: noimageai"], "capcrawl") == "noimageai"
    # One line naming several bots (a proxy joins repeated header lines with commas): each
    # prefix holds up to the next.
    assert opt_out_in(["googlebot: noindex, capcrawl: noai"], "capcrawl") == "noai"
    assert opt_out_in(["capcrawl: index, otherbot: noai"], "capcrawl") is None
    assert opt_out_in(["max-image-preview: large, noimageai"], "capcrawl") == "noimageai"


def test_meta_named_after_our_agent_opts_out():
    html = '<meta name="capcrawl" content="noai"><img src="a.jpg" alt="a">'
    assert extract_page(html, "http://h/").opt_out == "noai"
    assert extract_page(html.replace("capcrawl", "otherbot"), "http://h/").opt_out is None


def test_retry_after_forms():
    assert parse_retry_after(b"120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == pytest.approx(60.0)
    assert parse_retry_after(b"soon") is None


def test_embedded_rights_xmp_and_exif():
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(buf, "JPEG", xmp=XMP)
    r = process_image(buf.getvalue(), ImageOptions())
    assert (r.rights, r.rights_url) == ("(c) Jane Doe 2026", "https://example.com/rights")
    exif = Image.Exif()
    exif[0x8298] = "Copyright John Roe"
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(buf, "JPEG", exif=exif)
    assert process_image(buf.getvalue(), ImageOptions()).rights == "Copyright John Roe"


@pytest.mark.parametrize("mode,size", [
    ("keep_ratio", (341, 256)), ("keep_ratio_largest", (256, 192)), ("center_crop", (256, 256)),
    ("border", (256, 256)), ("no", (640, 480)),
])
def test_resize_modes(mode, size):
    r = process_image(jpeg(size=(640, 480), pattern=3), ImageOptions(resize_mode=mode))
    assert r.status == "ok" and (r.width, r.height) == size
    assert Image.open(io.BytesIO(r.image)).size == size
    assert (r.original_width, r.original_height) == (640, 480)


@pytest.mark.parametrize("resample", ["area", "bicubic", "lanczos"])
@pytest.mark.parametrize("size", [(640, 480), (100, 80)])
def test_resample_filters_shrink_and_enlarge(resample, size):
    r = process_image(jpeg(size=size, pattern=4), ImageOptions(resample=resample, resize_mode="center_crop"))
    assert r.status == "ok" and (r.width, r.height) == (256, 256)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("mode", ["no", "keep_ratio"])
def test_exif_orientation_applied_once(fmt, mode):
    """Orientation 6 (turn 90° clockwise to show): the sample is upright, 1:2 and not squashed,
    whichever reader applies it (Pillow's TIFF reader turns the image itself at load)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    img = Image.new("RGB", (200, 100), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 100, 100))  # left half red: on top once turned
    buf = io.BytesIO()
    img.save(buf, fmt, exif=exif)
    r = process_image(buf.getvalue(), ImageOptions(resize_mode=mode, image_size=50))
    assert (r.original_width, r.original_height) == (100, 200)
    assert (r.width, r.height) == ((100, 200) if mode == "no" else (50, 100))
    out = Image.open(io.BytesIO(r.image)).convert("RGB")
    top, bottom = out.getpixel((out.width // 2, 5)), out.getpixel((out.width // 2, out.height - 5))
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_center_crop_only_if_bigger_cuts_no_short_side(fmt):
    """300x200 with --resize-only-if-bigger is not enlarged; center_crop cuts the long side to
    256 and leaves the short one whole, with no black band."""
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (250, 250, 250)).save(buf, fmt)
    r = process_image(buf.getvalue(), ImageOptions(resize_mode="center_crop", resize_only_if_bigger=True, image_format="png"))
    assert r.status == "ok" and (r.width, r.height) == (256, 200)
    out = np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB"))
    assert out.shape == (200, 256, 3) and out.min() > 200


def test_perceptual_hash_agrees_with_imagehash_on_varied_images():
    """common.phash computes imagehash.phash's rule in exact integer arithmetic; on 2,000 varied
    32x32 greys (noise, noisy ramps, blocks) the two agree but for a few bits near the median."""
    import imagehash

    from common.phash import perceptual_hash

    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:32, 0:32]
    differing = []
    for i in range(2000):
        kind = i % 3
        if kind == 0:
            a = rng.integers(0, 256, (32, 32))
        elif kind == 1:
            a = rng.uniform(40, 200) + rng.uniform(-3, 3) * x + rng.uniform(-3, 3) * y + rng.normal(0, rng.uniform(0.5, 10), (32, 32))
        else:
            a = np.kron(rng.integers(0, 256, (4, 4)), np.ones((8, 8))) + rng.normal(0, 3, (32, 32))
        grey = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        ours, theirs = perceptual_hash(grey), str(imagehash.phash(grey))
        if ours != theirs:
            differing.append(bin(int(ours, 16) ^ int(theirs, 16)).count("1"))
    assert len(differing) <= 20 and all(d <= 2 for d in differing), differing
    # exact arithmetic: a flat image's AC coefficients are exactly 0, so only the DC bit is set,
    # whatever order the CPU's BLAS adds in
    assert perceptual_hash(Image.new("L", (32, 32), 77)) == "8000000000000000"
    assert perceptual_hash(Image.new("RGB", (300, 200), (10, 200, 30))) == "8000000000000000"


def test_phash_and_sha256_are_of_the_original():
    import hashlib

    import imagehash

    data = jpeg(size=(300, 200), pattern=5)
    r = process_image(data, ImageOptions(image_size=64))
    assert r.sha256 == hashlib.sha256(data).hexdigest()
    full = imagehash.phash(Image.open(io.BytesIO(data)).convert("RGB"))
    assert full - imagehash.hex_to_hash(r.phash) <= 4


def test_perceptual_hash_is_imagehash_phash_of_its_32px_copy(tmp_path):
    """One pHash for every stage: imagehash.phash of a 32x32 grey copy made with reducing_gap=2."""
    import imagehash

    from crawler.imageproc import perceptual_hash
    from common.phash import phash_of_file

    img = Image.open(io.BytesIO(jpeg(size=(640, 480), pattern=3))).convert("RGB")
    grey32 = img.convert("L").resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=2.0)
    assert perceptual_hash(img) == str(imagehash.phash(grey32))
    assert perceptual_hash(grey32) == str(imagehash.phash(grey32))  # already 32x32 grey: hashed as is
    assert imagehash.phash(img) - imagehash.hex_to_hash(perceptual_hash(img)) <= 4
    path = tmp_path / "a.png"
    img.save(path)
    assert phash_of_file(path) == perceptual_hash(img)


def test_alpha_becomes_white_not_black():
    buf = io.BytesIO()
    Image.new("RGBA", (50, 50), (255, 0, 0, 0)).save(buf, "PNG")
    r = process_image(buf.getvalue(), ImageOptions(resize_mode="no"))
    assert Image.open(io.BytesIO(r.image)).getpixel((25, 25))[0] > 240


@pytest.mark.parametrize("failure", ["crash", "raise"])
def test_a_dying_image_worker_costs_only_its_image(failure):
    """A worker killed on an image (the OOM killer), or a batch whose task raised: its images
    are tried again alone, and only the one at fault is corrupt, with why."""
    import asyncio

    from crawler.pipelines import PoolBatcher

    from .crashy import MARKER, crash_on_marker, raise_on_marker

    async def run() -> list:
        work = crash_on_marker if failure == "crash" else raise_on_marker
        batcher = PoolBatcher(1, ImageOptions(image_size=32), work=work)
        try:
            datas = [jpeg(pattern=i + 1) for i in range(6)]
            datas.insert(3, MARKER)
            return await asyncio.gather(*(batcher.process(d, "image/jpeg") for d in datas))
        finally:
            batcher.close()

    results = asyncio.run(run())
    assert [r.status for r in results] == ["ok"] * 3 + ["corrupt"] + ["ok"] * 3
    assert results[3].sha256 and results[3].error == (
        "an image worker crashed on this image (out of memory?)" if failure == "crash"
        else "image processing failed: MemoryError: cannot allocate the resized image")


def test_pool_batches_by_count_and_bytes_and_answers_each_image():
    import asyncio

    from crawler.pipelines import PoolBatcher

    from .crashy import batch_sizes

    async def run(batch_bytes: int) -> list:
        batcher = PoolBatcher(1, ImageOptions(), batch_size=4, batch_bytes=batch_bytes, work=batch_sizes)
        try:
            datas = [f"{i:04d}".encode() for i in range(10)]  # 4 bytes each
            return await asyncio.gather(*(batcher.process(d, None) for d in datas))
        finally:
            batcher.close()

    by_count = [r.error for r in asyncio.run(run(batch_bytes=1 << 20))]
    assert by_count == [f"{n}:{i:04d}" for i, n in enumerate([4] * 8 + [2] * 2)]  # the last 2 by the timer
    by_bytes = [r.error.split(":")[0] for r in asyncio.run(run(batch_bytes=12))]  # 3 items reach 12 bytes
    assert by_bytes == ["3"] * 9 + ["1"]


def test_pool_pipes_hold_a_whole_batch():
    """On Linux the image pool's task and result pipes are widened from 64 KB to POOL_PIPE_BYTES."""
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("no pipe sizes on this platform")
    from crawler.pipelines import POOL_PIPE_BYTES, PoolBatcher

    probe_r, probe_w = os.pipe()
    try:  # a pipe limit of the machine or the user (pipe-max-size, pipe-user-pages-soft)
        fcntl.fcntl(probe_w, fcntl.F_SETPIPE_SZ, POOL_PIPE_BYTES)
    except OSError as e:
        pytest.skip(f"this machine refuses {POOL_PIPE_BYTES}-byte pipes: {e}")
    finally:
        os.close(probe_r)
        os.close(probe_w)
    batcher = PoolBatcher(1, ImageOptions())
    try:
        pool = batcher.executor
        for queue in (pool._call_queue, pool._result_queue):
            assert fcntl.fcntl(queue._reader.fileno(), fcntl.F_GETPIPE_SZ) >= POOL_PIPE_BYTES
        assert pool.submit(sum, [1, 2]).result() == 3
    finally:
        batcher.close()


def test_image_workers_come_from_the_preloaded_fork_server():
    """Workers are forked from a server that ran crawler.worker_preload (it sets their GC thresholds)."""
    import asyncio

    from crawler.pipelines import PoolBatcher
    from crawler.workers import GC_THRESHOLD, worker_context

    from .crashy import gc_threshold

    if worker_context().get_start_method() != "forkserver":
        pytest.skip("no fork server on this platform: workers are spawned")

    async def run() -> list:
        batcher = PoolBatcher(1, ImageOptions(), work=gc_threshold)
        try:
            return await asyncio.gather(*(batcher.process(b"x", None) for _ in range(3)))
        finally:
            batcher.close()

    assert {r.error for r in asyncio.run(run())} == {repr(GC_THRESHOLD)}


def test_spider_callbacks_return_no_value():
    """crawler/settings.py turns off Scrapy's per-response check for generators that return a
    value (it re-parsed the callback's source for every image); this is that check, run once."""
    import inspect

    from scrapy.utils.misc import is_generator_with_return_value

    from crawler.spiders.images import ImageListSpider, ImagesSpider

    checked = 0
    for cls in (ImagesSpider, ImageListSpider):
        for name, fn in inspect.getmembers(cls, inspect.isgeneratorfunction):
            assert not is_generator_with_return_value(fn), f"{cls.__name__}.{name}"
            checked += 1
    assert checked >= 2


def test_entry_point_finds_the_command_behind_global_options():
    """`capcrawl` starts the image workers' fork server early only for commands that use it."""
    from capcrawl.__main__ import _command

    assert _command(["-v", "-q", "download", "urls.txt", "--work", "w"]) == "download"
    assert _command(["shards", "--work", "w", "--out", "o"]) == "shards"
    assert _command(["--help"]) is None and _command([]) is None


def test_aiohttp_client_retries_what_scrapy_retries_but_twisted_only_errors():
    """The aiohttp path drops only the Twisted client's own exception from Scrapy's retry list
    (naming it imports Twisted's TLS stack); the Twisted path keeps the list whole."""
    from crawler.config import CrawlConfig
    from crawler.stage import scrapy_settings

    aio = scrapy_settings(CrawlConfig(work="w", seeds=("http://127.0.0.1/",), http_client="aiohttp")).getlist("RETRY_EXCEPTIONS")
    tx = scrapy_settings(CrawlConfig(work="w", seeds=("http://127.0.0.1/",), http_client="twisted")).getlist("RETRY_EXCEPTIONS")
    assert any("handlers.http11." in str(e) for e in tx)
    assert aio == [e for e in tx if "handlers.http11." not in str(e)] and len(aio) >= 8


def test_aiohttp_handler_sends_request_headers_without_proxy_credentials():
    """The request's headers go out as they are, except Proxy-Authorization, which is dropped
    from a copy (the request keeps it, for the proxy)."""
    from scrapy import Request

    from crawler.upstream import AiohttpHandler

    plain = Request("http://127.0.0.1/a.jpg", headers={"Accept": "image/*", "User-Agent": "capcrawl"})
    assert AiohttpHandler._request_headers(plain) is plain.headers  # no copy when nothing is dropped
    assert AiohttpHandler._request_headers(plain).to_tuple_list() == [("Accept", "image/*"), ("User-Agent", "capcrawl")]
    proxied = Request("http://127.0.0.1/a.jpg", headers={"Accept": "image/*", "Proxy-Authorization": "Basic eDp5"})
    sent = AiohttpHandler._request_headers(proxied)
    assert sent.to_tuple_list() == [("Accept", "image/*")]
    assert proxied.headers.get("Proxy-Authorization") == b"Basic eDp5"


def test_page_urls_are_percent_encoded_and_unparsable_ones_kept_for_their_row():
    """A page's URLs as a browser sends them: one URL for 'a b.jpg' and 'a%20b.jpg'. An image
    URL that cannot be parsed keeps its text (its row says bad_url); a link that cannot is kept
    too, for the crawl to count; unusable schemes are dropped."""
    html = ('<base href="HTTP://Example.COM/dir/"><img src="a b.jpg" alt="1"><img src="a%20b.jpg" alt="2">'
            '<img src="caf\u00e9.jpg?q=\u00fc v" alt="3"><img src="http://[::1" alt="4"><img src="ftp://x/y.jpg" alt="5">'
            '<a href="p q.html#top">p</a><a href="http://h:99999/x.html">port</a><a href="mailto:x@y">m</a>')
    info = extract_page(html, "http://example.com/")
    assert [i.url for i in info.images] == [
        "http://example.com/dir/a%20b.jpg", "http://example.com/dir/a%20b.jpg",
        "http://example.com/dir/caf%C3%A9.jpg?q=%C3%BC%20v", "http://[::1"]
    assert info.links == ["http://example.com/dir/p%20q.html", "http://h:99999/x.html"]


def test_page_urls_as_a_browser_writes_them():
    """The query in the page's own encoding (the path in UTF-8; a character the encoding lacks
    as an encoded &#N;), backslashes before the query as slashes, percent escapes in upper case."""
    html = ('<img src="/sj/\u753b\u50cf.jpg?\u540d=\u5024" alt="1"><img src="a.jpg?q=\U0001f600" alt="2">'
            '<img src="\\back\\slash.jpg?x=\\y" alt="3"><img src="/pct-%c3%a9.jpg" alt="4">')
    urls = [i.url for i in extract_page(html, "http://h/p/", encoding="shift_jis").images]
    assert urls == ["http://h/sj/%E7%94%BB%E5%83%8F.jpg?%96%BC=%92l", "http://h/p/a.jpg?q=%26%23128512%3B",
                    "http://h/back/slash.jpg?x=%5Cy", "http://h/pct-%C3%A9.jpg"]
    # UTF-8 and UTF-16 pages (WHATWG: UTF-16's URLs are UTF-8) write the query in UTF-8
    for encoding in ("utf-8", "utf-16-le"):
        assert extract_page(html, "http://h/p/", encoding=encoding).images[0].url == \
            "http://h/sj/%E7%94%BB%E5%83%8F.jpg?%E5%90%8D=%E5%80%A4"


def test_a_shift_jis_pages_image_is_requested_as_a_browser_would(tmp_path, site):
    site.add("/", '<html><head><meta charset="shift_jis"></head><body><img src="/sj/\u753b\u50cf.jpg?\u540d=\u5024" '
             'alt="\u5915\u713c\u3051"></body></html>'.encode("shift_jis"), content_type="text/html")
    site.add("/sj/%E7%94%BB%E5%83%8F.jpg?%96%BC=%92l", jpeg(), content_type="image/jpeg")
    run_cli("crawl", site.url("/"), "--work", str(tmp_path), "--allow-private-addresses", check=True)
    [row] = crawl_rows(tmp_path)
    assert (row["url"], row["status"], row["alt"]) == (site.url("/sj/%E7%94%BB%E5%83%8F.jpg?%96%BC=%92l"), "ok", "\u5915\u713c\u3051")


def test_captions_lose_control_and_invisible_characters(tmp_path):
    """NUL, terminal escapes, a BOM, zero-width spaces and bidi overrides never reach a caption,
    from a page or from a URL list; zero-width joiners (emoji, Indic scripts) stay."""
    from common.text import clean_text
    from crawler.urllist import iter_url_list

    dirty = "\ufeffa purple\x01 square\x1b[31m red\x1b[0m\x00 \u202eevil\u202c and\u200b joined \U0001f469\u200d\U0001f4bb"
    clean = "a purple square red evil and joined \U0001f469\u200d\U0001f4bb"
    assert clean_text(dirty) == clean
    info = extract_page(f'<img src="/a.jpg" alt="{dirty}">', "http://example.com/")
    assert info.images[0].alt == clean
    (tmp_path / "l.jsonl").write_text(json.dumps({"url": "http://example.com/a.jpg", "text": dirty}) + "\n")
    [(url, caption)] = list(iter_url_list(tmp_path / "l.jsonl", "jsonl", caption_col="text"))
    assert caption == clean


def test_dot_segments_go_as_a_browser_drops_them():
    """``/a/../b.jpg`` written absolute or relative is one image, ``/b.jpg``; a query keeps its text."""
    info = extract_page('<img src="http://example.com/a/../b.jpg"><img src="./c/./d.jpg?x=/../">'
                        '<a href="http://example.com/p/..">up</a>', "http://example.com/dir/page.html")
    assert [i.url for i in info.images] == ["http://example.com/b.jpg", "http://example.com/dir/c/d.jpg?x=/../"]
    assert info.links == ["http://example.com/"]
    encoded = extract_page('<img src="/a/%2e%2e/e.jpg"><img src="/a/.%2E/f.jpg"><img src="/a/%2e/g.jpg"><img src="/a/x%2e/h.jpg">',
                           "http://example.com/dir/page.html")
    assert [i.url for i in encoded.images] == [  # %2e is a dot in a dot segment, and only there
        "http://example.com/e.jpg", "http://example.com/f.jpg", "http://example.com/a/g.jpg", "http://example.com/a/x%2E/h.jpg"]


@pytest.mark.parametrize("url, linked", [
    ("https://a.example/full/harbour.jpg", True),
    ("https://a.example/p/IMG_0001.JPEG?size=orig", True),  # the query names no file
    ("https://a.example/files/scan.tif", True),
    ("https://a.example/wiki/File:Fox.jpg", False),  # MediaWiki's description page
    ("https://a.example/wiki/Datei:Fuchs.png", False),
    ("https://a.example/download.php?file=a.jpg", False),
    ("https://a.example/photos/?C=N;O=D", False),  # an autoindex sort link
    ("https://a.example/logo.svg", False),  # not rasterised: not worth a request
    ("https://a.example/jpg", False),
])
def test_which_links_name_image_files(url, linked):
    from crawler.extract import is_image_link

    assert is_image_link(url) is linked
