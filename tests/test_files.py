"""Files capcrawl publishes: renamed into place whole, with the mode the user's umask gives."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest

from common.fileio import atomic_path, atomic_write_bytes, file_mode, final_name_of_temp, remove_stale_temps, temp_path

from .conftest import ROOT, jpeg, run_cli


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_atomic_path_publishes_with_the_umask_mode(tmp_path, umask_027):
    path = atomic_write_bytes(b"x", tmp_path / "a.bin")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 == file_mode()
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert not (tmp_path / "b.bin").exists() and list(tmp_path.iterdir()) == [path]


def test_stale_temps_are_removed_only_where_owned(tmp_path):
    mine, theirs = temp_path(tmp_path / "part-00001.parquet"), temp_path(tmp_path / "part-00002.parquet")
    (tmp_path / "part-00003.parquet").write_bytes(b"done")
    assert final_name_of_temp(mine.name) == "part-00001.parquet"
    removed = remove_stale_temps(tmp_path, lambda final: final == "part-00001.parquet")
    assert removed == [mine] and theirs.exists() and (tmp_path / "part-00003.parquet").exists()


def test_every_output_file_is_readable_as_the_umask_allows(tmp_path, site, tiny, umask_027):
    """Crawl parts, scored parts, embeddings, stats, markers, shards, indexes and the manifest
    all get 0640 under umask 027 (mkstemp alone would leave 0600)."""
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type="image/jpeg") for i in range(3)]
    (tmp_path / "urls.csv").write_text("url,caption\n" + "".join(f"{u},image number {i}\n" for i, u in enumerate(urls)))
    work, out = tmp_path / "work", tmp_path / "out"
    run_cli("download", str(tmp_path / "urls.csv"), "--caption-col", "caption", "--work", str(work),
            "--allow-private-addresses", check=True)
    model, ckpt = tiny
    run_cli("filter", "--work", str(work), "--model", str(model), "--pretrained", str(ckpt), "--device", "cpu",
            "--workers", "0", "--threshold", "-1", check=True)
    run_cli("shards", "--work", str(work), "--out", str(out), check=True)
    files = [p for root in (work, out) for p in root.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"part-00000.parquet", "emb-00000.npy", "stats.json", "_SUCCESS", "00000.tar",
                                        "00000.parquet", "00000_stats.json", "manifest.json"}
    wrong = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) != 0o640}
    assert wrong == {}


_CLEANING_UP = """
import os, signal, sys, time
from common.errors import INTERRUPTS
INTERRUPTS.install()
first, *more = [getattr(signal, name) for name in sys.argv[1].split(",")]
try:
    os.kill(os.getpid(), first)  # the handler runs before os.kill returns to this line
    print("not stopped", flush=True)
except KeyboardInterrupt as e:
    print(f"stopping {type(e).__name__}", flush=True)
    for sig in more:  # signals during the clean-up: each handled before the next is sent
        os.kill(os.getpid(), sig)
    print("cleaned up", flush=True)
    sys.exit(130)
"""


@pytest.mark.parametrize("signals, last", [
    ("SIGINT,SIGINT", "cleaned up"),   # the second is ignored: the clean-up finishes
    ("SIGTERM,SIGINT", "cleaned up"),
    ("SIGINT,SIGINT,SIGINT", "stopping KeyboardInterrupt"),  # the third: out at once
])
def test_a_stopping_command_finishes_its_clean_up(signals, last):
    proc = subprocess.run([sys.executable, "-c", _CLEANING_UP, signals], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    lines = proc.stdout.split()
    assert proc.stdout.splitlines()[-1] == last and "not" not in lines, proc.stdout
    assert ("Terminated" if signals.startswith("SIGTERM") else "KeyboardInterrupt") in proc.stdout
