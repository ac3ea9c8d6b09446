"""The operator HTTP server over a real socket: types, caching, traversal, methods, status, metrics."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from vortexd.web import STATIC_DIR, OperatorServer, on_loop, parse_range

PLAYLIST = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n" \
           "#EXTINF:2.0,\nseg-0.m4s\n"


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None):
    """One raw request (the path is sent byte for byte, no client-side normalising)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A channel folder with a playlist and segments, and a secret file beside it."""
    channel = tmp_path / "out" / "channel"
    channel.mkdir(parents=True)
    (channel / "live.m3u8").write_text(PLAYLIST)
    (channel / "init.mp4").write_bytes(b"\x00\x00\x00\x18ftypiso6" + bytes(12))
    (channel / "seg-0.m4s").write_bytes(bytes(range(256)) * 40)
    (channel / "slot-a").mkdir()
    (channel / "slot-a" / "seg-1.m4s").write_bytes(b"nested segment")
    (channel / ".live.m3u8.tmp").write_text("half-written playlist")
    (channel / "notes.json").write_text("{}")
    secret = tmp_path / "out" / "secret.m3u8"
    secret.write_text("outside the channel folder")
    (channel / "escape.m3u8").symlink_to(secret)
    (channel / "escape-dir").symlink_to(tmp_path / "out", target_is_directory=True)
    return {"channel": channel, "secret": secret}


@pytest.fixture
def server(tree):
    """The server over that channel with a fixed status and a registry holding one counter."""
    registry = CollectorRegistry()
    Counter("vortex_test_scrapes", "A counter only this test's registry has.", registry=registry).inc(3)
    status = {"phase": "serving", "on_air": {"slot_id": "slot-a", "state": "published", "air_in_s": -4.0},
              "next": {"slot_id": "slot-b", "state": "warping", "air_in_s": 41.0, "deadline_slack_s": 12.5},
              "arena": {"slab0": {"kind": "slab", "budget_bytes": 1024, "used_bytes": 512}},
              "misses": [], "fillers_aired": 0}
    srv = OperatorServer(tree["channel"], lambda: status, metrics_registry=registry)
    srv.start()
    yield srv
    srv.close()


def test_channel_files_have_hls_types_and_the_playlist_is_never_cached(server, tree):
    status, headers, body = request(server.port, "GET", "/channel/live.m3u8")
    assert (status, headers["Content-Type"], body.decode()) == (200, "application/vnd.apple.mpegurl", PLAYLIST)
    assert "no-cache" in headers["Cache-Control"] and "no-store" in headers["Cache-Control"]
    for path in ("/channel/init.mp4", "/channel/seg-0.m4s", "/channel/slot-a/seg-1.m4s"):
        status, headers, body = request(server.port, "GET", path)
        assert (status, headers["Content-Type"]) == (200, "video/mp4"), path
        assert body == (tree["channel"] / path[len("/channel/"):]).read_bytes()
        assert "no-store" not in headers["Cache-Control"]


def test_a_range_request_gets_exactly_those_bytes(server, tree):
    data = (tree["channel"] / "seg-0.m4s").read_bytes()
    status, headers, body = request(server.port, "GET", "/channel/seg-0.m4s", {"Range": "bytes=100-299"})
    assert (status, body, headers["Content-Range"]) == (206, data[100:300], f"bytes 100-299/{len(data)}")
    assert parse_range("bytes=-10", 50) == (40, 49) and parse_range("bytes=60-", 50) is None


def test_the_page_and_its_static_files_are_served_with_a_strict_policy(server):
    status, headers, body = request(server.port, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="/static/hls.min.js"' in body and "default-src 'self'" in headers["Content-Security-Policy"]
    status, headers, body = request(server.port, "GET", "/static/hls.min.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert body == (STATIC_DIR / "hls.min.js").read_bytes()
    status, _, body = request(server.port, "GET", "/static/hls.js-LICENSE.txt")
    assert status == 200 and b"Apache License" in body


@pytest.mark.parametrize("path", [
    "/channel/../secret.m3u8", "/channel/%2e%2e/secret.m3u8", "/channel/%2E%2E%2Fsecret.m3u8",
    "/channel/slot-a/../../secret.m3u8", "/channel//etc/passwd", "/channel/%2Fetc%2Fpasswd",
    "/static/../web.py", "/static/%2e%2e/web.py", "/static/..%5Cweb.py", "/channel/%00live.m3u8",
    "/channel/escape.m3u8", "/channel/escape-dir/secret.m3u8", "/channel/.live.m3u8.tmp",
    "/channel/notes.json", "/channel/slot-a", "/channel/", "/../../etc/passwd", "/etc/passwd",
    "/channel/%252e%252e/secret.m3u8", "/channel/%ff.m3u8",
])
def test_no_path_outside_the_two_folders_or_of_another_type_is_served(server, path):
    status, _, body = request(server.port, "GET", path)
    assert status == 404, path
    assert b"outside the channel folder" not in body and b"root:" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head_exist(server, method):
    for path in ("/api/status", "/channel/live.m3u8", "/metrics", "/"):
        status, headers, _ = request(server.port, method, path)
        assert (status, headers["Allow"]) == (405, "GET, HEAD"), (method, path)


def test_head_gives_the_headers_without_a_body(server, tree):
    status, headers, body = request(server.port, "HEAD", "/channel/seg-0.m4s")
    size = (tree["channel"] / "seg-0.m4s").stat().st_size
    assert (status, int(headers["Content-Length"]), body) == (200, size, b"")


def test_status_is_the_sources_json_and_metrics_share_the_port(server):
    status, headers, body = request(server.port, "GET", "/api/status")
    assert (status, headers["Content-Type"], headers["Cache-Control"]) == (200, "application/json", "no-store")
    answer = json.loads(body)
    assert answer["on_air"]["slot_id"] == "slot-a" and answer["next"]["deadline_slack_s"] == 12.5
    status, _, body = request(server.port, "GET", "/metrics")
    assert status == 200 and b"vortex_test_scrapes_total 3.0" in body


def test_a_failing_or_bad_status_source_is_answered_not_crashed(tree):
    answers = iter([RuntimeError("engine busy"), ["not", "a", "dict"], {"slack": float("nan")}])

    def source():
        value = next(answers)
        if isinstance(value, Exception):
            raise value
        return value

    srv = OperatorServer(tree["channel"], source)
    srv.start()
    try:
        codes = [request(srv.port, "GET", "/api/status")[0] for _ in range(3)]
        assert codes == [503, 500, 500]
        assert request(srv.port, "GET", "/metrics")[0] == 404  # no registry given: no /metrics
        assert request(srv.port, "GET", "/channel/live.m3u8")[0] == 200  # still serving
    finally:
        srv.close()


def test_page_off_leaves_only_metrics(tree):
    srv = OperatorServer(tree["channel"], lambda: {}, metrics_registry=CollectorRegistry(), page=False)
    srv.start()
    try:
        assert [request(srv.port, "GET", p)[0] for p in ("/", "/channel/live.m3u8", "/api/status")] == [404] * 3
        assert request(srv.port, "GET", "/metrics")[0] == 200
    finally:
        srv.close()


def test_close_frees_the_port_and_a_busy_port_is_an_oserror(tree):
    first = OperatorServer(tree["channel"], lambda: {})
    port = first.start()
    try:
        with pytest.raises(OSError):
            OperatorServer(tree["channel"], lambda: {}, port=port).start()
    finally:
        first.close()
    assert first.port is None
    again = OperatorServer(tree["channel"], lambda: {}, port=port)
    assert again.start() == port
    again.close()


def test_on_loop_reads_the_state_on_the_loops_own_thread():
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        source = on_loop(loop, lambda: {"thread": threading.get_ident()})
        assert source() == {"thread": runner.ident}
        failing = on_loop(loop, lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(timeout=5)
        loop.close()


def test_the_vendored_player_is_the_pinned_release_with_its_licence():
    """hls.js ships unmodified: the sha256 the folder's README pins, the version the page names."""
    readme = (STATIC_DIR / "README.md").read_text()
    digest = hashlib.sha256((STATIC_DIR / "hls.min.js").read_bytes()).hexdigest()
    assert "hls.js 1.7.4" in readme and digest in readme
    assert "hls.js 1.7.4" in (STATIC_DIR / "index.html").read_text()
    assert "Apache License" in (STATIC_DIR / "hls.js-LICENSE.txt").read_text()
