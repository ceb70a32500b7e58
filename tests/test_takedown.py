"""``capcrawl remove``: takedowns rewrite only affected shards and keep samples out of later runs."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from common.errors import ConfigError
from common.records import DropReason
from shards.blocklist import parse_takedown
from common.options import add_options, from_namespace
from shards.config import RemoveConfig, ShardsConfig
from shards.takedown import run_remove
from shards.stage import run_shards
from tests.synthetic import encode, image_record, make_image, write_scored_part


def build(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    """Ten samples over four shards; returns (work, out, records)."""
    records = []
    for i in range(10):
        page = "https://blog.example.com/post" if i in (2, 3) else f"https://pages.org/{i}"
        host = "cdn.badsite.net" if i == 5 else "img.org"
        records.append(image_record(encode(make_image(200 + i, size=96)), f"https://{host}/{i}.jpg", page_url=page))
    work = tmp_path / "work"
    write_scored_part(work, 0, records)
    out = tmp_path / "out"
    run_shards(ShardsConfig(work=work, out=out, samples_per_shard=3))
    return work, out, records


def samples(out: Path) -> dict[str, str]:
    return {r["key"]: r["url"] for p in sorted(out.glob("[0-9]*.parquet")) for r in pq.read_table(p).to_pylist()}


def tar_keys(out: Path) -> set[str]:
    keys = set()
    for tar in out.glob("*.tar"):
        with tarfile.open(tar) as tf:
            keys |= {name.split(".", 1)[0] for name in tf.getnames()}
    return keys


def test_takedown_every_kind_then_rerun_does_not_readd(tmp_path):
    work, out, records = build(tmp_path)
    before = samples(out)
    local = tmp_path / "my_photo.png"
    make_image(208, size=96).resize((80, 80)).save(local)  # the owner's copy of sample 8, not the same bytes
    takedown = tmp_path / "takedown.txt"
    takedown.write_text(
        "\n".join(
            [
                "# takedown requests",
                records[0]["url"],  # image URL
                "https://blog.example.com/post",  # page URL: samples 2 and 3
                "",
                "domain:badsite.net",  # sample 5 via its subdomain
                f"sha256:{records[7]['sha256'].upper()}",
                str(local),  # sample 8 by pHash
            ]
        )
    )
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    manifest = run_remove(_remove_config(out, "--takedown", str(takedown)))

    after = samples(out)
    removed_urls = {records[i]["url"] for i in (0, 2, 3, 5, 7, 8)}
    assert {k: v for k, v in before.items() if v not in removed_urls} == after  # other keys unchanged
    assert tar_keys(out) == set(after)
    assert manifest["totals"]["removed"] == {DropReason.BLOCKLISTED.value: 6}
    assert manifest["totals"]["samples"] == 4
    untouched = [n for n, s in stamps.items() if (out / n).stat().st_mtime_ns == s]
    assert untouched == ["00003.tar"]  # samples 9 only: never rewritten
    log = [json.loads(line) for line in (out / "removals.jsonl").read_text().splitlines()]
    assert {entry["url"] for entry in log} == removed_urls
    assert {entry["kind"] for entry in log} == {"url", "domain", "sha256", "phash"}
    stats = json.loads((out / "00001_stats.json").read_text())
    assert stats["samples"] == 1 and stats["removed"] == {"blocklisted": 2}
    assert len(pq.read_table(out / "index" / "00001.parquet")) == 1

    # A re-crawl brings the same images back, one of them under a new URL: none is re-added.
    write_scored_part(work, 1, [dict(records[8], url="https://new.org/8.jpg", final_url=None), dict(records[0], url="https://cdn.img.org/0.jpg")])
    rerun = run_shards(ShardsConfig(work=work, out=out, samples_per_shard=3))
    last = rerun["runs"][-1]["stages"]["shards"]
    assert last["written"] == 0
    assert last["dropped"] == {"blocklisted": 2}, "only the two new rows are decided; published and removed ones are not counted again"
    assert (last["already_published"], last["already_decided"]) == (4, 6)
    assert samples(out) == after
    assert rerun["totals"]["removed"] == {"blocklisted": 6} and rerun["totals"]["dropped"] == {"blocklisted": 2}


def test_takedown_of_nothing_changes_nothing(tmp_path):
    _, out, _ = build(tmp_path)
    takedown = tmp_path / "t.txt"
    takedown.write_text("https://nowhere.org/x.jpg\n")
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    manifest = run_remove(_remove_config(out, "--takedown", str(takedown)))
    assert manifest["removals"][-1]["shards_rewritten"] == []
    assert before == {p.name: p.read_bytes() for p in out.glob("*.tar")}
    assert "nowhere.org" in (out / "blocklist.jsonl").read_text()


def test_takedown_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("https://ok.org/a.jpg\nsha256:1234\n")
    with pytest.raises(ConfigError, match="Line 2"):
        parse_takedown(bad, 4)
    bad.write_text("no/such/file.jpg\n")
    with pytest.raises(ConfigError, match="Line 1"):
        parse_takedown(bad, 4)
    with pytest.raises(ConfigError, match="does not exist"):
        _remove_config(tmp_path / "missing", "--takedown", str(bad))


def _remove_config(out: Path, *argv: str) -> RemoveConfig:
    """Parse ``argv`` through the real option parser of `capcrawl remove OUT ...`."""
    parser = argparse.ArgumentParser()
    add_options(parser, RemoveConfig)
    return from_namespace(RemoveConfig, parser.parse_args([str(out), *argv]))


def test_a_takedown_covers_the_near_copies_kept_out_in_its_favour(tmp_path):
    """Removing a near-duplicate group's survivor by URL also keeps the copy that was dropped in
    its favour out of OUT, even when a later crawl brings that copy back as a new record."""
    original = image_record(encode(make_image(7, size=96)), "https://a.org/photo.jpg", license="CC0-1.0", clip_score=0.9)
    smaller = image_record(encode(make_image(7, size=96).resize((80, 80)), quality=60), "https://b.org/photo-small.jpg")
    work, out = tmp_path / "work", tmp_path / "out"
    write_scored_part(work, 0, [original, smaller])
    first = run_shards(ShardsConfig(work=work, out=out))
    assert first["totals"]["dropped"] == {"near_duplicate": 1} and set(samples(out).values()) == {original["url"]}
    takedown = tmp_path / "t.txt"
    takedown.write_text(original["url"] + "\n")
    run_remove(_remove_config(out, "--takedown", str(takedown)))
    kinds = {json.loads(line)["kind"] for line in (out / "blocklist.jsonl").read_text().splitlines()}
    assert kinds == {"url", "sha256", "phash"}, "the removed sample's bytes and picture are blocklisted too"
    # a new crawl of the copy (another fetch time): blocked by the derived pHash entry
    write_scored_part(work, 1, [dict(smaller, fetched_at=datetime(2025, 1, 2, tzinfo=timezone.utc))])
    again = run_shards(ShardsConfig(work=work, out=out))
    assert samples(out) == {} and again["runs"][-1]["stages"]["shards"]["dropped"] == {"blocklisted": 1}


def test_a_takedown_of_a_copys_url_takes_the_published_picture_out(tmp_path):
    """The owner asks by the URL where they found their picture; OUT published the same
    picture from another URL and dropped theirs as its duplicate. The published sample goes."""
    data = encode(make_image(9, size=96))
    kept = image_record(data, "https://mirror.example/pic.jpg", license="CC0-1.0", clip_score=0.9)
    theirs = image_record(data, "https://owner.example/pic.jpg")
    other = image_record(encode(make_image(10, size=96)), "https://owner.example/other.jpg")
    work, out = tmp_path / "work", tmp_path / "out"
    write_scored_part(work, 0, [kept, theirs, other])
    first = run_shards(ShardsConfig(work=work, out=out))
    assert first["totals"]["dropped"] == {"duplicate_sha256": 1}
    assert set(samples(out).values()) == {kept["url"], other["url"]}
    takedown = tmp_path / "t.txt"
    takedown.write_text(theirs["url"] + "\n")
    manifest = run_remove(_remove_config(out, "--takedown", str(takedown)))
    assert set(samples(out).values()) == {other["url"]}
    assert manifest["totals"]["removed"] == {"blocklisted": 1}


def test_a_takedown_url_matches_the_same_resource_written_another_way(tmp_path):
    """Requests are written by people: a space or its %20, %7E or ~, %33 or 3, dot segments, the
    default port, a fragment, upper-case scheme and host, query arguments in another order all
    name the crawled URL (as the crawl recorded it: percent-encoded, dot segments removed)."""
    from common.blocklist import BlockSet

    crawled = ["https://img.org/a%20b/~me/x3.jpg?s=1&t=2", "https://img.org/caf%C3%A9.jpg"]
    written = ["HTTPS://IMG.org:443/a b/%7Eme/./y/../x%33.jpg?t=2&s=1#top", "https://img.org/café.jpg"]
    for want, line in zip(crawled, written):
        takedown = tmp_path / "t.txt"
        takedown.write_text(line + "\n", encoding="utf-8")
        blocks = BlockSet(parse_takedown(takedown, 4))
        assert blocks.match_urls([want]) == line
        assert blocks.match_urls(["https://img.org/other.jpg", "http://img.org:8080/a%20b/~me/x3.jpg"]) is None
