"""Run one command and measure it: wall time, /usr/bin/time -v peak RSS, and process-tree peak RSS.

    python bench/measure.py --label NAME --out results.jsonl -- COMMAND [ARGS...]

Prints and appends one JSON line: ``wall_s``, ``rc``, ``time_v_max_rss_kb`` (the largest
single process, as ``/usr/bin/time -v`` reports it), ``cpu_s`` (user + system CPU of every
process the command started, orphans included: see below) and ``tree_peak_rss_kb`` (the peak
of the *sum* of RSS over the command's whole process tree, sampled from /proc every 0.2 s; it
counts shared library pages once per process, so it is an upper bound on real use).

CPU: ``/usr/bin/time`` only sees processes that were waited for. A process whose parent exits
first (a multiprocessing fork server, say, with the workers it reaped) is re-parented, and its
CPU would vanish from the total. On Linux this script makes itself a child subreaper, so such
orphans become its children; it waits for them and takes ``cpu_s`` from its own
``RUSAGE_CHILDREN`` (which also counts ``/usr/bin/time`` itself, a few milliseconds).
Standard library only, so that it runs under any Python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


TICKS = os.sysconf("SC_CLK_TCK")


def tree_rss_kb(root: int, cpu: dict[int, float] | None = None) -> int:
    """Sum of RSS (KiB) over ``root`` and all its descendants; records each one's CPU seconds in ``cpu``."""
    kids = _children()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(kids.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE_KB
            if cpu is not None:
                with open(f"/proc/{pid}/stat") as fh:
                    f = fh.read().rsplit(")", 1)[1].split()
                cpu[pid] = (int(f[11]) + int(f[12])) / TICKS
        except (OSError, IndexError, ValueError):
            pass
    return total


def _become_subreaper() -> bool:
    """Adopt the command's orphaned descendants (Linux PR_SET_CHILD_SUBREAPER)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _reap_orphans(timeout: float = 30.0) -> None:
    """Wait for adopted orphans to exit (a fork server leaves right after its parent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.02)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--out", help="append the JSON line here too")
    ap.add_argument("--log", help="send the command's stdout and stderr to this file (appended)")
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    subreaper = _become_subreaper()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tv:
        start = time.perf_counter()
        sink = open(a.log, "ab") if a.log else None
        proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", tv.name, *cmd], stdout=sink, stderr=sink)
        peak, cpu = 0, {}
        done = threading.Event()

        def sample() -> None:  # beside the wait below, so that the wall time is not rounded to the interval
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss_kb(proc.pid, cpu))
                done.wait(a.interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        proc.wait()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        if subreaper:
            _reap_orphans()
        kids = [p for p in cpu if p != proc.pid]
        main_pid = min(kids) if kids else proc.pid  # the command itself: /usr/bin/time's first child
        if sink is not None:
            sink.close()
        text = tv.read()
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        cpu_total = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", text))
        if subreaper:
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_total = ru.ru_utime + ru.ru_stime
    rec = {
        "label": a.label,
        "rc": proc.returncode,
        "wall_s": round(wall, 2),
        "time_v_max_rss_kb": int(m.group(1)) if m else None,
        "tree_peak_rss_kb": peak,
        "cpu_s": round(cpu_total, 2),
        # CPU seconds of the command's main process (last sample, so slightly under), and of the rest
        "cpu_main_s": round(cpu.get(main_pid, 0.0), 2),
    }
    line = json.dumps(rec)
    print(line, file=sys.stderr)
    if a.out:
        with open(a.out, "a") as fh:
            fh.write(line + "\n")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
