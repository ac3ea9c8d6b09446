"""The daemon's read-only HTTP layer: `/metrics`, the operator page, the live channel, `/api/status`.

One server on the metrics port (loopback by default) answers, and only with GET or HEAD:

- `/metrics` — the Prometheus registry given (the same text `Metrics.render()` gives);
- `/` and `/static/<file>` — the operator page, files shipped in `vortexd/web_static/`;
- `/channel/<path>` — the channel folder, read-only: playlists, init and media segments;
- `/api/status` — JSON from the `status_source` callable the daemon passes in.

One port because the page is only a reader of what the daemon already publishes: one address,
one firewall rule, and the page stays where Prometheus already scrapes. `page=False` keeps only
`/metrics` for an operator who opens the metrics port to a scraper on another host.

Nothing outside the static folder and the channel folder can be reached: a path is refused (404)
when any of its parts is empty, `.`, `..`, hidden, or holds a backslash or NUL, when its type is not
one served, or when its real path (symlinks resolved) leaves its folder. Every other method is
answered 405: no control action exists over HTTP.

`status_source()` runs on the server's request thread, so it must be safe to call from a thread
other than the event loop's: wrap a loop-bound reader with `on_loop(loop, reader)`. What it
returns is sent as is (strict JSON, no NaN); the page reads these keys, each optional:

    phase: str                          "serving", "draining", ...
    on_air, next: SlotRow | None        the slot airing now and the one after it
    slots: [SlotRow]                    the timeline in air order
    arena: {region: {kind, budget_bytes, used_bytes, peak_bytes?}}   (ops.arena_status's shape)
    misses: [{slot_id, air_in_s, reason, filler: bool}]              newest first
    fillers_aired: int
    SlotRow = {slot_id, state, air_in_s, deadline_in_s, deadline_slack_s, running_stage, late, filler}
    (times in seconds from now, negative: past; deadline_slack_s: deadline minus the published or
    predicted publish time, negative: late; null when unknown)
`vortexd.web_status.page_status` builds exactly this from the engine's slot views, the arena
table and the channel's stats.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog

STATIC_DIR = Path(__file__).with_name("web_static")
"""The operator page's files (index.html, app.js, app.css, the vendored hls.js and its licence)."""

CHANNEL_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".m4s": "video/mp4", ".mp4": "video/mp4",
                 ".m4a": "audio/mp4", ".ts": "video/mp2t"}
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".txt": "text/plain; charset=utf-8",
                ".md": "text/markdown; charset=utf-8"}
# A playlist changes every segment: a cached one would freeze a player on an old window.
# Segments never change once renamed into place, but the window deletes them, so a short life.
PLAYLIST_CACHE = "no-cache, no-store, must-revalidate"
SEGMENT_CACHE = "public, max-age=60"
# The page loads only its own files; hls.js runs its transmuxer in a blob: worker and feeds the
# <video> through MediaSource (blob: media URL).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "media-src 'self' blob:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'")
READ_CHUNK = 256 * 1024
REQUEST_TIMEOUT_S = 30.0
"""A connection idle this long mid-request is closed, so slow clients cannot hold threads."""

log = structlog.get_logger("vortexd.web")

StatusSource = Callable[[], dict[str, Any]]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def resolve_under(root: Path, relative: str) -> Path | None:
    """The regular file `relative` (a '/'-separated, already percent-decoded path) names inside
    `root`, or None when it names anything else: outside `root`, a folder, hidden, or missing."""
    if not relative or "\x00" in relative or "\\" in relative:
        return None
    parts = relative.split("/")
    # '' catches "//" and a leading "/" (an absolute path); hidden covers "." and ".." and the
    # dot-named temporary files writers rename into place.
    if any(part == "" or part.startswith(".") for part in parts):
        return None
    root_real = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root_real, *parts))
    # realpath follows every symlink, so one inside the folder that points out lands outside here.
    if os.path.commonpath([root_real, real]) != root_real or not os.path.isfile(real):
        return None
    return Path(real)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span of a single-range `Range: bytes=a-b` header within `size` bytes;
    None when absent, malformed or a multi-range (then the whole file is sent)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes="):].strip().partition("-")
    try:
        if first == "":  # suffix form: the last N bytes
            count = int(last)
            return (max(size - count, 0), size - 1) if count > 0 and size > 0 else None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or start > end or start >= size:
        return None
    return start, min(end, size - 1)


def _file_chunks(handle, remaining: int) -> Iterable[bytes]:
    """Stream `remaining` bytes of an open file, closing it when done or abandoned."""
    try:
        while remaining > 0:
            chunk = handle.read(min(READ_CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk
    finally:
        handle.close()


def on_loop(loop: asyncio.AbstractEventLoop, reader: Callable[[], dict[str, Any]],
            timeout_s: float = 2.0) -> StatusSource:
    """A status source that runs `reader` on `loop`'s thread (where the engine's state is only
    ever mutated) and waits at most `timeout_s` for it; the HTTP thread never reads it directly."""

    def source() -> dict[str, Any]:
        done: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(reader())
            except BaseException as exc:  # handed to the HTTP thread, which answers 503
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=timeout_s)

    return source


class OperatorApp:
    """The WSGI application: routes GET/HEAD to the four read-only surfaces, nothing else."""

    def __init__(self, channel_dir: Path, status_source: StatusSource | None,
                 metrics_app: WsgiApp | None = None, page: bool = True,
                 static_dir: Path = STATIC_DIR) -> None:
        self.channel_dir, self.status_source = Path(channel_dir), status_source
        self.metrics_app, self.page, self.static_dir = metrics_app, page, Path(static_dir)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Answer one request (PEP 3333)."""
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return self._plain(start_response, "405 Method Not Allowed", "read-only: GET and HEAD only\n",
                               [("Allow", "GET, HEAD")], method)
        path = self._path(environ)
        if path is None:
            return self._not_found(start_response, method)
        if path == "/metrics" and self.metrics_app is not None:
            body = self.metrics_app(environ, start_response)
            return [] if method == "HEAD" else body
        if not self.page:
            return self._not_found(start_response, method)
        if path in ("/", "/index.html"):
            return self._file(environ, start_response, self.static_dir, "index.html", STATIC_TYPES)
        if path.startswith("/static/"):
            return self._file(environ, start_response, self.static_dir, path[len("/static/"):], STATIC_TYPES)
        if path.startswith("/channel/"):
            return self._file(environ, start_response, self.channel_dir, path[len("/channel/"):], CHANNEL_TYPES)
        if path == "/api/status":
            return self._status(start_response, method)
        return self._not_found(start_response, method)

    @staticmethod
    def _path(environ: dict[str, Any]) -> str | None:
        # wsgiref percent-decodes PATH_INFO once and hands it over as latin-1 code points: get the
        # bytes back and read them as UTF-8, as the client meant them.
        try:
            return environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8")
        except UnicodeError:
            return None

    def _file(self, environ: dict[str, Any], start_response: Callable[..., Any], root: Path,
              relative: str, types: dict[str, str]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        content_type = types.get(os.path.splitext(relative)[1].lower())
        found = resolve_under(root, relative) if content_type else None
        if found is None:
            return self._not_found(start_response, method)
        try:
            handle = open(found, "rb")  # noqa: SIM115 — closed by _file_chunks or below
        except OSError:  # the window deleted it between the lookup and here
            return self._not_found(start_response, method)
        size = os.fstat(handle.fileno()).st_size
        headers = [("Content-Type", content_type), ("Accept-Ranges", "bytes"),
                   ("X-Content-Type-Options", "nosniff"), ("Cache-Control", self._cache(root, relative))]
        if relative == "index.html" and root == self.static_dir:
            headers += [("Content-Security-Policy", PAGE_CSP), ("X-Frame-Options", "DENY")]
        span = parse_range(environ.get("HTTP_RANGE"), size)
        status, start, length = "200 OK", 0, size
        if span is not None:
            start, length = span[0], span[1] - span[0] + 1
            status = "206 Partial Content"
            headers.append(("Content-Range", f"bytes {span[0]}-{span[1]}/{size}"))
        start_response(status, [*headers, ("Content-Length", str(length))])
        if method == "HEAD":
            handle.close()
            return []
        handle.seek(start)
        return _file_chunks(handle, length)

    def _cache(self, root: Path, relative: str) -> str:
        if root == self.static_dir:
            return "no-cache"  # a daemon upgrade changes the page: revalidate, never go stale
        return PLAYLIST_CACHE if relative.endswith(".m3u8") else SEGMENT_CACHE

    def _status(self, start_response: Callable[..., Any], method: str) -> Iterable[bytes]:
        if self.status_source is None:
            return self._json(start_response, "503 Service Unavailable", {"error": "no status source"}, method)
        try:
            status = self.status_source()
        except Exception as exc:  # the daemon's state could not be read now: say so, keep serving
            log.warning("web_status_failed", error=repr(exc))
            return self._json(start_response, "503 Service Unavailable",
                              {"error": f"status unavailable: {type(exc).__name__}"}, method)
        if not isinstance(status, dict):
            return self._json(start_response, "500 Internal Server Error",
                              {"error": "status source did not return an object"}, method)
        try:
            return self._json(start_response, "200 OK", status, method)
        except (TypeError, ValueError) as exc:  # not JSON: a bug in the source, named in the log
            log.error("web_status_not_json", error=str(exc))
            return self._json(start_response, "500 Internal Server Error",
                              {"error": "status is not JSON-serialisable"}, method)

    @staticmethod
    def _json(start_response: Callable[..., Any], status: str, value: dict[str, Any],
              method: str) -> Iterable[bytes]:
        body = json.dumps(value, allow_nan=False, separators=(",", ":")).encode("utf-8")
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])
        return [] if method == "HEAD" else [body]

    @staticmethod
    def _plain(start_response: Callable[..., Any], status: str, text: str,
               extra: list[tuple[str, str]], method: str) -> Iterable[bytes]:
        body = text.encode("utf-8")
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body))), *extra])
        return [] if method == "HEAD" else [body]

    def _not_found(self, start_response: Callable[..., Any], method: str) -> Iterable[bytes]:
        return self._plain(start_response, "404 Not Found", "not found\n", [], method)


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without its stderr access log (the daemon logs JSON to stderr)."""

    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — the base class's name
        """Drop the per-request line."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per connection: a slow segment download never blocks a scrape or the page."""

    daemon_threads = True
    allow_reuse_address = True


class _ThreadingServer6(_ThreadingServer):
    """The same on an IPv6 address (host "::1", "::")."""

    address_family = socket.AF_INET6


class OperatorServer:
    """The HTTP server on a daemon thread: `start()` binds and returns the port, `close()` stops."""

    def __init__(self, channel_dir: Path, status_source: StatusSource | None, *,
                 metrics_registry: Any = None, host: str = "127.0.0.1", port: int = 0,
                 page: bool = True) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        metrics_app = None
        if metrics_registry is not None:
            from prometheus_client import make_wsgi_app  # only the daemon's server needs it
            metrics_app = make_wsgi_app(metrics_registry)
        self.app = OperatorApp(Path(channel_dir), status_source, metrics_app, page)
        self.host, self.requested_port = host, port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port while serving, else None."""
        return None if self._server is None else int(self._server.server_address[1])

    def start(self) -> int:
        """Bind and serve on a daemon thread; returns the bound port (port 0 picks a free one).
        Raises OSError when the address cannot be bound (in use, not local)."""
        if self._server is not None:
            raise RuntimeError("operator HTTP server already running")
        server_class = _ThreadingServer6 if ":" in self.host else _ThreadingServer
        self._server = make_server(self.host, self.requested_port, self.app,
                                   server_class=server_class, handler_class=_QuietHandler)
        # A short poll so close() returns promptly (the daemon's shutdown waits on it).
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="vortexd-http", daemon=True)
        self._thread.start()
        log.info("web_serving", host=self.host, port=self.port, page=self.app.page)
        return int(self.port)

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._server, self._thread = None, None
