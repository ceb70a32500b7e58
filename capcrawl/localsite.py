"""A small real HTTP server on loopback for tests, the demo and benchmarks.

Each :class:`LocalSite` binds one loopback address (127.0.0.1, 127.0.0.2, ... act as
separate hosts), serves routes added in code, some of which misbehave on purpose, and
logs every request it receives.
"""

from __future__ import annotations

import mimetypes
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Route:
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    fail_first: int = 0  # answer `fail_status` this many times first
    fail_status: int = 500
    fail_headers: dict[str, str] = field(default_factory=dict)
    endless: bool = False  # stream bytes without Content-Length until the client gives up
    redirect_to: str | None = None
    hits: int = 0


@dataclass
class LoggedRequest:
    host: str
    path: str
    user_agent: str
    at: float
    finished: float = 0.0  # when the answer was sent (0: not yet, or never)


_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".jpg": "image/jpeg", ".png": "image/png",
                  ".webp": "image/webp", ".txt": "text/plain"}


def content_type(path: Path) -> str:
    """Content type of a served file: the fixed map above, then the platform's ``mimetypes``
    (``.gif``, ``.css``, ``.svg``, ``.jpeg``, ``.xml`` ...), else ``application/octet-stream``."""
    if path.suffix in _CONTENT_TYPES:
        return _CONTENT_TYPES[path.suffix]
    guessed, _ = mimetypes.guess_type(path.name, strict=False)
    return guessed or "application/octet-stream"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        entry = LoggedRequest(self.server.site.host, self.path, self.headers.get("User-Agent", ""), time.time())
        self.server.site.record(entry)
        try:
            self._answer(head)
        finally:
            entry.finished = time.time()

    def _answer(self, head: bool) -> None:
        site = self.server.site
        path = self.path
        route = site.routes.get(path) or site.routes.get(path.split("?", 1)[0])
        if route is None:
            route = site.fallback(path)
        if route is None:
            self._send(404, b"not found", "text/plain", {}, head)
            return
        with site.lock:
            route.hits += 1
            hit = route.hits
        if route.delay:
            time.sleep(route.delay)
        if hit <= route.fail_first:
            self._send(route.fail_status, b"try again later", "text/plain", route.fail_headers, head)
            return
        if route.redirect_to:
            self._send(302, b"", "text/plain", {"Location": route.redirect_to}, head)
            return
        if route.endless:
            self._stream_forever(route)
            return
        self._send(route.status, route.body, route.content_type, route.headers, head)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str], head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _stream_forever(self, route: Route) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", route.content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"\xff" * 65536
        deadline = time.monotonic() + 120  # bounded, whatever the client does
        try:
            while time.monotonic() < deadline and not self.server.stopping:
                self.wfile.write(chunk)
                time.sleep(0.001)
        except OSError:
            pass  # the client hung up, as it should


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    stopping = False
    site: "LocalSite"

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up before its answer was written is no server error (no traceback)."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class LocalSite:
    """One loopback host serving in-memory routes (and optionally a directory)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, root: str | Path | None = None):
        if not host.startswith("127."):
            raise ValueError("LocalSite serves loopback addresses only (127.0.0.0/8)")
        self.routes: dict[str, Route] = {}
        self.root = Path(root) if root else None
        self.log: list[LoggedRequest] = []
        self.lock = threading.Lock()
        self._server = _Server((host, port), _Handler)
        self._server.site = self
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, body: bytes | str = b"", **kwargs: object) -> str:
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.routes[path] = Route(body=body, **kwargs)
        return self.url(path)

    def fallback(self, path: str) -> Route | None:
        if self.root is None:
            return None
        target = (self.root / path.split("?", 1)[0].lstrip("/")).resolve()
        if self.root.resolve() not in target.parents or not target.is_file():
            return None
        return Route(body=target.read_bytes(), content_type=content_type(target))

    def record(self, entry: LoggedRequest) -> None:
        with self.lock:
            self.log.append(entry)

    def requested(self, path: str) -> int:
        """How many times ``path`` was requested."""
        with self.lock:
            return sum(1 for r in self.log if r.path == path)

    def start(self) -> "LocalSite":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping = True
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "LocalSite":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
