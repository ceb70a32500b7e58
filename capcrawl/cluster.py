"""``capcrawl crawl SEEDS --work WORK --workers N``: N crawl processes on this machine sharing one frontier.

One crawl process tops out near one event loop's worth of images a second; N processes on
one big machine get past it. Each is the ordinary command with ``--frontier URL --worker-id
K`` (crawler/frontier.py), so a worker started here is no different from one started by hand
on another machine. Without ``--frontier`` a private ``redis-server`` is started for the run,
bound to 127.0.0.1, keeping its data (append-only file) in WORK/redis so that the same command
run again resumes; it is stopped when the workers are done.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.errors import ConfigError, Terminated
from crawler.config import CrawlConfig
from crawler.frontier import EXIT_FRONTIER_LOST
from crawler.stats import read_stats

log = logging.getLogger(__name__)

REDIS_DIR = "redis"
REDIS_MISSING = ("--workers without --frontier starts a private redis-server, and none is installed: apt-get install "
                 "redis-server (Debian, Ubuntu), brew install redis (macOS), or pass --frontier redis://HOST:PORT/DB")
#: Seconds the workers get to stop after Ctrl-C before they are killed.
STOP_GRACE = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A redis-server for one crawl, on loopback, its append-only data in ``directory``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(REDIS_MISSING)
        self.directory.mkdir(parents=True, exist_ok=True)
        pidfile = self.directory / "redis.pid"
        if pidfile.is_file():
            try:
                pid = int(pidfile.read_text().strip())
                os.kill(pid, 0)
            except (ValueError, OSError):
                pidfile.unlink(missing_ok=True)
            else:
                raise ConfigError(f"a redis-server (pid {pid}) still serves {self.directory}; stop it first "
                                  f"(kill {pid}) or pass its URL with --frontier")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory.resolve()),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--pidfile", str(pidfile.resolve()),
             "--logfile", "redis.log", "--daemonize", "no", "--protected-mode", "yes"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C stops the workers first; the server is stopped after them
        )
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"redis-server did not start; see {self.directory / 'redis.log'}")
            time.sleep(0.05)
        return self.url

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_argv(argv: Sequence[str], frontier: str | None, worker: int | None, image_workers: int | None) -> list[str]:
    """A worker's command line: the user's, less ``--workers N``, plus the private frontier and the
    worker's id (none on a shared frontier: each worker takes the lowest id no live worker holds,
    so that ``--workers 4`` on several machines never asks for the same ids)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    command = out.index("crawl")
    out[command + 1:command + 1] = (["--frontier", frontier] if frontier else []) + (
        ["--worker-id", str(worker)] if worker is not None else [])
    if image_workers:
        out[command + 1:command + 1] = ["--image-workers", str(image_workers)]
    return ["-q", *out]


def exit_code(codes: Sequence[int]) -> int:
    """The run's status: a lost frontier (rerun), then an interruption, then any other failure."""
    for wanted in (EXIT_FRONTIER_LOST, 130):
        if wanted in codes:
            return wanted
    return next((c for c in codes if c), 0)


def run_workers(config: CrawlConfig, argv: Sequence[str]) -> tuple[int, dict[str, Any]]:
    """Start ``config.worker_processes`` crawl processes (and a private Redis when there is no --frontier);
    wait for them; return the run's exit code and WORK/crawl/stats.json."""
    n = config.worker_processes
    image_workers = None if config.image_workers else max(1, (os.cpu_count() or 1) // n)
    server = None
    frontier = config.frontier
    if frontier is None:
        server = PrivateRedis(Path(config.work) / REDIS_DIR)
        frontier_url = server.start()
        print(f"capcrawl: private frontier {frontier_url} (redis-server pid {server.proc.pid}, data in "
              f"{server.directory}); it stops when the workers do, and the same command resumes from it", file=sys.stderr)
    else:
        frontier_url = frontier
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "capcrawl",
                 *worker_argv(argv, None if frontier else frontier_url, None if frontier else k, image_workers)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,  # each worker's summary is in stats.json
            )
            for k in range(n)
        ]
        codes = _wait(procs)
    finally:
        if server is not None:
            server.stop()
    return exit_code(codes), read_stats(config.crawl_dir)


def _wait(procs: list[subprocess.Popen]) -> list[int]:
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt as e:
        # Ctrl-C: the terminal sent SIGINT to the workers too. SIGTERM came to this process
        # alone: pass it on. Either way they stop gracefully; wait for them.
        if isinstance(e, Terminated):
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.wait()
        return [130 if p.returncode in (0, -signal.SIGINT) else p.returncode for p in procs]
