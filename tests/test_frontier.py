"""Crawl workers sharing one frontier in Redis: a real redis-server and real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capcrawl.localsite import LocalSite
from common.fileio import temp_path
from common.layout import list_parts, parse_part_name, part_name

from .conftest import ROOT, by_url, crawl_rows, jpeg, run_cli
from .test_crawl import IMG, page

REDIS = shutil.which("redis-server")
if REDIS is None and not os.environ.get("CI"):
    pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)", allow_module_level=True)
redis = pytest.importorskip("redis") if not os.environ.get("CI") else __import__("redis")

from crawler.frontier import Frontier, FrontierError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on loopback, its append-only file in ``directory`` (a restart keeps the data)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [REDIS, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory), "--save", "",
             "--appendonly", "yes", "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def worker(work: Path, frontier: str, k: int, *args: str) -> subprocess.Popen:
    """One crawl worker process: the ordinary command with --frontier and --worker-id."""
    return subprocess.Popen(
        [sys.executable, "-m", "capcrawl", "-q", "crawl", *args, "--work", str(work), "--frontier", frontier,
         "--worker-id", str(k), "--image-workers", "1"],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_all(procs: list[subprocess.Popen], timeout: float = 150) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("a worker did not finish in time")
    return codes


def stats_of(work: Path) -> dict:
    return json.loads((work / "crawl" / "stats.json").read_text())


def max_in_flight(entries) -> int:
    """The most requests the server was answering at once (from its log's arrival and answer times)."""
    events = sorted([(e.at, 1) for e in entries] + [(e.finished or float("inf"), -1) for e in entries],
                    key=lambda x: (x[0], x[1]))
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- the exactly-once core, against Redis directly ------------------------------------------------


def test_recovery_settles_commits_against_the_disk_and_fences_the_dead(redis_server, tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    urls = [f"http://img.example/{i}.jpg" for i in range(6)]
    a = Frontier(redis_server.url, crawl, lease_timeout=1.0, worker_id=0)
    assert a.connect("scope-1") == 0

    async def take() -> list:
        await a.admit(None, -1, 3, 100, [(u, {"url": u}, False) for u in urls], [])
        await a.admit(None, -1, 3, 100, [(urls[0], {"url": urls[0]}, False)], [])  # seen: not queued again
        return await a.lease(10)

    leased = asyncio.run(take())
    assert sorted(x.url for x in leased) == urls
    # Part 0 was renamed; part 1 was committed but the worker died before its rename; 4 and 5 are only leased.
    a.commit_part(0, urls[:2])
    (crawl / part_name(0, 0)).write_bytes(b"part 0")
    a.part_done(0)
    a.commit_part(1, urls[2:4])
    tmp1 = temp_path(crawl / part_name(1, 0))
    tmp2 = temp_path(crawl / part_name(2, 0))  # the open part: rows not committed
    a._stop.set()  # kill -9, as far as Redis can tell: no more heartbeats
    a._thread.join(5)
    redis_server.client().delete("capcrawl:alive:0")

    b = Frontier(redis_server.url, crawl, lease_timeout=1.0, worker_id=1)
    assert b.connect("scope-1") == 1
    status = b.status()
    assert status.dead == ["0"] and status.leased == 2 and status.committing == 1
    assert b.recover("0") == 4
    assert not tmp1.exists() and not tmp2.exists(), "the dead worker's temporary parts are removed"
    assert (crawl / part_name(0, 0)).exists()
    again = asyncio.run(b.lease(10))
    assert sorted(x.url for x in again) == urls[2:], "renamed rows are done, everything else goes back once"
    with pytest.raises(FrontierError, match="presumed dead"):
        a.commit_part(3, urls[4:])  # a late write of the fenced worker is refused
    with pytest.raises(Exception, match="other seeds or scope"):
        Frontier(redis_server.url, crawl, 1.0).connect("scope-2")


def test_host_gate_limits_in_flight_learns_crawl_delay_and_frees_dead_holders(redis_server, tmp_path):
    f = Frontier(redis_server.url, tmp_path, lease_timeout=5.0, worker_id=3)
    f.connect("scope")

    async def gate() -> None:
        t = f.token

        async def acquire(host: str, holder: str, limit: int, delay: int) -> int:
            """0 granted, >0 ms to wait, -1 full (one holder at a time)."""
            granted, wait = await f.gate_acquire(host, [holder], limit, delay, 60_000)
            return 0 if granted else wait

        assert await acquire("a", f"3|{t}|1", 2, 0) == 0
        assert await acquire("a", f"3|{t}|2", 2, 0) == 0
        assert await acquire("a", f"3|{t}|3", 2, 0) == -1, "a third request while two are in flight"
        f.release_soon("a", f"3|{t}|1")
        await f.flush_releases()
        assert await acquire("a", f"3|{t}|3", 2, 0) == 0
        # Several tokens in one call, never past the limit; none past it.
        assert await f.gate_acquire("e", [f"3|{t}|{i}" for i in range(20, 25)], 3, 0, 60_000) == (3, 0)
        assert (await f.gate_acquire("e", [f"3|{t}|30"], 3, 0, 60_000))[0] == 0
        # Crawl-delay unknown (-1, nobody read robots.txt): one request at a time.
        assert await acquire("b", f"3|{t}|4", 8, -1) == 0
        assert await acquire("b", f"3|{t}|5", 8, -1) == -1
        await f.gate_release("b", f"3|{t}|4", 0, 300)  # the robots.txt said Crawl-delay: 0.3
        wait = await acquire("b", f"3|{t}|5", 8, -1)
        assert 200 < wait <= 300
        await asyncio.sleep(wait / 1000 + 0.01)
        assert await f.gate_acquire("b", [f"3|{t}|5", f"3|{t}|6"], 8, -1, 60_000) == (1, 0), "one at a time under a delay"
        # Retry-After from a release holds every worker back.
        await f.gate_release("b", f"3|{t}|5", 500, -1)
        assert await acquire("b", f"3|{t}|7", 8, -1) > 300
        # A worker without a heartbeat holds nothing, nor does an earlier process with a live worker's id.
        assert await acquire("c", "9|y|1", 1, 0) == 0
        assert await acquire("c", f"3|{t}|7", 1, 0) == 0, "worker 9 is not alive: its token is freed"
        assert await acquire("c", "3|old|8", 1, 0) == -1
        assert await acquire("d", "3|old|9", 1, 0) == 0
        assert await acquire("d", f"3|{t}|10", 1, 0) == 0, "3|old is not this worker 3's token"
        await f.aclose()

    asyncio.run(gate())
    f.leave()


# --- workers crawling one site together ----------------------------------------------------------


def build_multi_host_site(a: LocalSite, b: LocalSite, c: LocalSite) -> None:
    """a: pages and images (robots Disallow), b: a Crawl-delay host in scope, c: a CDN for images."""
    a.add("/robots.txt", "User-agent: *\nDisallow: /private/\n", content_type="text/plain")
    b.add("/robots.txt", "User-agent: *\nCrawl-delay: 0.5\n", content_type="text/plain")
    pages = [f"/p/{i}.html" for i in range(8)]
    a.add("/", page("".join(f'<a href="{p}">p</a>' for p in pages) + '<a href="/private/x.html">x</a>'
                    '<a href="/noai.html">n</a><a href="http://127.0.0.9:9/elsewhere.html">off</a>'
                    f'<a href="{b.url("/b.html")}">b</a><a href="/deep/0.html">deep</a>'
                    # URLs that cannot be parsed or requested: counted, never requested, the page kept
                    '<a href="http://[zz/">v6</a><a href="http://127.0.0.1:70000/p.html">port</a>'
                    '<img src="http://127.0.0.1:99999/x.jpg" alt="port">'))
    for i, path in enumerate(pages):
        imgs = "".join(f'<img src="/img/{i}-{k}.jpg" alt="image {i} {k}">' for k in range(4))
        a.add(path, page(imgs + f'<img src="{c.url(f"/cdn/{i}.jpg")}" alt="cdn {i}"><img src="/img/missing{i}.jpg">'
                         '<img src="/private/secret.jpg" alt="s"><a href="/">home</a>'))
        for k in range(4):
            a.add(f"/img/{i}-{k}.jpg", jpeg((i * 30 % 255, k * 60, 90), pattern=i * 4 + k + 1), content_type=IMG,
                  delay=0.1)
        c.add(f"/cdn/{i}.jpg", jpeg("purple", pattern=i + 1), content_type=IMG, delay=0.05)
    a.add("/private/x.html", page("secret"))
    a.add("/private/secret.jpg", jpeg("black"), content_type=IMG)
    a.add("/noai.html", page('<img src="/img/optout.jpg" alt="o">', head='<meta name="robots" content="noimageai">'))
    b.add("/b.html", page('<img src="/b1.jpg" alt="b1"><img src="/b2.jpg" alt="b2">'))
    b.add("/b1.jpg", jpeg("yellow", pattern=3), content_type=IMG)
    b.add("/b2.jpg", jpeg("orange", pattern=4), content_type=IMG)
    for i in range(6):  # deeper than --max-depth
        a.add(f"/deep/{i}.html", page(f'<a href="/deep/{i + 1}.html">next</a><img src="/img/deep{i}.jpg" alt="d">'))
        a.add(f"/img/deep{i}.jpg", jpeg("gray", pattern=i + 7), content_type=IMG)


CRAWL_ARGS = ["--allow-private-addresses", "--allow-domain", "127.0.0.2", "--max-depth", "3", "--concurrency", "8",
              "--per-host-concurrency", "2", "--timeout", "5", "--lease-timeout", "5"]


@pytest.mark.slow
def test_three_workers_crawl_as_one_polite_process(tmp_path, redis_server):
    with LocalSite("127.0.0.1") as a, LocalSite("127.0.0.2") as b, LocalSite("127.0.0.3") as c:
        build_multi_host_site(a, b, c)
        single = tmp_path / "single"
        run_cli("crawl", a.url("/"), "--work", str(single), *CRAWL_ARGS, check=True)
        marks = {s: len(s.log) for s in (a, b, c)}
        cluster = tmp_path / "cluster"
        procs = [worker(cluster, redis_server.url, k, a.url("/"), *CRAWL_ARGS) for k in range(3)]
        codes = wait_all(procs)
        assert codes == [0, 0, 0], [p.stderr.read() for p in procs]
        logs = {s: s.log[marks[s]:] for s in (a, b, c)}

    expected = {u: r["status"] for u, r in by_url(crawl_rows(single)).items()}
    got = {u: r["status"] for u, r in by_url(crawl_rows(cluster)).items()}  # by_url: each URL once
    assert got == expected
    assert {"ok", "noai", "robots", "http_404", "bad_url"} <= set(got.values())
    workers = {parse_part_name(p.name)[0] for p in list_parts(cluster / "crawl")}
    assert len(workers) >= 2, f"the work was not shared: parts of workers {workers}"
    # Respect and politeness, from the servers' own logs.
    assert not [e.path for e in logs[a] if e.path.startswith("/private/")], "a robots-disallowed URL was requested"
    assert max_in_flight(logs[a]) == 2, "per-host in-flight requests across the workers (limit 2)"
    assert max_in_flight(logs[c]) <= 2
    times = sorted(e.at for e in logs[b])
    gaps = [round(y - x, 3) for x, y in zip(times, times[1:])]
    assert len(times) >= 4 and min(gaps) >= 0.45, f"Crawl-delay 0.5 s between any two requests to b: {gaps}"
    # stats.json: the whole crawl, and each worker's share.
    one, many = stats_of(single), stats_of(cluster)
    assert many["complete"] and many["pending"] == 0 and (cluster / "crawl" / "_SUCCESS").is_file()
    assert many["images"] == one["images"] and many["pages"] == one["pages"] and one["pages"]["bad_url"] == 2
    assert sorted(many["workers"]) == ["0", "1", "2"]
    assert sum(w["images_total"] for w in many["workers"].values()) == many["images_total"] == len(got)


def test_a_cluster_crawl_takes_every_seed_as_a_page_and_fetches_linked_images(tmp_path, redis_server, site):
    """As the one-process crawl: a seed named like a file (MediaWiki's File:X.jpg) is a page, and
    a link to an image file is fetched as an image."""
    site.add("/wiki/File:Sunset.jpg", page('<img src="/upload/sunset.jpg" alt="Sunset over the sea">'
                                           '<a href="/upload/full.jpg">full size</a>'))
    site.add("/upload/sunset.jpg", jpeg(pattern=3), content_type=IMG)
    site.add("/upload/full.jpg", jpeg(size=(300, 200), pattern=5), content_type=IMG)
    procs = [worker(tmp_path / "w", redis_server.url, 0, site.url("/wiki/File:Sunset.jpg"), "--allow-private-addresses")]
    assert wait_all(procs) == [0], procs[0].stderr.read()
    rows = by_url(crawl_rows(tmp_path / "w"))
    assert {u: r["status"] for u, r in rows.items()} == {site.url("/upload/sunset.jpg"): "ok", site.url("/upload/full.jpg"): "ok"}
    assert stats_of(tmp_path / "w")["complete"]


def _chain_site(site: LocalSite, pages: int = 30, per_page: int = 5, delay: float = 0.05) -> set[str]:
    expected = set()
    for p in range(pages):
        imgs = "".join(f'<img src="/img/{p}-{i}.jpg" alt="image {p} {i}">' for i in range(per_page))
        nxt = f'<a href="/p/{p + 1}.html">next</a>' if p + 1 < pages else ""
        site.add(f"/p/{p}.html", page(imgs + nxt))
        for i in range(per_page):
            site.add(f"/img/{p}-{i}.jpg", jpeg((p * 8 % 255, i * 50, 90), pattern=i + 1), content_type=IMG, delay=delay)
            expected.add(site.url(f"/img/{p}-{i}.jpg"))
    return expected


CHAIN_ARGS = ["--allow-private-addresses", "--max-depth", "100", "--concurrency", "4", "--per-host-concurrency", "4",
              "--part-rows", "5", "--lease-timeout", "2", "--no-autothrottle"]


def _parts_of(work: Path, k: int) -> int:
    return sum(1 for p in list_parts(work / "crawl") if parse_part_name(p.name)[0] == k)


@pytest.mark.slow
def test_kill_9_of_one_worker_loses_nothing(tmp_path, redis_server, site):
    expected = _chain_site(site)
    work = tmp_path / "w"
    procs = [worker(work, redis_server.url, k, site.url("/p/0.html"), *CHAIN_ARGS) for k in range(2)]
    wait_for(lambda: _parts_of(work, 0) >= 2, 60, "worker 0's first parts")
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait(10)
    assert wait_all(procs[1:]) == [0], procs[1].stderr.read()
    rows = by_url(crawl_rows(work))  # each URL once
    assert set(rows) == expected and all(r["status"] == "ok" for r in rows.values())
    assert not list((work / "crawl").glob(".part-w00-*.tmp")), "the dead worker's temporary part was left behind"
    stats = stats_of(work)
    assert stats["complete"] and stats["images"] == {"ok": len(expected)}
    assert stats["workers"]["1"]["images_total"] > 0


@pytest.mark.slow
def test_kill_every_worker_then_restart_resumes(tmp_path, redis_server, site):
    expected = _chain_site(site)
    work = tmp_path / "w"
    args = [site.url("/p/0.html"), *CHAIN_ARGS]
    procs = [worker(work, redis_server.url, k, *args) for k in range(2)]
    wait_for(lambda: len(list_parts(work / "crawl")) >= 4, 60, "the first parts")
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    before = {r["url"] for r in crawl_rows(work)}
    assert 0 < len(before) < len(expected), "the kill came too late to test anything"
    procs = [worker(work, redis_server.url, k, *args) for k in range(2)]
    assert wait_all(procs) == [0, 0], [p.stderr.read() for p in procs]
    rows = by_url(crawl_rows(work))
    assert set(rows) == expected
    assert not [u for u in before if site.requested(u.removeprefix(site.base)) > 1], "a recorded image was fetched again"
    assert stats_of(work)["complete"]


@pytest.mark.slow
def test_redis_stopped_mid_run_is_a_clear_error_and_a_rerun_completes(tmp_path, site):
    """Through `--workers 2`, which starts a private redis-server under WORK/redis."""
    expected = _chain_site(site, pages=20)
    work = tmp_path / "w"
    args = [sys.executable, "-m", "capcrawl", "-q", "crawl", site.url("/p/0.html"), "--work", str(work), "--workers", "2",
            *CHAIN_ARGS]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(list_parts(work / "crawl")) >= 2, 60, "the first parts")
    pid = int((work / "redis" / "redis.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    try:
        out, err = run.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        run.kill()
        raise AssertionError("the workers hung after Redis stopped")
    assert "private frontier redis://127.0.0.1:" in err
    assert run.returncode == 75, err
    assert "lost the frontier" in err and "run the same command again" in err
    assert not list((work / "crawl").glob(".*.tmp")), "a half-written part was left behind"
    first = crawl_rows(work)  # every part reads
    assert len(first) < len(expected)
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert again.returncode == 0, again.stderr
    rows = by_url(crawl_rows(work))
    assert set(rows) == expected and stats_of(work)["complete"]


def test_cluster_errors_are_one_line(tmp_path):
    url = "http://127.0.0.1:9/"
    missing = run_cli("crawl", url, "--work", str(tmp_path), "--workers", "2", env={"PATH": "/nonexistent"})
    assert missing.returncode == 2 and "apt-get install redis-server" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    bad = run_cli("crawl", url, "--work", str(tmp_path), "--frontier", "http://x")
    assert bad.returncode == 2 and "--frontier takes a Redis URL" in bad.stderr
    gone = run_cli("crawl", url, "--work", str(tmp_path), "--frontier", f"redis://127.0.0.1:{_free_port()}/0")
    assert gone.returncode == 75 and "cannot reach the frontier" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1
    listed = run_cli("download", str(tmp_path / "x.txt"), "--work", str(tmp_path), "--frontier", "redis://h:1/0")
    assert listed.returncode == 2


def test_workers_command_lines():
    from capcrawl.cluster import exit_code, worker_argv

    argv = ["-v", "crawl", "http://a/", "--work", "W", "--workers", "3", "--max-depth", "2"]
    assert worker_argv(argv, "redis://127.0.0.1:7/0", 2, 4) == [
        "-q", "-v", "crawl", "--image-workers", "4", "--frontier", "redis://127.0.0.1:7/0", "--worker-id", "2",
        "http://a/", "--work", "W", "--max-depth", "2"]
    shared = ["crawl", "http://a/", "--workers=2", "--frontier", "redis://h:1/0"]
    assert worker_argv(shared, None, None, None) == ["-q", "crawl", "http://a/", "--frontier", "redis://h:1/0"], \
        "on a shared frontier each worker takes a free id (several machines may run --workers)"
    assert exit_code([0, 130, 75]) == 75 and exit_code([0, 130]) == 130 and exit_code([0, 1]) == 1 and exit_code([0]) == 0


@pytest.mark.slow
def test_a_worker_presumed_dead_that_comes_back_is_fenced(tmp_path, redis_server, site):
    """SIGSTOP a worker past the lease timeout: the other takes its work over; woken, it records nothing more."""
    expected = _chain_site(site, pages=20)
    work = tmp_path / "w"
    procs = [worker(work, redis_server.url, k, site.url("/p/0.html"), *CHAIN_ARGS) for k in range(2)]
    def leased() -> int:
        return redis_server.client().hlen("capcrawl:lease:0")

    for _ in range(20):  # stop it while it holds work (it may commit its leases just before the signal)
        wait_for(lambda: _parts_of(work, 0) >= 1 and leased() >= 3, 60, "worker 0 holding work")
        procs[0].send_signal(signal.SIGSTOP)
        if leased():
            break
        procs[0].send_signal(signal.SIGCONT)
    assert leased(), "worker 0 was never stopped holding work"
    try:
        wait_for(lambda: redis_server.client().get("capcrawl:token:0") is None, 60, "worker 0 to be fenced")
    finally:
        procs[0].send_signal(signal.SIGCONT)
    assert procs[0].wait(60) == 75
    assert "presumed dead" in procs[0].stderr.read()
    assert wait_all(procs[1:]) == [0], procs[1].stderr.read()
    rows = by_url(crawl_rows(work))  # each URL once, though both workers held some of them
    assert set(rows) == expected
    assert stats_of(work)["complete"]
