"""No connection flood locks an operator out of `health` (issue P10, defect 1): the real
ControlServer on a real Unix socket, the flood in another process (another peer)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from vortexd.control.admission import Admission, AdmissionLimits
from vortexd.control.protocol import Peer, Request, parse_submit
from vortexd.control.server import ControlServer, ControlServerOptions

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_health_flood.py"


@pytest.fixture
def short_dir() -> Path:
    """A short folder for sockets (sun_path is limited to 107 bytes; pytest's tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="vx", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _handler(root: Path) -> Any:
    """Health answers at once; submit validates the recipe for real (as the daemon's first step)."""

    async def handler(request: Request) -> dict[str, Any]:
        if request.op == "submit":
            recipe = parse_submit(request.args, [root], root)
            return {"slot_id": recipe.slot_id, "seq": 1, "state": "accepted", "duplicate": False}
        return {"status": "ok"} if request.op == "health" else {"op": request.op}

    return handler


@asynccontextmanager
async def _serving(path: Path, root: Path, **options: Any) -> AsyncIterator[ControlServer]:
    server = ControlServer(path, _handler(root), options=ControlServerOptions(**options))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def _request(path: Path, message: dict[str, Any] | None, timeout_s: float = 5.0) -> dict[str, Any]:
    """One request (None: send nothing) on a fresh connection, and the first line answered."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        if message is not None:
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()
        return json.loads(await asyncio.wait_for(reader.readline(), timeout_s))
    finally:
        writer.close()


async def _probe_under_flood(server: ControlServer, path: Path, root: Path, flood_peer: Peer) -> dict[str, Any]:
    """40 health requests 0.25 s apart (a submit every eighth) while the flood runs."""
    latencies, failures, submits, flood_held = [], [], [], 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(40):
        sent = time.perf_counter()
        answer = await _request(path, {"id": i, "op": "health"})
        if answer == {"id": i, "ok": True, "result": {"status": "ok"}}:
            latencies.append(time.perf_counter() - sent)
        else:
            failures.append(answer)
        if i % 8 == 4:
            submits.append(await _request(path, {"op": "submit", "args": {
                "recipe": {"slot_id": f"s{i}", "speech": {"text": "Good evening."}}, "base_dir": str(root)}}))
        flood_held = max(flood_held, server.admission.held_by(flood_peer))
        await asyncio.sleep(max(0.0, started + (i + 1) * 0.25 - loop.time()))
    return {"latencies": latencies, "failures": failures, "submits": submits, "flood_held": flood_held}


def test_health_is_answered_40_of_40_while_another_client_floods_the_socket(short_dir: Path) -> None:
    """A client opening 40 connections a second and holding them silent for 11 s: 40 of 40 health
    requests (one every 0.25 s) are answered ok, quickly; the flood holds at most 16 connections
    (its extra ones are told `busy` naming max_connections_per_peer); other clients' submits work."""
    path = short_dir / "control.sock"

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with _serving(path, short_dir) as server:
            flood = await asyncio.create_subprocess_exec(
                sys.executable, str(BENCH), "--flood-only", str(path), "--rate", "40", "--seconds", "11",
                stdout=asyncio.subprocess.PIPE)
            await asyncio.sleep(1.0)  # the flood is well on before the first probe
            probes = await _probe_under_flood(server, path, short_dir,
                                              Peer(pid=flood.pid, uid=os.getuid(), gid=os.getgid()))
            out, _ = await asyncio.wait_for(flood.communicate(), 30)
            return probes, json.loads(out)

    probes, flood = asyncio.run(scenario())
    outcome = flood["outcome"]
    assert not probes["failures"] and len(probes["latencies"]) == 40
    assert sorted(probes["latencies"])[-1] < 0.5, probes["latencies"]  # p99 of 40 is the slowest
    assert outcome["opened"] >= 300, outcome  # it really flooded: ~40 a second for 11 s
    assert outcome["busy:max_connections_per_peer"] >= 250, outcome
    assert "max_connections_per_peer" in flood["examples"]["busy:max_connections_per_peer"]
    assert "limit 16 per process" in flood["examples"]["busy:max_connections_per_peer"]
    assert 1 <= probes["flood_held"] <= 16
    assert [answer["ok"] for answer in probes["submits"]] == [True] * 5, probes["submits"]


def test_over_a_limit_health_is_answered_and_anything_else_is_busy_naming_the_limit(short_dir: Path) -> None:
    """With the house full (max_connections 2), a new connection asking health is answered ok;
    one asking slots is told busy naming max_connections; a silent one is told so after the
    first-line timeout. Within a peer's own limit the same holds, naming the per-process limit."""
    path = short_dir / "control.sock"

    async def scenario(**limits: Any) -> list[dict[str, Any]]:
        async with _serving(path, short_dir, first_line_timeout_s=0.8, **limits):
            held = [await asyncio.open_unix_connection(str(path)) for _ in range(2)]
            await asyncio.sleep(0.05)
            answers = [await _request(path, {"id": "h", "op": "health"}),
                       await _request(path, {"id": "s", "op": "slots"}),
                       await _request(path, None)]
            for _, writer in held:
                writer.close()
            return answers

    for limits, name in (({"max_connections": 2}, "max_connections"),
                         ({"max_connections_per_peer": 2}, "max_connections_per_peer")):
        health, slots, silent = asyncio.run(scenario(**limits))
        assert health == {"id": "h", "ok": True, "result": {"status": "ok"}}
        assert slots["id"] == "s" and slots["error"]["code"] == "busy"
        assert slots["error"]["details"]["limit"] == name and name in slots["error"]["message"]
        assert silent["error"]["code"] == "busy" and silent["error"]["details"]["limit"] == name
    assert slots["error"]["details"]["pid"] == os.getpid()


def test_a_request_into_a_house_full_of_idle_connections_takes_the_longest_idle_ones_place(
        short_dir: Path) -> None:
    """max_connections 2, both held by connections that send nothing: a silent newcomer is told
    busy and changes nothing, but a newcomer's request is served; the connection idle the longest
    is told it made room, and the other one is still served."""
    path = short_dir / "control.sock"

    async def scenario() -> tuple[dict[str, Any], ...]:
        async with _serving(path, short_dir, max_connections=2, first_line_timeout_s=0.3):
            oldest = await asyncio.open_unix_connection(str(path))
            await asyncio.sleep(0.1)
            other = await asyncio.open_unix_connection(str(path))
            silent = await _request(path, None)  # waits out the 0.3 s first-line timeout
            served = await _request(path, {"id": "s", "op": "slots"})
            told = json.loads(await asyncio.wait_for(oldest[0].readline(), 2))
            other[1].write(b'{"id": "o", "op": "slots"}\n')
            still = json.loads(await asyncio.wait_for(other[0].readline(), 2))
            for _, writer in (oldest, other):
                writer.close()
            return silent, served, told, still

    silent, served, told, still = asyncio.run(scenario())
    assert silent["error"]["code"] == "busy" and silent["error"]["details"]["limit"] == "max_connections"
    assert served == {"id": "s", "ok": True, "result": {"op": "slots"}}
    assert told["error"]["code"] == "idle_timeout" and told["error"]["details"]["made_room"] is True
    assert still == {"id": "o", "ok": True, "result": {"op": "slots"}}


def test_a_flood_pushes_out_its_own_silent_connections_never_an_operators() -> None:
    """Heard connections are bounded per process and in all: a newcomer pushes out the oldest
    connection of the process that has the most, so an operator's one connection stays."""
    admission = Admission(AdmissionLimits(max_heard=6, max_heard_per_peer=4))
    expired: list[str] = []
    flood, other_flood, operator = (Peer(pid, 1000, 1000) for pid in (11, 12, 13))
    mine = admission.hear(operator, lambda: expired.append("operator"))
    for i in range(10):
        admission.hear(flood, lambda i=i: expired.append(f"flood{i}"))
    assert expired == [f"flood{i}" for i in range(6)] and admission.heard == 5
    admission.hear(other_flood, lambda: expired.append("other"))
    admission.hear(other_flood, lambda: expired.append("other"))  # the house is at 6: flood pays
    assert "operator" not in expired and expired[-1] == "flood6" and admission.heard == 6
    admission.done(mine)
    assert admission.heard == 5 and admission.pushed_out == 7


def test_the_settings_keys_set_the_connection_limits() -> None:
    """control_max_connections, control_max_connections_per_peer and control_first_line_timeout_s
    (vortexd.toml or VORTEX_*) reach the server's options."""
    from vortexd.settings import Settings

    settings = Settings(control_max_connections=9, control_max_connections_per_peer=3,
                        control_first_line_timeout_s=0.4, control_idle_timeout_s=7.0)
    options = ControlServerOptions.from_settings(settings)
    assert (options.max_connections, options.max_connections_per_peer) == (9, 3)
    assert (options.first_line_timeout_s, options.idle_timeout_s) == (0.4, 7.0)
    admission = Admission(options.admission_limits())
    peer = Peer(pid=1, uid=2, gid=2)
    assert [admission.hold(peer) is None for _ in range(4)] == [True, True, True, False]
