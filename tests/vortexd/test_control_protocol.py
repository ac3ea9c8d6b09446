"""Control socket: every hostile line gets a structured error, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vortexd.control.protocol import (
    ERROR_CODES,
    MAX_LINE_BYTES,
    OPS,
    ControlError,
    Request,
    parse_request,
    parse_submit,
)
from vortexd.control.server import ControlServer, ControlServerError, ControlServerOptions


@pytest.fixture
def short_dir() -> Path:
    """A short folder for sockets (sun_path is limited to 107 bytes; pytest's tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="vx", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Any:
    """Runs a coroutine on the stock loop and on uvloop (the daemon's loop)."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop

    def run_on_loop(coro: Any) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    return run_on_loop


def _make_handler(root: Path) -> Any:
    """A small daemon-like handler: submit validates the recipe for real, status always crashes."""

    async def handler(request: Request) -> Any:
        if request.op == "health":
            return {"status": "ok"}
        if request.op == "submit":
            recipe = parse_submit(request.args, [root], root)
            return {"slot_id": recipe.slot_id, "seq": 1, "state": "accepted", "duplicate": False}
        if request.op == "status":
            raise RuntimeError("secret internal detail /etc/shadow")
        if request.op == "cancel":
            raise ControlError("not_found", f"no slot {request.args['slot_id']!r}")
        if request.op == "slots":
            return {"slots": [], "limit": request.args.get("limit", 20)}
        if request.op == "resume":
            return {"not json": {1, 2}}  # a handler bug: the result cannot be encoded
        if request.op == "subscribe":
            return _ticks(int(request.args.get("slot_id", "3").removeprefix("n")))
        return {"op": request.op}

    return handler


async def _ticks(n: int) -> AsyncIterator[dict[str, Any]]:
    for i in range(n):
        await asyncio.sleep(0)
        yield {"kind": "tick", "i": i, "pad": "x" * 200}


@asynccontextmanager
async def _serving(path: Path, handler: Any, **options: Any) -> AsyncIterator[ControlServer]:
    server = ControlServer(path, handler, options=ControlServerOptions(**options))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def _roundtrip(path: Path, lines: list[bytes], limit: int = 1 << 24) -> list[dict[str, Any]]:
    """Send `lines` on one connection while reading the answers concurrently (no pipe deadlock)."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=limit)

    async def send() -> None:
        for line in lines:
            writer.write(line + b"\n")
            await writer.drain()

    sender = asyncio.create_task(send())
    answers = [json.loads(await asyncio.wait_for(reader.readline(), 10)) for _ in lines]
    await sender
    writer.close()
    await writer.wait_closed()
    return answers


def _hostile_lines(root: Path) -> list[tuple[bytes, str]]:
    """1,000 (line, expected error code) pairs: malformed, hostile, wrong-typed and invalid requests."""
    rng = np.random.default_rng(7)
    fixed: list[tuple[Any, str]] = [
        (b'{"op": "health"', "bad_json"), (b"{'op': 'health'}", "bad_json"), (b'{"op": NaN}', "bad_json"),
        (b"[" * 100_000 + b"]" * 100_000, "bad_json"), (b'{"op": "health",}', "bad_json"),
        (b"\xff\xfe\x00garbage", "bad_json"), (b'"just a string"', "bad_request"),
        (b'{"id": "\\ud800", "op": "nope"}', "unknown_op"),  # a lone surrogate id must still echo
        ('{"id": "\u20ac", "op": 1}'.encode(), "bad_request"), (b"[1, 2, 3]", "bad_request"),
        (b"42", "bad_request"), (b"null", "bad_request"), (b"{}", "bad_request"),
        ({"op": 7}, "bad_request"), ({"op": None, "id": 1}, "bad_request"),
        ({"op": "health", "x": 1}, "bad_request"), ({"op": "health", "args": [1]}, "bad_request"),
        ({"op": "health", "args": {"verbose": True}}, "bad_request"),
        ({"op": "slots", "args": {"limit": "ten"}}, "bad_request"),
        ({"op": "slots", "args": {"limit": 0}}, "bad_request"),
        ({"op": "slots", "args": {"limit": True}}, "bad_request"),
        ({"op": "slots", "args": {"states": "failed"}}, "bad_request"),
        ({"op": "cancel"}, "bad_request"), ({"op": "cancel", "args": {"slot_id": 5}}, "bad_request"),
        ({"op": "cancel", "args": {"slot_id": "x" * 500}}, "bad_request"),
        ({"op": "submit", "args": {"recipe": "slot.toml"}}, "bad_request"),
        ({"op": "submit", "args": {"recipe": {}, "base_dir": "relative/dir"}}, "bad_request"),
        ({"op": "cancel", "args": {"slot_id": "s1"}}, "not_found"),
        ({"op": "status"}, "internal"), ({"op": "resume"}, "internal"),
    ]
    bad_recipes = [
        {"slot_id": "x"},
        {"slot_id": "x", "speech": {"text": "hi"}, "colour": "red"},
        {"slot_id": "x", "speech": {"text": "hi"}, "motion": {"expression": "furious"}},
        {"slot_id": "x", "speech": {"text": "   "}},
        {"slot_id": "has spaces", "speech": {"text": "hi"}},
        {"slot_id": "x", "speech": {"text": "hi"}, "output": {"duration_s": 1e9}},
        {"slot_id": "x", "speech": {"text": "hi"}, "actor": {"image": "../../../etc/passwd"}},
        {"slot_id": "x", "speech": {"text": "hi"}, "motion": {"seed": -1}},
    ]
    for recipe in bad_recipes:
        fixed.append(({"op": "submit", "args": {"recipe": recipe, "base_dir": str(root)}}, "invalid_recipe"))
    # A base_dir outside the roots is never resolved against: "etc/passwd" stays unreadable.
    fixed.append(({"op": "submit", "args": {"recipe": {"slot_id": "x", "speech": {"text": "hi"},
                                                       "actor": {"image": "etc/passwd"}}, "base_dir": "/"}},
                  "invalid_recipe"))

    lines: list[tuple[bytes, str]] = []
    for i in range(1000):
        kind = i % 8
        if kind == 0:
            line, code = fixed[(i // 8) % len(fixed)]
        elif kind == 1:  # binary garbage (never a newline; 0xff makes it invalid UTF-8)
            raw = rng.integers(0, 256, size=int(rng.integers(1, 300)), dtype=np.uint8)
            line, code = b"\xff" + raw[raw != 10].tobytes(), "bad_json"
        elif kind == 2:  # unknown ops, some very long
            line, code = {"id": i, "op": "op" + "x" * int(rng.integers(0, 5000))}, "unknown_op"
        elif kind == 3 and i % 48 == 3:  # huge lines, just over and far over the limit
            line, code = b'{"op":"health","pad":"' + b"A" * (MAX_LINE_BYTES + int(rng.integers(0, 3 << 20))), \
                "line_too_long"
        elif kind == 3:
            line, code = b'{"id": %d, "op": "submit", "args": {"recipe": %s}}' % (
                i, json.dumps(bad_recipes[i % len(bad_recipes)] | {"speech": {"text": 7}}).encode()), "invalid_recipe"
        elif kind == 4:  # truncated valid requests
            full = json.dumps({"id": i, "op": "slots", "args": {"limit": 5}}).encode()
            line, code = full[: int(rng.integers(1, len(full) - 1))], "bad_json"
        elif kind == 5:  # wrong types for every field
            line, code = {"id": i, "op": "slots", "args": {"limit": [None, 1.5, "5", {}, -3][i % 5]}}, "bad_request"
        elif kind == 6:
            line, code = fixed[(i * 7) % len(fixed)]
        else:  # control characters and invalid escapes
            line, code = b'{"op": "health", "id": "\\x%02x"}' % (i % 256), "bad_json"
        lines.append((json.dumps(line).encode() if isinstance(line, dict) else line, code))
    return lines


def test_a_thousand_hostile_lines_each_get_a_structured_error_and_the_server_keeps_serving(
        short_dir: Path, run: Any) -> None:
    """1,000 bad lines (bad JSON, garbage, unknown ops, huge lines, wrong types, invalid recipes) on one
    connection: each gets exactly one error with the expected code; a final health check succeeds."""
    root = short_dir / "recipes"
    root.mkdir()
    lines = _hostile_lines(root)
    assert len(lines) == 1000 and {code for _, code in lines} >= {
        "bad_json", "line_too_long", "bad_request", "unknown_op", "invalid_recipe", "internal"}
    path = short_dir / "control.sock"

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], ControlServer]:
        async with _serving(path, _make_handler(root)) as server:
            answers = await _roundtrip(path, [line for line, _ in lines] + [b'{"id": "last", "op": "health"}'])
            fresh = await _roundtrip(path, [b'{"id": 1, "op": "health"}'])
            return answers, fresh[0], server

    started = time.perf_counter()
    answers, fresh, server = run(scenario())
    elapsed_s = time.perf_counter() - started
    for (line, expected), answer in zip(lines, answers):
        assert answer["ok"] is False, line[:80]
        error = answer["error"]
        assert error["code"] == expected, (line[:120], error)
        assert error["code"] in ERROR_CODES and isinstance(error["message"], str) and error["message"]
        assert isinstance(error["details"], dict)
        assert "Traceback" not in error["message"] and "shadow" not in json.dumps(answer)
        if error["code"] == "unknown_op":
            assert error["details"]["valid_ops"] == list(OPS)
        if error["code"] == "invalid_recipe":
            assert error["details"]["field"] and error["details"]["message"]
    assert answers[-1] == {"id": "last", "ok": True, "result": {"status": "ok"}}
    assert fresh == {"id": 1, "ok": True, "result": {"status": "ok"}}
    assert server.requests_total >= 1000 - sum(code == "line_too_long" for _, code in lines)
    assert elapsed_s < 30


def test_errors_echo_the_request_id_and_name_the_field() -> None:
    """A bad request that parsed as an object echoes its id; the error names the offending argument."""
    with pytest.raises(ControlError) as info:
        parse_request(b'{"id": "abc", "op": "slots", "args": {"limit": "many"}}')
    response = info.value.response()
    assert response["id"] == "abc" and response["error"]["code"] == "bad_request"
    assert response["error"]["details"]["field"] == "args.limit"
    request = parse_request('{"id": 3, "op": "cancel", "args": {"slot_id": "s1", "reason": "typo"}}')
    assert request == Request(id=3, op="cancel", args={"slot_id": "s1", "reason": "typo"})


def test_invalid_recipe_errors_name_the_recipe_field(short_dir: Path) -> None:
    """parse_submit turns a RecipeError into invalid_recipe with the dotted field, and never
    resolves paths against a base_dir outside the allowed roots (which would open the whole
    filesystem); a text-only recipe from such a folder is still fine."""
    with pytest.raises(ControlError) as info:
        parse_submit({"recipe": {"slot_id": "s", "speech": {"text": "hi", "volume": 3}}}, [short_dir], short_dir)
    assert info.value.code == "invalid_recipe" and info.value.details["field"] == "speech.volume"
    with pytest.raises(ControlError) as info:  # /etc is not trusted: "shadow" cannot resolve against it
        parse_submit({"recipe": {"slot_id": "s", "speech": {"text": "hi"}, "actor": {"image": "shadow"}},
                      "base_dir": "/etc"}, [short_dir], short_dir)
    assert info.value.details["field"] == "actor.image" and "/etc" not in info.value.message
    text_only = parse_submit({"recipe": {"slot_id": "t", "speech": {"text": "hi"}}, "base_dir": "/etc"}, [short_dir])
    assert text_only.slot_id == "t"
    recipe = parse_submit({"recipe": {"slot_id": "s", "speech": {"text": "hi"}}}, [short_dir], short_dir)
    assert recipe.slot_id == "s"


def test_socket_mode_is_0660_and_a_stale_socket_is_replaced(short_dir: Path, run: Any) -> None:
    """The socket is created mode 0660 (even over a stale socket file) and removed on close."""
    path = short_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as a killed daemon leaves behind

    async def scenario() -> int:
        async with _serving(path, _make_handler(short_dir)):
            mode = stat.S_IMODE(os.stat(path).st_mode)
            assert stat.S_ISSOCK(os.stat(path).st_mode)
            assert (await _roundtrip(path, [b'{"op":"health"}']))[0]["ok"] is True
            return mode

    assert run(scenario()) == 0o660
    assert not path.exists()
    assert not [p for p in short_dir.iterdir() if p.name.startswith(".vx")]


def test_a_live_socket_or_a_regular_file_is_never_replaced(short_dir: Path) -> None:
    """Starting on a path another server listens on, or on a regular file, fails and touches nothing."""
    path = short_dir / "control.sock"

    async def scenario() -> None:
        async with _serving(path, _make_handler(short_dir)):
            with pytest.raises(ControlServerError, match="already serving"):
                await ControlServer(path, _make_handler(short_dir)).start()
            assert (await _roundtrip(path, [b'{"op":"health"}']))[0]["ok"] is True

    asyncio.run(scenario())
    path.write_text("precious")
    with pytest.raises(ControlServerError, match="not a socket"):
        asyncio.run(ControlServer(path, _make_handler(short_dir)).start())
    assert path.read_text() == "precious"


def test_a_handler_exception_is_contained_and_reported_as_internal(short_dir: Path) -> None:
    """A handler that raises gives an "internal" error with an error_id but no traceback; the same
    connection then serves the next request."""
    path = short_dir / "control.sock"

    async def scenario() -> list[dict[str, Any]]:
        async with _serving(path, _make_handler(short_dir)):
            return await _roundtrip(path, [b'{"id": 1, "op": "status"}', b'{"id": 2, "op": "health"}'])

    crashed, healthy = asyncio.run(scenario())
    assert crashed["id"] == 1 and crashed["error"]["code"] == "internal"
    assert len(crashed["error"]["details"]["error_id"]) == 12
    assert "secret" not in json.dumps(crashed)
    assert healthy == {"id": 2, "ok": True, "result": {"status": "ok"}}


def test_a_huge_line_is_discarded_without_being_buffered(short_dir: Path, run: Any) -> None:
    """A 32 MiB line costs the server at most a few MiB of memory and then the connection goes on."""
    path = short_dir / "control.sock"
    chunk = b"x" * (1 << 20)

    async def scenario() -> tuple[list[dict[str, Any]], int]:
        async with _serving(path, _make_handler(short_dir)):
            reader, writer = await asyncio.open_unix_connection(str(path))
            tracemalloc.start()
            writer.write(b'{"op":"health","pad":"')
            for _ in range(32):
                writer.write(chunk)
                await writer.drain()
            writer.write(b'"}\n{"id": 9, "op": "health"}\n')
            await writer.drain()
            answers = [json.loads(await asyncio.wait_for(reader.readline(), 10)) for _ in range(2)]
            _, peak_bytes = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            writer.close()
            return answers, peak_bytes

    (too_long, healthy), peak_bytes = run(scenario())
    assert too_long["error"]["code"] == "line_too_long"
    assert too_long["error"]["details"]["line_bytes"] > 32 * (1 << 20)
    assert healthy == {"id": 9, "ok": True, "result": {"status": "ok"}}
    assert peak_bytes < 6 * (1 << 20), peak_bytes


def test_a_subscriber_receives_the_stream_and_a_slow_one_loses_the_oldest_events(short_dir: Path, run: Any) -> None:
    """subscribe answers ok then streams events; a client that does not read gets a "dropped" count
    and the newest events, and the event source is never held up."""
    path = short_dir / "control.sock"

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
        async with _serving(path, _make_handler(short_dir), subscriber_queue=16):
            small = await _read_stream(path, b'{"id": "s", "op": "subscribe", "args": {"slot_id": "n3"}}', 4)
            # A small client buffer, so that not reading really leaves the server's writes pending.
            reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 16)
            started = time.perf_counter()
            writer.write(b'{"id": "big", "op": "subscribe", "args": {"slot_id": "n30000"}}\n')
            await writer.drain()
            await asyncio.sleep(1.0)  # the client reads nothing while 30,000 events are produced
            lines = []
            while True:
                raw = await asyncio.wait_for(reader.readline(), 5)
                if not raw:
                    break
                lines.append(json.loads(raw))
            return small, lines, time.perf_counter() - started

    small, lines, elapsed_s = run(scenario())
    assert small[0] == {"id": "s", "ok": True, "result": {"subscribed": True, "slot_id": "n3"}}
    assert [line["event"]["i"] for line in small[1:]] == [0, 1, 2]
    events = [line["event"] for line in lines[1:]]
    dropped = sum(e["count"] for e in events if e["kind"] == "dropped")
    ticks = [e["i"] for e in events if e["kind"] == "tick"]
    assert dropped > 0 and dropped + len(ticks) == 30_000
    assert ticks == sorted(ticks) and ticks[-1] == 29_999  # the newest survive
    assert elapsed_s < 10


async def _read_stream(path: Path, request: bytes, n_lines: int) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(request + b"\n")
    await writer.drain()
    lines = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(n_lines)]
    writer.close()
    return lines


def test_a_disconnecting_subscriber_releases_its_event_source(short_dir: Path) -> None:
    """When a subscriber hangs up, the handler's event iterator is closed (its cleanup runs)."""
    path = short_dir / "control.sock"
    released = asyncio.Event

    async def scenario() -> bool:
        closed = released()

        async def forever() -> AsyncIterator[dict[str, Any]]:
            try:
                while True:
                    await asyncio.sleep(0.01)
                    yield {"kind": "tick"}
            finally:
                closed.set()

        async def handler(request: Request) -> Any:
            return forever() if request.op == "subscribe" else {"status": "ok"}

        async with _serving(path, handler) as server:
            await _read_stream(path, b'{"op": "subscribe"}', 3)
            await asyncio.wait_for(closed.wait(), 2)
            for _ in range(100):
                if server.connection_count == 0:
                    break
                await asyncio.sleep(0.01)
            return server.connection_count == 0

    assert asyncio.run(scenario())


def test_connections_beyond_the_limit_are_refused_with_busy(short_dir: Path) -> None:
    """With max_connections=2, a third client gets a "busy" error while the first two keep working."""
    path = short_dir / "control.sock"

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with _serving(path, _make_handler(short_dir), max_connections=2):
            held = [await asyncio.open_unix_connection(str(path)) for _ in range(2)]
            await asyncio.sleep(0.05)
            reader, writer = await asyncio.open_unix_connection(str(path))
            refused = json.loads(await asyncio.wait_for(reader.readline(), 5))
            writer.close()
            answers = []
            for r, w in held:
                w.write(b'{"op": "health"}\n')
                answers.append(json.loads(await asyncio.wait_for(r.readline(), 5)))
                w.close()
            return refused, answers

    refused, answers = asyncio.run(scenario())
    assert refused["error"]["code"] == "busy"
    assert all(a["ok"] for a in answers)


def test_close_lets_a_request_in_progress_finish(short_dir: Path) -> None:
    """close() waits for a slow request already being handled, answers it, then removes the socket."""
    path = short_dir / "control.sock"

    async def scenario() -> dict[str, Any]:
        async def slow(request: Request) -> dict[str, Any]:
            await asyncio.sleep(0.3)
            return {"status": "done"}

        server = ControlServer(path, slow)
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"id": 1, "op": "drain"}\n')
        await writer.drain()
        await asyncio.sleep(0.05)
        await server.close()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
        writer.close()
        return answer

    assert asyncio.run(scenario()) == {"id": 1, "ok": True, "result": {"status": "done"}}
    assert not path.exists()


def test_requests_carry_the_peer_credentials(short_dir: Path, run: Any) -> None:
    """Each request knows the connecting process's pid and uid (SO_PEERCRED), for audit logs."""
    path = short_dir / "control.sock"

    async def whoami(request: Request) -> dict[str, Any]:
        assert request.peer is not None
        return {"pid": request.peer.pid, "uid": request.peer.uid}

    async def scenario() -> dict[str, Any]:
        async with _serving(path, whoami):
            return (await _roundtrip(path, [b'{"op": "health"}']))[0]["result"]

    assert run(scenario()) == {"pid": os.getpid(), "uid": os.getuid()}


def test_close_ends_open_subscriptions_promptly(short_dir: Path) -> None:
    """close() with a subscriber streaming forever returns within a second; the client sees EOF."""
    path = short_dir / "control.sock"

    async def forever() -> AsyncIterator[dict[str, Any]]:
        while True:
            await asyncio.sleep(0.01)
            yield {"kind": "tick"}

    async def handler(request: Request) -> Any:
        return forever()

    async def scenario() -> tuple[float, bytes]:
        server = ControlServer(path, handler)
        await server.start()
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"op": "subscribe"}\n')
        await reader.readline()
        started = time.perf_counter()
        await server.close()
        elapsed_s = time.perf_counter() - started
        rest = await asyncio.wait_for(reader.read(), 2)
        writer.close()
        return elapsed_s, rest

    elapsed_s, rest = asyncio.run(scenario())
    assert elapsed_s < 1.0
    assert all(json.loads(line)["event"]["kind"] == "tick" for line in rest.splitlines())


def test_the_socket_gets_the_configured_group_and_a_missing_group_is_tolerated(short_dir: Path) -> None:
    """group= chgrps the socket when the group exists; a group that does not exist is skipped, not fatal."""
    import grp

    own_group = grp.getgrgid(os.getgid()).gr_name
    path = short_dir / "control.sock"

    async def scenario(group: str) -> int:
        server = ControlServer(path, _make_handler(short_dir), group=group)
        await server.start()
        try:
            return os.stat(path).st_gid
        finally:
            await server.close()

    assert asyncio.run(scenario(own_group)) == os.getgid()
    assert asyncio.run(scenario("no-such-group-vx")) == os.getgid()
