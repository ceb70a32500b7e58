"""OUT read by other tools: Hugging Face `datasets` (through the dataset card), duckdb, and
open_clip models from the Hugging Face cache (`--model hf-hub:ORG/NAME`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from common.errors import ConfigError
from common.records import SAMPLE_SCHEMA
from shards.card import CARD_FILE, json_features
from shards.config import RemoveConfig, ShardsConfig

from .conftest import ROOT, run_cli
from .synthetic import encode, image_record, make_image, write_scored_part

#: The first samples have no title attribute, figcaption, candidates or faces; later ones do.
NULL_FIRST = 6


def _mixed_rows(n: int = 14) -> list[dict]:
    rows = []
    for i in range(n):
        text = i >= NULL_FIRST
        rows.append(image_record(
            encode(make_image(100 + i)), f"https://example.org/img/{i}.jpg",
            page_url="https://example.org/page.html",
            title_attr=f"title {i}" if text else None,
            figcaption=f"figure {i}" if text else None,
            license="CC-BY-4.0" if i % 2 else None,
            caption_candidates=[{"text": f"a caption for {i}", "source": "alt", "score": 0.3}] if text else None,
            face_bboxes=[[0.1, 0.1, 0.4, 0.5]] if i == n - 1 else None,
            face_scores=[0.9] if i == n - 1 else None,
        ))
    return rows


@pytest.fixture
def mixed_out(tmp_path) -> Path:
    """A finished OUT (two runs of the real shards stage, three shards) of samples with and without text fields."""
    from shards.stage import run_shards

    work, out = tmp_path / "work", tmp_path / "out"
    rows = _mixed_rows()
    write_scored_part(work, 0, rows[:10])
    run_shards(ShardsConfig(work=work, out=out, samples_per_shard=8))
    write_scored_part(work, 1, rows[10:])
    run_shards(ShardsConfig(work=work, out=out, samples_per_shard=8))
    return out


def _datasets(script: str, tmp_path: Path, timeout: float = 240) -> dict:
    """Run ``script`` (which prints one JSON line last) in a fresh offline process with its own HF cache."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_LOAD = """
import json, sys, datasets
ds = datasets.load_dataset(sys.argv[1] if len(sys.argv) > 1 else {out!r})
train = ds["train"]
print(json.dumps({{"splits": list(ds), "rows": train.num_rows, "columns": train.column_names,
    "keys": list(train["__key__"]), "txt": list(train["txt"]),
    "title_attr": [j["title_attr"] for j in train["json"]], "figcaption": [j["figcaption"] for j in train["json"]],
    "faces": [j["face_bboxes"] for j in train["json"]],
    "image_sizes": [list(im.size) for im in train["jpg"]]}}))
"""


def test_datasets_loads_out_with_no_arguments(mixed_out, tmp_path):
    manifest = json.loads((mixed_out / "manifest.json").read_text())
    got = _datasets(_LOAD.format(out=str(mixed_out)), tmp_path)
    assert got["splits"] == ["train"]
    assert got["rows"] == manifest["totals"]["samples"] == 14
    assert {"jpg", "json", "txt", "__key__"} <= set(got["columns"])
    by_key = {r["key"]: r for p in sorted(mixed_out.glob("*.parquet")) for r in pq.read_table(p).to_pylist()}
    # the text fields come back as written, nulls and all, after the null-only first samples
    assert [by_key[k]["title_attr"] for k in got["keys"]] == got["title_attr"]
    assert [by_key[k]["figcaption"] for k in got["keys"]] == got["figcaption"]
    assert sum(t is not None for t in got["title_attr"]) == 14 - NULL_FIRST
    assert [by_key[k]["caption"] for k in got["keys"]] == got["txt"]
    assert sum(f is not None for f in got["faces"]) == 1
    assert all(size == [64, 64] for size in got["image_sizes"])


def test_datasets_without_the_card_fails_as_the_issue_says(mixed_out, tmp_path):
    """What the card fixes: the webdataset builder infers null types from the first samples."""
    (mixed_out / CARD_FILE).unlink()
    script = f"""
import json, glob, datasets
try:
    datasets.load_dataset("webdataset", data_files={{"train": sorted(glob.glob({str(mixed_out)!r} + "/*.tar"))}}, split="train")
    print(json.dumps({{"error": None}}))
except Exception as e:
    chain = [e]
    while chain[-1].__cause__ or chain[-1].__context__:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    print(json.dumps({{"error": " <- ".join(f"{{type(x).__name__}}: {{x}}" for x in chain)}}))
"""
    got = _datasets(script, tmp_path)
    assert got["error"] and "to null" in got["error"], got


def test_duckdb_reads_the_shard_parquet_files(mixed_out):
    manifest = json.loads((mixed_out / "manifest.json").read_text())
    pattern = str(mixed_out / "*.parquet")
    [(count,)] = duckdb.sql(f"select count(*) from '{pattern}'").fetchall()
    assert count == manifest["totals"]["samples"] == 14
    [(titled,)] = duckdb.sql(f"select count(title_attr) from read_parquet('{pattern}', union_by_name=true)").fetchall()
    assert titled == 14 - NULL_FIRST


def test_card_features_are_the_sample_schema_as_datasets_reads_it(mixed_out):
    """The card's features parse as `datasets` Features equal to SAMPLE_SCHEMA's (timestamps: ISO strings)."""
    import datasets
    import pyarrow as pa

    text = (mixed_out / CARD_FILE).read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    features = datasets.Features._from_yaml_list(front["dataset_info"]["features"])
    as_json = pa.schema([pa.field(f.name, pa.string()) if pa.types.is_temporal(f.type) else f for f in SAMPLE_SCHEMA])
    assert features["json"] == datasets.Features.from_arrow_schema(as_json)
    assert isinstance(features["jpg"], datasets.Image)
    assert front["configs"][0]["data_files"] == [{"split": "train", "path": "*.tar"}]
    assert [f["name"] for f in json_features()] == SAMPLE_SCHEMA.names


def test_card_is_the_datasheet_and_follows_removals(mixed_out, tmp_path):
    from shards.takedown import run_remove

    card = (mixed_out / CARD_FILE).read_text()
    assert "**14 samples**" in card
    assert "| CC-BY-4.0 | 7 |" in card and "| unknown | 7 |" in card  # the licence mix
    assert "## Takedown requests" in card and "capcrawl remove" in card
    assert "- CLIP filter: settings not recorded" in card  # synthetic parts: no WORK/scored/stats.json
    takedown = tmp_path / "takedown.txt"
    takedown.write_text("https://example.org/img/3.jpg\n")
    run_remove(RemoveConfig(out=mixed_out, takedown=takedown))
    card = (mixed_out / CARD_FILE).read_text()
    assert "**13 samples**" in card and "Takedowns: 1 sample(s) removed" in card


# --- hf-hub:ORG/NAME models from the local Hugging Face cache --------------------------------


def _fake_hub_model(hub_cache: Path, repo: str = "capcrawl/tiny") -> dict[str, torch.Tensor]:
    """An open_clip repository in the hub cache's layout (snapshots/REV + refs/main); returns its weights."""
    import open_clip

    from capcrawl.tiny import TINY_CONFIG

    torch.manual_seed(3)
    model = open_clip.model.CLIP(**TINY_CONFIG)
    rev = "0123456789abcdef0123456789abcdef01234567"
    base = hub_cache / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / rev
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(rev)
    (snap / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}))
    state = model.state_dict()
    torch.save(state, snap / "open_clip_pytorch_model.bin")
    return state


def test_hf_hub_model_loads_from_the_local_cache_offline(tmp_path, monkeypatch):
    from filter.model import load_model

    state = _fake_hub_model(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model("hf-hub:capcrawl/tiny", "laion2b_s34b_b79k", "cpu", "fp32", cache_dir=str(tmp_path / "hub"))
    got = loaded.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items()), "the cached weights were not loaded"
    emb = loaded.encode_tokens(loaded.tokenizer(["a red circle"]))
    assert emb.shape == (1, 64)
    random = load_model("hf-hub:capcrawl/tiny", "none", "cpu", "fp32", cache_dir=str(tmp_path / "hub"))
    assert not torch.equal(random.model.state_dict()["text_projection"], state["text_projection"])


def test_hf_hub_model_absent_is_one_line(tmp_path, monkeypatch):
    from filter.model import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="hf-hub:capcrawl/absent .*HF_HUB_OFFLINE") as err:
        load_model("hf-hub:capcrawl/absent", None, "cpu", cache_dir=str(tmp_path / "hub"))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="hf-hub:ORG/NAME"):
        load_model("hf-hub:nonsense", None, "cpu")


def test_hf_hub_model_through_the_cli(tmp_path):
    """`capcrawl filter --model hf-hub:...` with HF_HOME's cache; absent: exit 2 and one line."""
    from .filter_support import crawl_row, write_part

    _fake_hub_model(tmp_path / "hf" / "hub")
    work = tmp_path / "work"
    write_part(work, 0, [crawl_row("circle", "red", 1, alt="a red circle")])
    env = {"HF_HOME": str(tmp_path / "hf")}
    proc = run_cli("filter", "--work", str(work), "--model", "hf-hub:capcrawl/tiny", "--device", "cpu", "--workers", "0",
                   "--threshold", "0.5", env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    scored = pq.read_table(work / "scored" / "part-00000.parquet", columns=["clip_score"]).column("clip_score").to_pylist()
    assert len(scored) == 1 and scored[0] is not None
    proc = run_cli("filter", "--work", str(work), "--model", "hf-hub:capcrawl/other", env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "hf-hub:capcrawl/other" in lines[0], proc.stderr


def test_the_readmes_reading_snippet_reads_every_sample(mixed_out, tmp_path):
    """The README's "Reading OUT" code, run as written (OUT being this OUT, three shards):
    each reader it shows sees every sample."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Reading OUT"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("\n```", section.index("```python"))]
    chunks = [c.replace('"OUT', '"' + str(mixed_out)).replace("'OUT", "'" + str(mixed_out))
              for c in code.split("\n\n")]
    assert len(chunks) == 3 and all(str(mixed_out) in c for c in chunks), chunks
    script = "import json\n" + "\n".join([
        chunks[0], "webdataset_samples = sum(1 for s in ds if s['jpg'].size == (64, 64) and s['txt'])",
        chunks[1], "datasets_rows = len(ds)",
        chunks[2].replace("duckdb.sql(", "rel = duckdb.sql(", 1), "duckdb_rows = sum(n for _, n in rel.fetchall())",
        "print(json.dumps([webdataset_samples, datasets_rows, duckdb_rows]))",
    ])
    manifest = json.loads((mixed_out / "manifest.json").read_text())
    assert len(list(mixed_out.glob("*.tar"))) == 3
    assert _datasets(script, tmp_path) == [manifest["totals"]["samples"]] * 3 == [14] * 3
