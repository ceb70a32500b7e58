"""Shared fixtures: real HTTP servers on loopback, a runner for the real `capcrawl` CLI, images."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from capcrawl.localsite import LocalSite
from common.layout import CRAWL_DIR, list_parts

ROOT = Path(__file__).resolve().parent.parent


def jpeg(color: str | tuple = "red", size: tuple[int, int] = (120, 90), quality: int = 90, pattern: int = 0) -> bytes:
    """A real JPEG; ``pattern`` draws distinct content so images differ in pHash too."""
    img = Image.new("RGB", size, color)
    if pattern:
        from PIL import ImageDraw

        d = ImageDraw.Draw(img)
        for i in range(pattern):
            d.rectangle([i * 7 % size[0], i * 13 % size[1], i * 7 % size[0] + size[0] // 4, i * 13 % size[1] + 10], fill=(i * 40 % 255, 255 - i * 30 % 255, i * 90 % 255))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png(color: str = "green", size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """Where the project's tiny open_clip model is trained once per session ($CAPCRAWL_TEST_CACHE to keep it)."""
    return Path(os.environ.get("CAPCRAWL_TEST_CACHE") or tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny(tiny_cache) -> tuple[Path, Path]:
    """(config JSON, checkpoint) of the tiny model, trained on synthetic shapes.

    ``CAPCRAWL_TINY_SEED`` trains another checkpoint (as another CPU would): the tests must
    pass with any checkpoint that meets the model's held-out gates.
    """
    from capcrawl.tiny import ensure_tiny_model

    seed = os.environ.get("CAPCRAWL_TINY_SEED")
    return ensure_tiny_model(tiny_cache, seed=int(seed)) if seed else ensure_tiny_model(tiny_cache)


@pytest.fixture
def site():
    with LocalSite("127.0.0.1") as s:
        yield s


@pytest.fixture
def other_site():
    with LocalSite("127.0.0.2") as s:
        yield s


def run_cli(*args: str, timeout: float = 180, env: dict | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `capcrawl` command (`python -m capcrawl`, its entry point) in a fresh process."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "capcrawl", "-q", *args],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"capcrawl {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def crawl_rows(work: Path) -> list[dict]:
    """All crawl rows of a work directory (image bytes included)."""
    parts = list_parts(Path(work) / CRAWL_DIR)
    if not parts:
        return []
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist()


def by_url(rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in rows:
        assert r["url"] not in out, f"{r['url']} recorded twice"
        out[r["url"]] = r
    return out
