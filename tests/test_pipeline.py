"""The whole pipeline through the real CLI: `capcrawl run`, `remove`, rerun, and `demo`."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from capcrawl.demo import _DemoSite, build_demo_site

from .conftest import run_cli


def shard_samples(out: Path) -> list[dict]:
    tars = sorted(str(p) for p in out.glob("*.tar"))
    return list(wds.WebDataset(tars, shardshuffle=False).decode("pil")) if tars else []


@pytest.fixture
def demo_site(tmp_path):
    root = tmp_path / "site"
    planted = build_demo_site(root)
    with _DemoSite("127.0.0.1", root=root) as site:
        yield site, planted


def _run(site, tiny, work: Path, out: Path, *extra: str):
    model, ckpt = tiny
    return run_cli("run", site.url("/"), "--work", str(work), "--out", str(out), "--allow-private-addresses",
                   "--model", str(model), "--pretrained", str(ckpt), "--threshold", "0.5", "--workers", "0",
                   "--batch-size", "32", *extra, timeout=300)


def test_run_then_takedown_then_rerun(tmp_path, demo_site, tiny):
    site, planted = demo_site
    work, out = tmp_path / "work", tmp_path / "out"
    proc = _run(site, tiny, work, out)
    assert proc.returncode == 0, proc.stderr
    samples = shard_samples(out)
    metas = [s["json"] for s in samples]
    assert samples, proc.stdout
    # every sample is a real image with a caption and its provenance
    for s in samples:
        assert isinstance(s["jpg"], Image.Image) and s["jpg"].size[0] > 0
        assert s["txt"] == s["json"]["caption"] and s["json"]["key"] == s["__key__"]
        assert s["json"]["page_url"].startswith(site.base) and s["json"]["license"] == "CC-BY-4.0"
        assert s["json"]["kept"] is True and s["json"]["clip_score"] >= 0.5
    # deduplicated: the planted exact and near copies are gone
    assert len({m["sha256"] for m in metas}) == len(metas)
    assert not [m for m in metas if m["url"].endswith(("-copy.jpg", "-small.jpg"))] or len(metas) == len({m["phash"] for m in metas})
    # respect: the opted-out and robots-disallowed images never became samples; the latter was never requested
    assert not [m for m in metas if "optout" in m["url"] or "private" in m["url"]]
    assert site.requested("/private/secret.jpg") == 0
    # every caption is one of the row's own texts (or a filled one), named by where it came from
    for m in metas:
        source, caption = m["caption_source"], m["caption"]
        field = {"alt": "alt", "figcaption": "figcaption", "title": "title_attr"}.get(source)
        if field:
            assert caption == m[field], m
        elif source == "page_context":
            assert caption in m["context"], m
        else:
            assert source in ("page_title", "filename", "label", "generated"), m
    assert any(m["caption_source"] == "alt" for m in metas), "ten right alt texts were planted"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["samples"] == len(samples)
    assert manifest["stages"]["crawl"]["images"]["noai"] == 1 and manifest["stages"]["crawl"]["images"]["robots"] == 1

    # a takedown by page URL removes that page's samples and keeps the other keys
    page = site.url("/circles.html")
    gone = {m["key"] for m in metas if m["page_url"] == page}
    assert gone
    takedown = tmp_path / "takedown.txt"
    takedown.write_text(f"# request from the owner\n{page}\n")
    proc = run_cli("remove", str(out), "--takedown", str(takedown), check=True)
    after = {s["json"]["key"] for s in shard_samples(out)}
    assert after == {m["key"] for m in metas} - gone
    removals = [json.loads(line) for line in (out / "removals.jsonl").read_text().splitlines()]
    assert {r["key"] for r in removals} == gone

    # rerunning the same command resumes every stage, adds nothing and brings nothing back
    proc = _run(site, tiny, work, out)
    assert proc.returncode == 0, proc.stderr
    assert {s["json"]["key"] for s in shard_samples(out)} == after
    crawl_urls = [u for p in sorted((work / "crawl").glob("part-*.parquet")) for u in pq.read_table(p, columns=["url"]).column("url").to_pylist()]
    assert len(crawl_urls) == len(set(crawl_urls))

    # a fresh crawl into the same OUT applies OUT's blocklist: the taken-down page is never requested
    before = site.requested("/circles.html")
    proc = _run(site, tiny, tmp_path / "work2", out)
    assert proc.returncode == 0, proc.stderr
    assert site.requested("/circles.html") == before
    assert {s["json"]["key"] for s in shard_samples(out)} == after
    stats = json.loads((tmp_path / "work2" / "crawl" / "stats.json").read_text())
    assert stats["pages"]["blocked"] == 1


def test_run_without_weights_fails_before_crawling(tmp_path, site):
    site.add("/", "<img src='/a.jpg' alt='a'>")
    proc = run_cli("run", site.url("/"), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"),
                   "--allow-private-addresses", env={"HF_HOME": str(tmp_path / "hf")}, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--pretrained" in lines[0], proc.stderr
    assert site.log == [], "the crawl started although the model could not be loaded"
    assert not (tmp_path / "o").exists()


def test_demo_runs_end_to_end_offline(tmp_path, tiny_cache, tiny):
    proc = run_cli("demo", "--dir", str(tmp_path / "demo"), "--model-cache", str(tiny_cache), timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "demo" / "shards"
    with tarfile.open(out / "00000.tar") as tar:
        names = tar.getnames()
    assert names and any(n.endswith(".txt") for n in names)
    assert "samples from" in proc.stdout and "caption=" in proc.stdout
    report = tmp_path / "demo" / "shards" / "report" / "index.html"
    assert proc.stdout.strip().splitlines()[-1] == f"Open the report in a browser: {report.as_uri()}" and report.is_file()


def test_the_capcrawl_process_never_imports_pandas():
    """pyarrow asks pandas about every Python list it converts (importing it costs 0.35 s a
    process); the command hides it, and pyarrow's conversions still work without it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from capcrawl.__main__ import hide_pandas\n"
        "hide_pandas()\n"
        "import pyarrow as pa\n"
        "t = pa.table({'a': pa.array([1, None, 3]), 's': pa.array(['x', None, 'z'])})\n"
        "assert t.to_pylist()[1] == {'a': None, 's': None}\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('pandas') is not None  # lookups (torch makes them) do not fail\n"
        "try:\n"
        "    import pandas\n"
        "    raise SystemExit('pandas imported')\n"
        "except ImportError:\n"
        "    pass\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
