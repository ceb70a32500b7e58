"""The Ray executor on a real local Ray (2 CPUs): download and filter give the local executor's records.

One Ray cluster is started for the module (in this process, loopback only); the commands run
as real ``capcrawl`` processes connecting to it with ``--ray-address``, except one download that
starts its own local Ray (no address).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.layout import CRAWL_DIR, INPUT_DIR, SCORED_DIR, STATS_FILE, emb_name, list_parts, shard_task_dir
from tests.conftest import ROOT, by_url, crawl_rows, jpeg, run_cli
from tests.filter_support import crawl_row, tiny_args, write_part

pytest.importorskip("ray")

IMG = "image/jpeg"
ALLOW = "--allow-private-addresses"


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray with 2 CPUs for the module's commands; its GCS address."""
    from capcrawl.ray_executor import import_ray

    ray = import_ray(local=True)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", object_store_memory=100 * 1024**2,
             logging_level="WARNING", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _site_list(site, tmp_path: Path, n_ok: int = 9) -> tuple[Path, list[str]]:
    """A URL list (csv, captions) over ``site``: images, a robots-disallowed URL, a 404, a page that
    is not an image, a bad URL and two repeats."""
    site.add("/robots.txt", "User-agent: *\nDisallow: /no/\n", content_type="text/plain")
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG) for i in range(n_ok)]
    site.add("/page.jpg", "<html>not an image</html>", content_type="text/html")
    urls[3:3] = [site.url("/no/x.jpg"), site.url("/img/missing.jpg"), site.url("/page.jpg"), "ftp://example.com/x.jpg"]
    urls += [urls[0], urls[5]]
    path = tmp_path / "urls.csv"
    path.write_text("url,text\n" + "".join(f"{u},caption {i}\n" for i, u in enumerate(urls)))
    return path, urls


def _records(work: Path) -> dict[str, tuple]:
    return {u: (r["status"], r["sha256"], r["caption_in"], r["image"]) for u, r in by_url(crawl_rows(work)).items()}


def _stats(work: Path, stage: str = CRAWL_DIR) -> dict:
    return json.loads((work / stage / STATS_FILE).read_text())


def _comparable(stats: dict) -> dict:
    return {k: stats[k] for k in ("mode", "images", "images_total", "pages", "skipped", "pending", "finish_reason", "complete")}


def test_download_on_ray_gives_the_local_records_and_reruns_skip_finished_shards(tmp_path, site, ray_address):
    lst, urls = _site_list(site, tmp_path)
    run_cli("download", str(lst), "--work", str(tmp_path / "local"), ALLOW, "--caption-col", "text", check=True)
    local = _records(tmp_path / "local")
    assert {s for s, *_ in local.values()} == {"ok", "robots", "http_404", "not_an_image", "bad_url"}

    # No --ray-address: the command starts (and stops) its own local Ray.
    work = tmp_path / "ray"
    args = ["download", str(lst), "--work", str(work), ALLOW, "--caption-col", "text", "--executor", "ray", "--shard-rows", "4"]
    run_cli(*args, check=True, timeout=240)
    assert _records(work) == local
    assert _comparable(_stats(work)) == _comparable(_stats(tmp_path / "local"))
    assert _stats(work)["skipped"] == {"duplicate_url": 2} and (work / CRAWL_DIR / "_SUCCESS").is_file()
    names = [p.name for p in list_parts(work / CRAWL_DIR)]
    assert names == [f"part-s{s:05d}-00000.parquet" for s in range(4)]  # 15 listed, 2 repeats: 13 URLs, 4 shards
    assert sorted(p.name for p in (work / CRAWL_DIR / INPUT_DIR).glob("*.done")) == [f"shard-{s:05d}.done" for s in range(4)]
    assert not (work / CRAWL_DIR / "_tasks").exists()
    assert site.requested("/no/x.jpg") == 0 and site.requested("/img/0.jpg") == 2  # once per executor

    # A rerun finds every shard complete: no task, no request.
    seen = len(site.log)
    run_cli(*args, "--ray-address", ray_address, check=True)
    assert len(site.log) == seen and _records(work) == local

    # A shard without its marker and parts is downloaded again, and only that shard. A shard whose
    # task fails on every try (its directory cannot be made) is reported, and the run exits 1.
    (work / CRAWL_DIR / INPUT_DIR / "shard-00001.done").unlink()
    (work / CRAWL_DIR / "part-s00001-00000.parquet").unlink()
    (work / CRAWL_DIR / INPUT_DIR / "shard-00002.done").unlink()
    blocker = shard_task_dir(work / CRAWL_DIR, 2)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    shard1 = pq.read_table(work / CRAWL_DIR / INPUT_DIR / "shard-00001.parquet").column("url").to_pylist()
    proc = run_cli(*args, "--ray-address", ray_address)
    assert proc.returncode == 1 and "1 input shard failed on every try" in proc.stderr, proc.stderr
    assert _stats(work)["failed_shards"] == [2] and not _stats(work)["complete"]
    again = [r.path for r in site.log[seen:] if r.path not in ("/robots.txt", "/ai.txt", "/.well-known/tdmrep.json")]  # once per host and task
    assert sorted(again) == sorted(u.split(str(site.port), 1)[1] for u in shard1 if u.startswith("http://127.0.0.1") and "/no/" not in u)

    # The next run retries it: its rows are in its parts already, so it fetches nothing.
    blocker.unlink()
    seen = len(site.log)
    run_cli(*args, "--ray-address", ray_address, check=True)
    assert len(site.log) == seen
    assert _records(work) == local
    assert _comparable(_stats(work)) == _comparable(_stats(tmp_path / "local"))
    assert not (work / CRAWL_DIR / "_tasks").exists()


def _shard_process(task_dir: Path) -> int | None:
    """The pid of the crawl process a task runs for ``task_dir`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"capcrawl.input_shards" in argv and str(task_dir).encode() in argv:
            return int(entry.name)
    return None


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the task's process in /proc")
def test_a_task_killed_mid_shard_is_retried_and_resumes(tmp_path, site, ray_address):
    """kill -9 of a shard's crawl process (a lost node, an OOM kill) fails its task; Ray retries
    it and the retry resumes from the parts the dead attempt finished: each URL is recorded once,
    and only the one that was in flight is requested again."""
    site.add("/robots.txt", "User-agent: *\n", content_type="text/plain")
    urls = [site.add(f"/img/{i}.jpg", jpeg(pattern=i + 1), content_type=IMG) for i in range(8)]
    slow = site.routes["/img/6.jpg"]
    slow.delay = 60.0  # held until the test kills the process waiting for it
    lst = tmp_path / "urls.txt"
    lst.write_text("\n".join(urls) + "\n")
    work = tmp_path / "w"
    cmd = [sys.executable, "-m", "capcrawl", "-q", "download", str(lst), "--work", str(work), ALLOW, "--executor", "ray",
           "--ray-address", ray_address, "--shard-rows", "4", "--part-rows", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        task_dir = shard_task_dir(work / CRAWL_DIR, 1)
        _wait_for(lambda: site.requested("/img/6.jpg"), 120, "the slow image to be requested")
        _wait_for(lambda: len(list_parts(task_dir / CRAWL_DIR)) == 3, 30, "the shard's other three rows")
        os.kill(_wait_for(lambda: _shard_process(task_dir), 10, "the shard's process"), signal.SIGKILL)
        slow.delay = 0.0
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    rows = by_url(crawl_rows(work))
    assert sorted(rows) == sorted(urls) and {r["status"] for r in rows.values()} == {"ok"}
    assert site.requested("/img/6.jpg") == 2
    assert [site.requested(f"/img/{i}.jpg") for i in (0, 1, 2, 3, 4, 5, 7)] == [1] * 7
    stats = _stats(work)
    assert stats["complete"] and stats["images"] == {"ok": 8}


def _assert_same_scored(got: pa.Table, want: pa.Table, name: str) -> None:
    """The same scored rows: every column equal, scores within float rounding. A local run batches
    images across parts and an actor one part at a time, and a matrix product over a batch of
    another size may differ in the last bits."""
    assert got.schema == want.schema and got.num_rows == want.num_rows, name
    for field in want.schema:
        a, b = got.column(field.name).to_pylist(), want.column(field.name).to_pylist()
        assert _close(a, b), (name, field.name, a, b)


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-4
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def test_filter_on_ray_actors_gives_the_local_outputs(tmp_path, tiny, ray_address):
    """Four parts scored by a pool of two CPU actors: the same scored parts and embeddings, and
    the same stats, as the local filter. Each actor holds one CPU and runs torch on one thread,
    so the local filter runs on one thread too (torch's sums on 1 and 2 threads differ in the
    last bits)."""
    rows = [
        crawl_row("circle", "red", 0, alt="a red circle"),
        crawl_row("circle", "red", 1, alt="a blue square", title_attr="red circle"),
        crawl_row("triangle", "green", 2, alt=None, context="Here is a green triangle."),
        crawl_row("star", "blue", 3, alt="", url="https://shapes.example/img/blue-star_01.jpg"),
        crawl_row(None, None, 4, image=b"\xff\xd8 not a jpeg", alt="a red circle"),
        crawl_row(None, None, 5, status="http_404"),
        crawl_row("square", "purple", 6, alt="a purple square"),
        crawl_row("cross", "yellow", 7, alt="a yellow cross"),
    ]
    for name in ("local", "ray"):
        for i in range(4):
            write_part(tmp_path / name, i, rows[2 * i : 2 * i + 2])
    run_cli("filter", "--work", str(tmp_path / "local"), *tiny_args(tiny), check=True, env={"OMP_NUM_THREADS": "1"})
    run_cli("filter", "--work", str(tmp_path / "ray"), *tiny_args(tiny), "--executor", "ray", "--ray-address", ray_address,
            check=True)
    local_parts = list_parts(tmp_path / "local" / SCORED_DIR)
    assert [p.name for p in local_parts] == [p.name for p in list_parts(tmp_path / "ray" / SCORED_DIR)]
    assert len(local_parts) == 4
    for part in local_parts:
        _assert_same_scored(pq.read_table(tmp_path / "ray" / SCORED_DIR / part.name), pq.read_table(part), part.name)
        a, b = (np.load(tmp_path / n / SCORED_DIR / emb_name(part)) for n in ("local", "ray"))
        assert a.shape == b.shape and np.allclose(a, b, atol=2e-3), part.name
    local, ray_stats = _stats(tmp_path / "local", SCORED_DIR), _stats(tmp_path / "ray", SCORED_DIR)
    assert {k: v for k, v in ray_stats.items() if k != "this_run"} == {k: v for k, v in local.items() if k != "this_run"}
    assert ray_stats["this_run"]["actors"] == 2 and ray_stats["this_run"]["parts_scored"] == 4
    # Each actor scores its two parts through one DataLoader, as the local filter scores its four.
    assert ray_stats["this_run"]["loaders"] == 2 and local["this_run"]["loaders"] == 1
    assert (tmp_path / "ray" / SCORED_DIR / "_SUCCESS").is_file()
    # Finished parts are not scored again.
    run_cli("filter", "--work", str(tmp_path / "ray"), *tiny_args(tiny), "--executor", "ray", "--ray-address", ray_address,
            check=True)
    assert _stats(tmp_path / "ray", SCORED_DIR)["this_run"]["parts_scored"] == 0


def test_filter_shares_are_contiguous_and_balanced():
    from capcrawl.ray_executor import shares

    parts = [Path(f"part-{i:05d}.parquet") for i in range(7)]
    cut = shares(parts, 3)
    assert [len(s) for s in cut] == [3, 2, 2]
    assert [p for s in cut for p in s] == parts
    assert shares(parts[:2], 4) == [[parts[0]], [parts[1]]]  # never an empty share


@pytest.mark.parametrize("argv,needle", [
    (["download", "L.txt", "--work", "w", "--executor", "spark"], "invalid choice: 'spark'"),
    (["download", "L.txt", "--work", "w", "--ray-address", "127.0.0.1:1"], "--ray-address needs --executor ray"),
    (["download", "L.txt", "--work", "w", "--executor", "ray", "--shard-rows", "0"], "--shard-rows must be greater than 0"),
    (["filter", "--work", "w", "--gpus-per-worker", "1"], "--gpus-per-worker needs --executor ray"),
    (["filter", "--work", "w", "--executor", "ray", "--device", "cpu", "--gpus-per-worker", "1"], "--device is cpu"),
    (["filter", "--work", "w", "--executor", "ray", "--device", "cuda:1", "--gpus-per-worker", "1"], "--device cuda:1"),
    (["crawl", "http://127.0.0.1:9/", "--work", "w", "--executor", "ray"], "unrecognized arguments: --executor"),
])
def test_cluster_options_are_checked_at_start_up(tmp_path, argv, needle):
    (tmp_path / "L.txt").write_text("http://127.0.0.1:9/a.jpg\n")
    proc = subprocess.run([sys.executable, "-m", "capcrawl", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


_WITHOUT_RAY = """
import sys
sys.modules["ray"] = None  # as if the cluster extra were not installed
from capcrawl.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["download", "filter"])
def test_executor_ray_without_the_extra_says_how_to_install_it(tmp_path, command):
    (tmp_path / "L.txt").write_text("http://127.0.0.1:9/a.jpg\n")
    argv = ["download", "L.txt", "--work", "w"] if command == "download" else ["filter", "--work", "w"]
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_RAY, *argv, "--executor", "ray"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "capcrawl: error: --executor ray needs Ray, which is not installed: pip install 'capcrawl[cluster]'."
    ), proc.stderr


_NO_RAY_IMPORTED = """
import sys
from capcrawl.cli import main
code = main(sys.argv[1:])
assert "ray" not in sys.modules, "a local download imported ray"
sys.exit(code)
"""


def test_the_local_executor_does_not_import_ray(tmp_path, site):
    url = site.add("/a.jpg", jpeg(), content_type=IMG)
    (tmp_path / "L.txt").write_text(url + "\n")
    proc = subprocess.run([sys.executable, "-c", _NO_RAY_IMPORTED, "-q", "download", "L.txt", "--work", "w", ALLOW],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert by_url(crawl_rows(tmp_path / "w"))[url]["status"] == "ok"


def test_cut_dedups_and_a_new_list_continues_the_shard_numbers(tmp_path):
    """Cutting is streamed, drops repeats (counted) and URLs already recorded, and a second list
    gets new shard numbers once the first list's shards are all complete."""
    from capcrawl import input_shards
    from common.errors import ConfigError
    from common.fileio import atomic_write_json
    from crawler.config import CrawlConfig

    first = tmp_path / "a.jsonl"
    first.write_text("".join(json.dumps({"url": f"http://h.example/{i % 7}.jpg", "c": f"c{i}"}) + "\n" for i in range(10)))
    config = CrawlConfig(work=str(tmp_path / "w"), url_list=str(first), caption_col="c", shard_rows=3, executor="ray")
    cut = input_shards.cut_url_list(config)
    assert (cut.shards, cut.rows, cut.duplicate_url) == ([0, 1, 2], (3, 3, 1), 3)
    shard0 = pq.read_table(input_shards.shard_path(config, 0)).to_pylist()
    assert shard0 == [{"url": f"http://h.example/{i}.jpg", "caption": f"c{i}"} for i in range(3)]
    assert input_shards.cut_url_list(config) == cut  # the same list: the same cut, not cut again

    second = tmp_path / "b.txt"
    second.write_text("http://h.example/1.jpg\nhttp://h.example/new.jpg\n")
    other = config.replace(url_list=str(second), input_format=None, caption_col=None)
    with pytest.raises(ConfigError, match="unfinished Ray download"):
        input_shards.cut_url_list(other)
    for s in cut.shards:
        atomic_write_json({"shard": s}, input_shards.done_path(config, s))
    crawl = tmp_path / "w" / CRAWL_DIR  # a URL recorded already is not cut again
    pq.write_table(pa.table({"url": ["http://h.example/1.jpg"], "status": ["ok"]}), crawl / "part-s00000-00000.parquet")
    cut2 = input_shards.cut_url_list(other)
    assert (cut2.shards, cut2.rows, cut2.already_recorded) == ([3], (1,), 1)


def test_ray_download_counts_urls_work_already_holds(tmp_path, site, ray_address):
    """A list downloaded on Ray into a WORK where a local download recorded some of its URLs:
    those are skipped/duplicate_url, as a local download counts them, beside the first list's."""
    urls = [site.add(f"/img/r{i}.jpg", jpeg(pattern=i + 1), content_type="image/jpeg") for i in range(4)]
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("\n".join([urls[0], urls[1], urls[0]]) + "\n")
    second.write_text("\n".join([urls[1], urls[2], urls[3], urls[2]]) + "\n")
    work = tmp_path / "w"
    run_cli("download", str(first), "--work", str(work), ALLOW, check=True)
    run_cli("download", str(second), "--work", str(work), ALLOW, "--executor", "ray", "--ray-address", ray_address,
            "--shard-rows", "2", check=True)
    stats = _stats(work)
    assert stats["images_total"] == 4 and stats["skipped"] == {"duplicate_url": 3}  # one repeat in each list, urls[1]
    assert stats["images_total"] + stats["skipped"]["duplicate_url"] == 7  # every line of both lists
