"""Serve a directory of static files on loopback with capcrawl.localsite.LocalSite, until killed.

    python bench/serve_dir.py ROOT [--host 127.0.0.1] [--port 8765]

Used to crawl a real documentation site offline (e.g. Debian's gimp-help-en HTML, see
bench/caption_fields.py). Prints the base URL, then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from capcrawl.localsite import LocalSite

log = logging.getLogger("serve_dir")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalSite(a.host, a.port, root=a.root) as site:
        log.info("serving %s at %s", a.root, site.base)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        log.info("%d requests served", len(site.log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
