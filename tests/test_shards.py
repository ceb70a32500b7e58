"""Shards stage: hashing and index functions, dedup decisions, and shard round trips."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import ConfigError
from common.options import add_options, from_namespace
from common.records import SAMPLE_SCHEMA, SCHEMA_VERSION, DropReason, Status
from shards.config import ShardsConfig
from shards.dedup import greedy_survivors
from shards.near_index import near_pairs, near_pairs_between, plan_blocks
from common.phash import hamming, hex_to_uint64, uint64_to_hex
from shards.stage import run_shards
from tests.synthetic import encode, image_record, make_image, write_crawl_part, write_scored_part

REPO = Path(__file__).resolve().parents[1]


def distinct_records(n: int, start: int = 0, **fields) -> list[dict]:
    return [image_record(encode(make_image(start + i)), f"https://img.example.org/{start + i:03d}.jpg", **fields) for i in range(n)]


def run(work: Path, out: Path, **options) -> dict:
    return run_shards(ShardsConfig(work=work, out=out, **options))


def tars(out: Path) -> list[Path]:
    return sorted(out.glob("*.tar"))


def all_samples(out: Path) -> list[dict]:
    return [row for p in sorted(out.glob("[0-9]*.parquet")) for row in pq.read_table(p).to_pylist()]


def dedup_log(out: Path, run_number: int = 0) -> list[dict]:
    return pq.read_table(out / "dedup_log" / f"run-{run_number:05d}.parquet").to_pylist()


# --- pure functions ------------------------------------------------------------------


def test_hex_round_trip_and_invalid_values():
    hashes, valid = hex_to_uint64(["ffffffffffffffff", "0123456789abcdef", None, "xyz", "0000000000000001"])
    assert valid.tolist() == [True, True, False, False, True]
    assert uint64_to_hex(hashes[1]) == "0123456789abcdef"
    assert int(hamming(hashes[0], hashes[4])) == 63


def test_hex_parsing_of_arrow_columns_in_slices_matches_the_list_path():
    """A column longer than one slice, with nulls, bad digits, whitespace and wrong lengths in it,
    parses to what the plain (digit by digit) path gives."""
    rng = np.random.default_rng(7)
    values = [f"{int(v):016x}" for v in rng.integers(0, np.iinfo(np.uint64).max, 70_000, dtype=np.uint64, endpoint=True)]
    for i, bad in [(5, None), (70, "0123 56789abcdef"), (69_999, "g123456789abcdef"), (300, "abc"), (301, "ABCDEF0123456789")]:
        values[i] = bad
    column = pa.chunked_array([values[:30_000], values[30_000:]], pa.string())
    hashes, valid = hex_to_uint64(column)
    assert hashes.size == valid.size == len(values)
    assert valid[[5, 70, 69_999, 300]].tolist() == [False] * 4 and valid[301] and valid.sum() == len(values) - 4
    assert hashes[301] == np.uint64(0xABCDEF0123456789) and hashes[[5, 70, 300]].tolist() == [0, 0, 0]
    expected = [int(v, 16) if ok else 0 for v, ok in zip(values, valid.tolist())]
    assert hashes.tolist() == expected


@pytest.mark.parametrize("distance", [0, 1, 4, 8, 16])
def test_near_pairs_equals_brute_force(distance):
    rng = np.random.default_rng(distance)
    h = rng.integers(0, np.iinfo(np.uint64).max, 600, dtype=np.uint64, endpoint=True)
    flips = np.uint64(1) << rng.integers(0, 64, (200, distance or 1)).astype(np.uint64)
    h[400:] = h[:200] ^ np.bitwise_or.reduce(flips, axis=1)
    i, j = np.triu_indices(h.size, 1)
    close = hamming(h[i], h[j]) <= distance
    assert np.array_equal(near_pairs(h, distance), np.stack([i[close], j[close]], axis=1))


def test_near_pairs_between_and_plans():
    ref = np.array([0, 0xFF], dtype=np.uint64)
    queries = np.array([0x1, 0xF0F0F0F0, 0xFE], dtype=np.uint64)
    assert near_pairs_between(queries, ref, 2).tolist() == [[0, 0], [2, 1]]
    assert plan_blocks(10_000_000, 4).must_match >= plan_blocks(1000, 4).must_match
    with pytest.raises(ValueError):
        plan_blocks(10, 17)


def test_greedy_survivors_keeps_best_and_never_drops_published():
    # rank: node 0 published (-1); 1 best new, 2, 3. Edges 1-2, 2-3, 0-3.
    rank = np.array([-1, 0, 1, 2])
    dup = greedy_survivors(np.array([[1, 2], [2, 3], [0, 3]]), rank)
    assert dup.tolist() == [-1, -1, 1, 0]  # 3 is not dropped "because of" 2, which was itself dropped


# --- stage round trips ---------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[0, 1, 511, 512, 513], [10_000, 7, 1_000_000]])
def test_tar_stream_is_byte_identical_to_tarfile(tmp_path, sizes):
    """The shard writer's own ustar writer must give what tarfile gives for the same members."""
    import io

    from shards.writer import TAR_MTIME, TarStream

    rng = np.random.default_rng(len(sizes))
    members = [(f"{i:09d}.{ext}", rng.bytes(n)) for i, n in enumerate(sizes) for ext in ("jpg",)]
    members.append(("x" * 100, b"longest name ustar holds without a prefix"))
    with TarStream(tmp_path / "ours.tar") as ours:
        took = [ours.add(name, data) for name, data in members]
    with tarfile.open(tmp_path / "theirs.tar", "w", format=tarfile.USTAR_FORMAT) as theirs:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), TAR_MTIME, 0o444, 0, 0
            info.uname = info.gname = ""
            theirs.addfile(info, io.BytesIO(data))
    assert (tmp_path / "ours.tar").read_bytes() == (tmp_path / "theirs.tar").read_bytes()
    assert took == [512 + -(-len(d) // 512) * 512 for _, d in members]
    with pytest.raises(ValueError, match="does not fit"):
        TarStream(tmp_path / "bad.tar").add("y" * 101, b"")


def test_round_trip_rollover_and_stats(tmp_path):
    import webdataset as wds

    records = distinct_records(12)
    records[3]["fetched_at"] = None
    write_scored_part(tmp_path / "work", 0, records[:7])
    write_scored_part(tmp_path / "work", 1, records[7:] + [dict(records[0], url="https://x.org/rejected.jpg", kept=False, filter_reason="below_threshold", sha256="0" * 64)])
    out = tmp_path / "out"
    manifest = run(tmp_path / "work", out, samples_per_shard=5)

    assert [p.name for p in tars(out)] == ["00000.tar", "00001.tar", "00002.tar"]
    samples = list(wds.WebDataset([str(p) for p in tars(out)], shardshuffle=False).decode("pil"))
    assert len(samples) == 12
    by_url = {r["url"]: r for r in records}
    parquet_rows = {row["key"]: row for row in all_samples(out)}
    for s in samples:
        meta = s["json"]
        assert set(meta) == set(SAMPLE_SCHEMA.names)
        assert meta["key"] == s["__key__"]
        assert s["txt"] == by_url[meta["url"]]["caption"]
        assert s["jpg"].size == (64, 64)
        row = parquet_rows[meta["key"]]
        row["fetched_at"] = row["fetched_at"].isoformat() if row["fetched_at"] else None
        assert {k: v for k, v in row.items() if k != "clip_score"} == {k: v for k, v in meta.items() if k != "clip_score"}
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == 12 and keys[:6] == ["000000000", "000000001", "000000002", "000000003", "000000004", "000010000"]
    assert json.loads((out / "00002_stats.json").read_text())["samples"] == 2
    shard_stats = manifest["runs"][-1]["stages"]["shards"]
    assert shard_stats["written"] == 12 and shard_stats["not_kept"] == {"below_threshold": 1}
    assert shard_stats["input_rows"] == sum(shard_stats["not_kept"].values()) + sum(shard_stats["dropped"].values()) + 12
    assert manifest["schema_version"] == SCHEMA_VERSION and [s["name"] for s in manifest["shards"]] == ["00000", "00001", "00002"]
    with tarfile.open(tars(out)[0]) as tf:
        assert {(m.mtime, m.uid, m.gid, m.mode) for m in tf} == {(1_577_836_800, 0, 0, 0o444)}


def test_exact_and_near_duplicates_dropped_distinct_kept(tmp_path):
    base = [make_image(100 + i, size=128) for i in range(6)]
    records = [image_record(encode(im), f"https://a.org/{i}.jpg") for i, im in enumerate(base)]
    original = base[0]
    records += [
        image_record(encode(original), "https://mirror.org/0.jpg"),  # same bytes -> exact
        image_record(encode(original, quality=40), "https://b.org/q40.jpg"),  # re-encoded
        image_record(encode(original.resize((115, 115))), "https://b.org/small.jpg"),  # 90 %
        image_record(encode(base[1], fmt="png"), "https://b.org/1.png", image_format="png"),
    ]
    write_scored_part(tmp_path / "work", 0, records)
    out = tmp_path / "out"
    manifest = run(tmp_path / "work", out)

    kept = {row["url"] for row in all_samples(out)}
    assert kept == {f"https://a.org/{i}.jpg" for i in range(6)}
    dropped = manifest["runs"][-1]["stages"]["shards"]["dropped"]
    assert dropped == {DropReason.DUPLICATE_SHA256.value: 1, DropReason.NEAR_DUPLICATE.value: 3}
    log = {row["url"]: row for row in dedup_log(out)}
    assert log["https://mirror.org/0.jpg"]["duplicate_of_url"] == "https://a.org/0.jpg"
    assert log["https://b.org/small.jpg"]["duplicate_of_key"] == "000000000"
    assert log["https://b.org/1.png"]["duplicate_of_url"] == "https://a.org/1.jpg"


@pytest.mark.parametrize(
    "variants, expected",
    [
        ([{"license": None, "clip_score": 0.9}, {"license": "CC-BY-4.0", "clip_score": 0.2}], 1),
        ([{"clip_score": 0.2}, {"clip_score": 0.35}, {"clip_score": None}], 1),
        ([{"original_width": 100, "original_height": 100}, {"original_width": 300, "original_height": 200}], 1),
        ([{"url": "https://z.org/a.jpg"}, {"url": "https://b.org/a.jpg"}], 1),
    ],
)
def test_survivor_order(tmp_path, variants, expected):
    data = encode(make_image(7))
    records = [image_record(data, **{"url": f"https://site{i}.org/x.jpg", **v}) for i, v in enumerate(variants)]
    write_scored_part(tmp_path / "work", 0, records)
    run(tmp_path / "work", tmp_path / "out")
    assert [row["url"] for row in all_samples(tmp_path / "out")] == [records[expected]["url"]]


def test_semantic_dedup(tmp_path):
    records = distinct_records(5)
    emb = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float16)
    emb[3] = emb[1] * np.float16(2.0) + np.float16(0.01)  # same direction: cosine ~ 1
    records[3]["clip_score"] = 0.1
    write_scored_part(tmp_path / "work", 0, records, emb)
    run(tmp_path / "work", tmp_path / "plain")
    assert len(all_samples(tmp_path / "plain")) == 5
    manifest = run(tmp_path / "work", tmp_path / "sem", semantic_dedup=0.95)
    assert len(all_samples(tmp_path / "sem")) == 4
    assert manifest["runs"][-1]["stages"]["shards"]["dropped"] == {DropReason.SEMANTIC_DUPLICATE.value: 1}
    assert dedup_log(tmp_path / "sem")[0]["duplicate_of_url"] == records[1]["url"]
    assert np.load(tmp_path / "sem" / "index" / "00000.npy").shape == (4, 16)


def test_no_filter_reads_crawl_parts(tmp_path):
    recs = distinct_records(4)
    recs[0].update(alt="a red bicycle", caption_in="ignored")
    recs[1].update(alt="", caption_in="from the list")
    recs[2].update(alt=None, caption_in=None)
    recs[3].update(alt="  ", caption_in="listed")
    failed = {"url": "https://x.org/404.jpg", "status": "http_404", "fetched_at": None}
    write_crawl_part(tmp_path / "work", 0, recs + [failed])
    (tmp_path / "work" / "crawl" / "stats.json").write_text(json.dumps({"images": {"ok": 4, "http_404": 1}}))
    manifest = run(tmp_path / "work", tmp_path / "out", no_filter=True)
    rows = {r["url"]: r for r in all_samples(tmp_path / "out")}
    assert [(rows[r["url"]]["caption"], rows[r["url"]]["caption_source"]) for r in (recs[0], recs[1], recs[3])] == [
        ("a red bicycle", "alt"),
        ("from the list", "caption_in"),
        ("listed", "caption_in"),
    ]
    stats = manifest["runs"][-1]["stages"]
    assert stats["crawl"] == {"images": {"ok": 4, "http_404": 1}}
    assert stats["shards"]["status"] == {"http_404": 1, Status.OK.value: 4}
    assert stats["shards"]["dropped"] == {DropReason.NO_CAPTION.value: 1}
    assert {r["face_action"] for r in rows.values()} == {"unchecked"}  # no detection ran, and it says so
    assert manifest["respected"]["faces"]["samples_by_action"] == {"unchecked": 3}


def test_same_input_gives_byte_identical_shards(tmp_path):
    write_scored_part(tmp_path / "work", 0, distinct_records(7))
    for name in ("a", "b"):
        run(tmp_path / "work", tmp_path / name, samples_per_shard=4)
    for ext in ("tar", "parquet"):
        for a in sorted((tmp_path / "a").glob(f"*.{ext}")):
            assert a.read_bytes() == (tmp_path / "b" / a.name).read_bytes()


def test_incremental_append_skips_published_duplicates(tmp_path):
    first = distinct_records(4)
    write_scored_part(tmp_path / "w1", 0, first)
    out = tmp_path / "out"
    run(tmp_path / "w1", out, samples_per_shard=3)
    before = {r["key"]: r["url"] for r in all_samples(out)}

    # the same crawl row again (same URL, bytes and fetch time), and a copy under another URL
    again = [dict(first[0]), dict(first[1], url="https://elsewhere.org/1.jpg")]
    again.append(image_record(encode(make_image(2), quality=50), "https://b.org/2.jpg", license="CC0-1.0", clip_score=0.9))
    write_scored_part(tmp_path / "w2", 0, again + distinct_records(2, start=50))
    manifest = run(tmp_path / "w2", out, samples_per_shard=3)
    assert manifest["runs"][-1]["new_shards"] == ["00002"]
    after = {r["key"]: r["url"] for r in all_samples(out)}
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == ["000020000", "000020001"]
    stage = manifest["runs"][-1]["stages"]["shards"]
    assert stage["dropped"] == {"duplicate_sha256": 1, "near_duplicate": 1}
    assert stage["already_published"] == 1, "a row OUT already holds is no duplicate of itself"

    rerun = run(tmp_path / "w2", out, samples_per_shard=3)
    stage = rerun["runs"][-1]["stages"]["shards"]
    assert stage["written"] == 0 and stage["dropped"] == {} and stage["already_decided"] == 2
    assert len(tars(out)) == 3 and rerun["totals"]["samples"] == 6
    assert rerun["totals"]["dropped"] == {"duplicate_sha256": 1, "near_duplicate": 1}, "a rerun adds no drops"


def test_exception_mid_shard_leaves_no_final_tar(tmp_path, monkeypatch):
    import shards.writer as writer

    write_scored_part(tmp_path / "work", 0, distinct_records(7))
    real = writer.add_member
    calls = {"n": 0}

    def failing(tar, name, data):
        calls["n"] += 1
        if calls["n"] == 3 * 5 + 2:  # inside the second shard
            raise OSError("disk full")
        return real(tar, name, data)

    monkeypatch.setattr(writer, "add_member", failing)
    with pytest.raises(OSError):
        run(tmp_path / "work", tmp_path / "out", samples_per_shard=5)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "00001.tar" not in names and "00000.tar" in names
    assert not [n for n in names if n.endswith(".tmp")]


#: Each tar member written 20 ms late, so that a signal finds the writer mid-run.
_SLOW_WRITER = """
import sys, time
import shards.writer as writer
real = writer.add_member
def slow(tar, name, data):
    time.sleep(0.02)
    return real(tar, name, data)
writer.add_member = slow
"""
_SLOW_RUN = _SLOW_WRITER + """
from shards.config import ShardsConfig
from shards.stage import run_shards
run_shards(ShardsConfig(work=sys.argv[1], out=sys.argv[2], samples_per_shard=10))
"""


def test_sigkill_during_writing_leaves_only_complete_tars(tmp_path):
    write_scored_part(tmp_path / "work", 0, distinct_records(60))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(tmp_path / "work"), str(out)], env=env, cwd=REPO)
    deadline = time.monotonic() + 30
    while not (out / "00001.tar").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    present = tars(out)
    assert present, "the writer never finished a shard"
    for tar in present:
        with tarfile.open(tar) as tf:
            assert len(tf.getnames()) == 30  # 10 complete samples x 3 files
        assert (out / f"{tar.stem}.parquet").is_file()
    published = 10 * len(present)
    # what a kill while the dedup log is written leaves (the kill above came at another moment)
    (out / "dedup_log").mkdir(exist_ok=True)
    (out / "dedup_log" / ".run-00000.parquet.k1ll3d.tmp").write_bytes(b"PAR1")
    # A rerun cleans the leftovers and finishes the job without duplicating anything, and the
    # counts describe the dataset: the killed run's samples are no duplicates of themselves.
    manifest = run(tmp_path / "work", out, samples_per_shard=10)
    assert manifest["totals"]["samples"] == 60 and not list(out.rglob(".*.tmp"))
    stage = manifest["runs"][-1]["stages"]["shards"]
    assert (stage["already_published"], stage["written"], stage["dropped"]) == (published, 60 - published, {})
    assert manifest["totals"]["dropped"] == {} and manifest["totals"]["written"] == 60
    again = run(tmp_path / "work", out, samples_per_shard=10)
    assert again["totals"] == manifest["totals"] and again["runs"][-1]["stages"]["shards"]["written"] == 0


_SLOW_CLI = _SLOW_WRITER + """
from capcrawl.cli import run
sys.argv = ["capcrawl", "-q", "shards", "--work", sys.argv[1], "--out", sys.argv[2], "--samples-per-shard", "10"]
run()
"""


def test_sigterm_stops_shards_like_ctrl_c(tmp_path):
    """SIGTERM (a scheduler's stop, `kill`) to `capcrawl shards`: exit 130 with the note on how
    to resume, no temporary file left behind, and the rerun finishes the job."""
    write_scored_part(tmp_path / "work", 0, distinct_records(60))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CLI, str(tmp_path / "work"), str(out)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (out / "00001.tar").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().endswith("capcrawl: interrupted; run the same command again to resume."), err
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert 0 < len(tars(out)) < 6, "the signal came too late to test anything"
    manifest = run(tmp_path / "work", out, samples_per_shard=10)
    assert manifest["totals"]["samples"] == 60


# --- configuration -------------------------------------------------------------------


def _shards_config(work: Path, out: Path, *argv: str) -> ShardsConfig:
    """Parse ``argv`` through the real option parser of `capcrawl shards`."""
    parser = argparse.ArgumentParser()
    add_options(parser, ShardsConfig)
    return from_namespace(ShardsConfig, parser.parse_args(["--work", str(work), "--out", str(out), *argv]))


def test_cli_options_and_validation(tmp_path):
    write_scored_part(tmp_path / "work", 0, distinct_records(1))
    config = _shards_config(tmp_path / "work", tmp_path / "o", "--samples-per-shard", "100")
    assert (config.samples_per_shard, config.near_dup_distance, config.semantic_dedup) == (100, 4, None)
    for argv, needle in [
        (["--samples-per-shard", "10001"], "--samples-per-shard"),
        (["--near-dup-distance", "17"], "--near-dup-distance"),
        (["--semantic-dedup", "1.5"], "--semantic-dedup"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            _shards_config(tmp_path / "work", tmp_path / "o", *argv)
    with pytest.raises(ConfigError, match="embeddings"):  # checked when the stage starts: inputs may not exist yet
        _shards_config(tmp_path / "work", tmp_path / "o", "--semantic-dedup", "0.9").check_inputs()
    with pytest.raises(ConfigError, match="--no-filter"):
        _shards_config(tmp_path / "empty", tmp_path / "o").check_inputs()
    with pytest.raises(ConfigError, match="--no-filter"):
        run_shards(_shards_config(tmp_path / "empty", tmp_path / "o"))
    (tmp_path / "empty" / "scored").mkdir(parents=True)
    (tmp_path / "empty" / "scored" / "_SUCCESS").write_text("{}")  # the filter ran, on a crawl that found nothing
    with pytest.raises(ConfigError, match="recorded no image"):
        run_shards(_shards_config(tmp_path / "empty", tmp_path / "o"))


def test_license_policy(tmp_path):
    recs = distinct_records(9)
    ids = ["CC-BY-4.0", "CC-BY-NC-4.0", None, "CC0-1.0", "LicenseRef-PDM", "CC-BY-SA-3.0-DE", "CC-PDM-1.0",
           "LicenseRef-CC-BY-3.0-FR", "LicenseRef-CC-BY-NC-2.0-FR"]
    for rec, lic in zip(recs, ids):
        rec["license"] = lic
    write_scored_part(tmp_path / "work", 0, recs)
    manifest = run(tmp_path / "work", tmp_path / "out", licenses=("commercial",))
    written = {r["license"] for r in all_samples(tmp_path / "out")}
    assert written == {"CC-BY-4.0", "CC0-1.0", "LicenseRef-PDM", "CC-BY-SA-3.0-DE", "CC-PDM-1.0", "LicenseRef-CC-BY-3.0-FR"}
    assert manifest["totals"]["dropped"] == {"license_not_allowed": 2, "license_unknown": 1}
    lic = manifest["respected"]["licenses"]
    assert lic["policy"] == ["commercial"] and lic["samples_by_license"]["CC0-1.0"] == 1
    log = {r["url"]: r["detail"] for r in dedup_log(tmp_path / "out")}
    assert log[recs[1]["url"]] == "CC-BY-NC-4.0"
    # The same policy again decides those three again, and they count once; a run without it
    # publishes them: what a policy left out is not lost to that OUT.
    again = run(tmp_path / "work", tmp_path / "out", licenses=("commercial",))
    assert again["runs"][-1]["stages"]["shards"]["written"] == 0
    assert again["totals"]["dropped"] == {"license_not_allowed": 2, "license_unknown": 1}
    lifted = run(tmp_path / "work", tmp_path / "out")
    assert lifted["runs"][-1]["stages"]["shards"]["written"] == 3 and lifted["totals"]["samples"] == 9
    assert lifted["totals"]["dropped"] == {}
    # explicit ids and patterns; no policy changes nothing
    manifest = run(tmp_path / "work", tmp_path / "out2", licenses=("CC-BY-*", "cc0-1.0"))
    assert {r["license"] for r in all_samples(tmp_path / "out2")} == {  # CC-BY-* takes unlisted ports too
        "CC-BY-4.0", "CC-BY-NC-4.0", "CC0-1.0", "CC-BY-SA-3.0-DE", "LicenseRef-CC-BY-3.0-FR", "LicenseRef-CC-BY-NC-2.0-FR"}
    assert len(all_samples(tmp_path / "out3") if run(tmp_path / "work", tmp_path / "out3") else []) == 9
    with pytest.raises(ConfigError, match="--licenses"):
        ShardsConfig(work=tmp_path / "work", out=tmp_path / "o", licenses=("CC BY 4.0!",))


def test_an_out_that_cannot_be_made_is_one_line(tmp_path):
    write_scored_part(tmp_path / "work", 0, distinct_records(1))
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="Cannot write to OUT"):
        run_shards(ShardsConfig(work=tmp_path / "work", out=tmp_path / "file" / "out"))
    with pytest.raises(SystemExit):  # argparse: an empty policy is a mistake, not "no policy"
        _shards_config(tmp_path / "work", tmp_path / "o", "--licenses", ",")


def test_stage_entry_functions_survive_repeated_calls(tmp_path):
    """`shards.run` stays the stage's entry function after its first call (a submodule named
    `run` used to replace it on the package), and so do the other stages' `run`."""
    import crawler
    import filter as clip_filter
    import shards

    write_scored_part(tmp_path / "work", 0, distinct_records(2))
    for out in ("o1", "o2"):
        assert callable(shards.run) and shards.run(ShardsConfig(work=tmp_path / "work", out=tmp_path / out))["totals"]["samples"] == 2
    assert callable(shards.remove) and callable(crawler.run) and callable(clip_filter.run)


def test_the_card_names_every_work_directory_of_out(tmp_path):
    write_scored_part(tmp_path / "w1", 0, distinct_records(2))
    write_scored_part(tmp_path / "w2", 0, distinct_records(2, start=50))
    out = tmp_path / "out"
    run(tmp_path / "w1", out)
    assert "work directories" not in (out / "README.md").read_text()
    run(tmp_path / "w2", out)
    card = (out / "README.md").read_text()
    assert "OUT holds the samples of 2 work directories" in card
    assert f"`{tmp_path / 'w1'}`" in card and f"`{tmp_path / 'w2'}`" in card
