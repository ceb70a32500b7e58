"""The filter stage with real open_clip models: the project's tiny CLIP (trained once per session) and a tiny CoCa."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from crawler.records import (
    SCORED_DIR,
    SCORED_SCHEMA,
    STATS_FILE,
    CaptionSource,
    ConfigError,
    FilterReason,
    emb_name,
    part_name,
)
from filter import columns as col
from filter.candidates import Candidate, filename_words, row_candidates, split_sentences
from filter.model import check_generation_support, load_model
from filter.stage import FilterStage, decide, run_filter, select_parts
from filter.tiny import COLORS, SHAPES, TINY_THRESHOLD, caption_for, ensure_tiny_model, heldout_accuracy, render_shape
from tests.filter_support import crawl_row, filter_config, tiny_args, write_part

ROOT = Path(__file__).resolve().parent.parent


def _scored(work: Path, index: int = 0):
    return pq.read_table(work / SCORED_DIR / part_name(index))


# --- pure functions ----------------------------------------------------------------------------


def test_filename_words():
    assert filename_words("https://x.example/a/red-circle_01.jpg") == "red circle"
    assert filename_words("https://x.example/IMG_1234.JPG?size=2") == "IMG"
    assert filename_words("https://x.example/blue%20star.v2.png") == "blue star v"
    assert filename_words(None) == ""


def test_sentences_and_row_candidates():
    assert split_sentences("Welcome to our shop. Here is a red circle!  Contact us") == [
        "Welcome to our shop.", "Here is a red circle!", "Contact us",
    ]
    cands = row_candidates({
        col.FIGCAPTION: "A red circle", col.TITLE_ATTR: "a red circle", col.CONTEXT: "Nice. Really nice.",
        col.PAGE_TITLE: "Shapes", col.URL: "https://x.example/red-circle.jpg", col.CAPTION_IN: None,
    })
    assert [(c.text, c.source) for c in cands] == [
        ("A red circle", CaptionSource.FIGCAPTION),  # the title attribute repeats it and is dropped
        ("Nice.", CaptionSource.PAGE_CONTEXT),
        ("Really nice.", CaptionSource.PAGE_CONTEXT),
        ("Shapes", CaptionSource.PAGE_TITLE),
        ("red circle", CaptionSource.FILENAME),
    ]


def test_decide():
    best = Candidate("a red circle", CaptionSource.TITLE)
    assert decide("a red circle", 0.9, None, float("nan"), 0.5, 0.5).source is CaptionSource.ALT
    replaced = decide("a blue square", 0.1, best, 0.8, 0.5, 0.5)
    assert (replaced.caption, replaced.source, replaced.kept) == ("a red circle", CaptionSource.TITLE, True)
    dropped = decide("a blue square", 0.1, best, 0.3, 0.5, 0.5)
    assert (dropped.caption, dropped.kept, dropped.reason) == ("a blue square", False, FilterReason.BELOW_THRESHOLD)
    assert decide("", float("nan"), None, float("nan"), 0.5, 0.5).reason is FilterReason.NO_CANDIDATE
    # a fill threshold under the keep threshold: the caption is filled but the row is not kept
    low = decide("", float("nan"), best, 0.4, 0.5, 0.3)
    assert (low.caption, low.kept, low.reason) == ("a red circle", False, FilterReason.BELOW_THRESHOLD)


def test_select_parts():
    parts = [Path(part_name(i)) for i in range(5)]
    assert [p.name for p in select_parts(parts, 1, 2)] == [part_name(1), part_name(3)]
    assert sorted(select_parts(parts, 0, 2) + select_parts(parts, 1, 2)) == parts


def test_coca_transformers_version_check():
    check_generation_support("4.56.2")
    for bad in ("4.57.0", "5.0.1"):
        with pytest.raises(ConfigError, match=r"capcrawl\[coca\]"):
            check_generation_support(bad)


def test_render_shape_variety():
    a = render_shape("star", "red", 128, rng=1)
    assert a.size == (128, 128) and a.mode == "RGB"
    assert np.asarray(a).tobytes() == np.asarray(render_shape("star", "red", 128, rng=1)).tobytes()
    assert np.asarray(a).tobytes() != np.asarray(render_shape("star", "red", 128, rng=2)).tobytes()
    assert caption_for("circle", "red") == "a red circle"
    with pytest.raises(ValueError):
        render_shape("hexagon", "red")


# --- the tiny model ------------------------------------------------------------------------------


def test_tiny_model_loads_through_public_path_and_ranks_captions(tiny):
    config_json, checkpoint = tiny
    loaded = load_model(str(config_json), str(checkpoint), "cpu", "fp32")
    assert heldout_accuracy(loaded.model, loaded.tokenizer, loaded.preprocess, seed=99) >= 0.95
    assert ensure_tiny_model(config_json.parent.parent) == tiny  # cached: no retraining


# --- the stage end to end ----------------------------------------------------------------------


def _demo_rows() -> list[dict]:
    return [
        crawl_row("circle", "red", 0, alt="a red circle"),
        crawl_row("circle", "red", 1, alt="a blue square", title_attr="red circle"),
        crawl_row("circle", "red", 2, alt="a blue square"),
        crawl_row("triangle", "green", 3, alt=None,
                  context="Welcome to our shop. Here is a green triangle. Contact us for more information."),
        crawl_row("star", "blue", 4, alt="", url="https://shapes.example/img/blue-star_01.jpg"),
        crawl_row(None, None, 5, image=b"\xff\xd8 definitely not a jpeg", alt="a red circle"),
        crawl_row(None, None, 6, status="http_404"),
        crawl_row("cross", "yellow", 7, alt=None),
        crawl_row("square", "purple", 8, alt="a purple square", context="Contact us."),
    ]


#: What each decodable image of :func:`_demo_rows` shows, by file name.
_TRUTH = {
    "0000.jpg": "a red circle", "0001.jpg": "a red circle", "0002.jpg": "a red circle", "0003.jpg": "a green triangle",
    "blue-star_01.jpg": "a blue star", "0007.jpg": "a yellow cross", "0008.jpg": "a purple square",
}


@pytest.fixture
def scored_work(tiny, tmp_path) -> Path:
    write_part(tmp_path, 0, _demo_rows())
    stats = run_filter(filter_config(tmp_path, *tiny_args(tiny)))
    assert stats["this_run"]["parts_scored"] == 1
    return tmp_path


def test_scores_keeps_fills_and_drops(scored_work):
    t = _scored(scored_work)
    assert t.schema.equals(SCORED_SCHEMA, check_metadata=False)
    rows = t.to_pylist()
    assert [r[col.URL].rsplit("/", 1)[1] for r in rows] == [
        "0000.jpg", "0001.jpg", "0002.jpg", "0003.jpg", "blue-star_01.jpg", "0005.jpg", "0007.jpg", "0008.jpg",
    ], "the http_404 row is not scored; every ok row stays, kept or not"
    by = {r[col.URL].rsplit("/", 1)[1]: r for r in rows}

    good = by["0000.jpg"]
    assert good[col.KEPT] and good[col.CAPTION] == "a red circle" and good[col.CAPTION_SOURCE] == "alt"
    assert good[col.CLIP_SCORE] == pytest.approx(good[col.ALT_SCORE]) and good[col.CLIP_SCORE] > 0.7

    replaced = by["0001.jpg"]  # wrong alt, the title attribute says better
    assert replaced[col.ALT] == "a blue square", "the original alt is untouched"
    assert replaced[col.ALT_SCORE] < TINY_THRESHOLD
    assert (replaced[col.CAPTION], replaced[col.CAPTION_SOURCE], replaced[col.KEPT]) == ("red circle", "title", True)

    dropped = by["0002.jpg"]  # wrong alt and nothing better
    assert not dropped[col.KEPT] and dropped[col.FILTER_REASON] == FilterReason.BELOW_THRESHOLD.value
    assert dropped[col.CAPTION] == "a blue square" and dropped[col.CLIP_SCORE] < TINY_THRESHOLD

    filled = by["0003.jpg"]  # no alt: the right page-context sentence wins
    assert (filled[col.CAPTION], filled[col.CAPTION_SOURCE]) == ("Here is a green triangle.", "page_context")
    assert filled[col.KEPT] and filled[col.ALT_SCORE] is None

    named = by["blue-star_01.jpg"]  # empty alt: the file name
    assert (named[col.CAPTION], named[col.CAPTION_SOURCE], named[col.KEPT]) == ("blue star", "filename", True)

    broken = by["0005.jpg"]
    assert (broken[col.KEPT], broken[col.FILTER_REASON], broken[col.CLIP_SCORE]) == (False, "decode_error", None)

    nothing = by["0007.jpg"]
    assert (nothing[col.KEPT], nothing[col.FILTER_REASON], nothing[col.CAPTION]) == (False, "no_candidate", None)
    assert by["0008.jpg"][col.KEPT]

    stats = json.loads((scored_work / SCORED_DIR / STATS_FILE).read_text())
    assert (stats["rows"], stats["kept"]) == (8, 5)
    assert stats["filter_reason"] == {"below_threshold": 1, "decode_error": 1, "no_candidate": 1}
    assert stats["caption_source"] == {"alt": 2, "filename": 1, "page_context": 1, "title": 1}
    assert stats["threshold"] == TINY_THRESHOLD and stats["model"].endswith(".json")


def test_embeddings_line_up_with_rows(scored_work, tiny):
    t = _scored(scored_work)
    emb = np.load(scored_work / SCORED_DIR / emb_name(part_name(0)))
    assert emb.dtype == np.float16 and emb.shape[0] == t.num_rows and emb.shape[1] > 0
    reasons = t.column(col.FILTER_REASON).to_pylist()
    assert all((emb[i] == 0).all() == (r == "decode_error") for i, r in enumerate(reasons))
    loaded = load_model(str(tiny[0]), str(tiny[1]), "cpu", "fp32")
    truth = [_TRUTH.get(u.rsplit("/", 1)[1]) for u in t.column(col.URL).to_pylist()]
    texts = sorted({c for c in truth if c})
    text = loaded.encode_tokens(loaded.tokenizer(texts)).numpy()
    decoded = [i for i, c in enumerate(truth) if c]
    sims = emb[decoded].astype(np.float32) @ text.T
    assert [texts[j] for j in sims.argmax(axis=1)] == [truth[i] for i in decoded], "row i's embedding is row i's image"
    kept = [i for i, k in enumerate(t.column(col.KEPT).to_pylist()) if k]
    captions = loaded.encode_tokens(loaded.tokenizer([t.column(col.CAPTION)[i].as_py() for i in kept])).numpy()
    np.testing.assert_allclose(
        (emb[kept].astype(np.float32) * captions).sum(1), t.column(col.CLIP_SCORE).to_numpy()[kept], atol=5e-3
    )


def test_resume_skips_finished_parts(scored_work, tiny):
    out = scored_work / SCORED_DIR / part_name(0)
    before = out.stat().st_mtime_ns
    write_part(scored_work, 1, [crawl_row("star", "green", 10, alt="a green star")])
    stats = run_filter(filter_config(scored_work, *tiny_args(tiny)))
    assert stats["this_run"]["parts_skipped"] == 1 and stats["this_run"]["parts_scored"] == 1
    assert out.stat().st_mtime_ns == before
    assert (stats["parts"], stats["rows"], stats["kept"]) == (2, 9, 6), "stats cover every scored part"
    again = run_filter(filter_config(scored_work, *tiny_args(tiny)))
    assert again["this_run"]["parts_scored"] == 0 and again["this_run"]["parts_skipped"] == 2


def test_shards_split_the_parts(tiny, tmp_path):
    for i in range(3):
        write_part(tmp_path, i, [crawl_row("circle", "blue", i, alt="a blue circle")])
    one = run_filter(filter_config(tmp_path, *tiny_args(tiny, "--shard-index", "1", "--num-shards", "2")))
    assert one["this_run"]["parts_selected"] == 1
    assert [p.name for p in sorted((tmp_path / SCORED_DIR).glob("part-*"))] == [part_name(1)]
    zero = run_filter(filter_config(tmp_path, *tiny_args(tiny, "--shard-index", "0", "--num-shards", "2", "--no-embeddings")))
    assert zero["this_run"]["parts_scored"] == 2 and zero["parts"] == 3
    assert not (tmp_path / SCORED_DIR / emb_name(part_name(0))).exists()


def test_label_bank(tiny, tmp_path):
    bank = tmp_path / "labels.txt"
    bank.write_text("# shapes\n" + "\n".join(f"{c} {s}" for s in SHAPES for c in COLORS) + "\n")
    write_part(tmp_path, 0, [crawl_row("cross", "yellow", 0, alt=None, context="Contact us.")])
    run_filter(filter_config(tmp_path, *tiny_args(tiny, "--label-bank", str(bank))))
    row = _scored(tmp_path).to_pylist()[0]
    assert (row[col.CAPTION], row[col.CAPTION_SOURCE], row[col.KEPT]) == ("a photo of yellow cross.", "label", True)


def test_deterministic_on_cpu_with_and_without_workers(tiny, tmp_path):
    rows = _demo_rows()
    tables, embs = [], []
    for name, workers in (("a", "0"), ("b", "2")):
        write_part(tmp_path / name, 0, rows)
        run_filter(filter_config(tmp_path / name, *tiny_args(tiny), "--workers", workers, "--batch-size", "3"))
        tables.append(_scored(tmp_path / name))
        embs.append(np.load(tmp_path / name / SCORED_DIR / emb_name(part_name(0))))
    assert tables[0].equals(tables[1])
    assert np.array_equal(embs[0], embs[1])


def test_text_embeddings_are_cached(tiny, tmp_path):
    write_part(tmp_path, 0, [crawl_row("circle", "red", i, alt="a red circle") for i in range(6)])
    stage = FilterStage(filter_config(tmp_path, *tiny_args(tiny)))
    stats = stage.run()
    assert stats["kept"] == 6
    assert stage.texts.encoded == 1, "six identical alts go through the text tower once"


# --- configuration and start-up failures ------------------------------------------------------


def test_offline_default_model_fails_at_startup(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache, whatever the machine holds
    write_part(tmp_path, 0, [crawl_row("circle", "red", 0, alt="a red circle")])
    with pytest.raises(ConfigError) as err:
        run_filter(filter_config(tmp_path, "--device", "cpu", "--model-cache-dir", str(tmp_path / "hf")))
    message = str(err.value)
    assert "\n" not in message and "--pretrained" in message and "laion2b_s34b_b79k" in message
    assert isinstance(err.value.__cause__, Exception) or err.value.__cause__ is None
    assert not (tmp_path / SCORED_DIR).exists(), "nothing is written before the model loads"


def test_offline_default_model_cli_exits_with_one_line(tmp_path):
    (tmp_path / "crawl").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "filter", "--work", str(tmp_path), "--device", "cpu", "--log-level", "ERROR"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "pass --pretrained" in proc.stderr


@pytest.mark.parametrize("pretrained, match", [
    ("/nonexistent/weights.pt", "does not exist"),
    ("no_such_tag", "not a known tag"),
])
def test_bad_pretrained_fails(tiny, tmp_path, pretrained, match):
    args = tiny_args(tiny)
    args[args.index("--pretrained") + 1] = pretrained
    with pytest.raises(ConfigError, match=match):
        run_filter(filter_config(tmp_path, *args))


def test_corrupt_or_mismatched_checkpoint_fails(tiny, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, other)
    for bad in (junk, other):
        args = tiny_args(tiny)
        args[args.index("--pretrained") + 1] = str(bad)
        with pytest.raises(ConfigError, match="pass a checkpoint saved for this exact architecture") as err:
            run_filter(filter_config(tmp_path, *args))
        assert err.value.__cause__ is not None


@pytest.mark.parametrize("argv, match", [
    (["--shard-index", "2", "--num-shards", "2"], "--shard-index"),
    (["--label-template", "a photo"], "needs a"),
    (["--threshold", "1.5"], "outside"),
    (["--batch-size", "0"], "at least 1"),
    (["--precision", "fp16", "--device", "cpu"], "not supported on CPU"),
    (["--device", "tpu"], "--device"),
    (["--model", "No-Such-Model", "--pretrained", "none"], None),
])
def test_config_validation(tmp_path, argv, match):
    with pytest.raises(ConfigError, match=match):
        config = filter_config(tmp_path, *argv)
        FilterStage(config)  # model-level checks (unknown --model) happen at start-up


def test_missing_label_bank(tmp_path):
    with pytest.raises(ConfigError, match="label-bank"):
        filter_config(tmp_path, "--label-bank", str(tmp_path / "nope.txt"))


# --- CoCa ---------------------------------------------------------------------------------------

_TINY_COCA = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 1,
                   "attentional_pool": True, "attn_pooler_queries": 8, "attn_pooler_heads": 2, "output_tokens": True},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                 "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                       "attn_pooler_heads": 2},
    "custom_text": True,
}


def test_random_coca_has_no_uninitialised_weights(tmp_path):
    """open_clip leaves a random CoCa's decoder projection as torch.empty left it (zeros, NaN or
    garbage, whatever the allocator hands back; the suite once hit NaN); load_model fills it
    the way open_clip fills its text towers' projections: N(0, width^-1/2)."""
    from filter.model import load_model

    config_json = tmp_path / "tiny-coca.json"
    config_json.write_text(json.dumps(_TINY_COCA))
    net = load_model(str(config_json), "none", device="cpu").model
    assert all(torch.isfinite(t).all() for t in net.state_dict().values() if t.is_floating_point())
    projection = net.text_decoder.text_projection.detach()
    expected = projection.shape[0] ** -0.5
    assert 0.8 * expected < float(projection.std()) < 1.2 * expected and abs(float(projection.mean())) < 0.01


def test_coca_generated_caption_plumbing(tmp_path):
    pytest.importorskip("transformers", reason="CoCa generation needs the capcrawl[coca] extra")
    config_json = tmp_path / "tiny-coca.json"
    config_json.write_text(json.dumps(_TINY_COCA))
    write_part(tmp_path, 0, [
        crawl_row("circle", "red", 0, alt=None),
        crawl_row("star", "blue", 1, alt=None, url="https://shapes.example/img/7.jpg"),
    ])
    torch.manual_seed(0)  # random weights: the plumbing, not the caption quality, is under test
    args = ["--model", str(config_json), "--pretrained", "none", "--device", "cpu", "--workers", "0",
            "--threshold", "-1", "--fill-threshold", "-1"]
    stats = run_filter(filter_config(tmp_path, *args))
    rows = _scored(tmp_path).to_pylist()
    assert [r[col.CAPTION_SOURCE] for r in rows] == ["generated", "generated"]
    assert all(isinstance(r[col.CAPTION], str) and r[col.CAPTION] for r in rows)
    assert stats["caption_source"] == {"generated": 2}
    with pytest.raises(ConfigError, match="not one"):
        FilterStage(filter_config(tmp_path, "--model", "RN50", "--pretrained", "none", "--device", "cpu",
                                  "--generate", "yes"))
