"""vortexctl against a real ControlServer: human and JSON output, --wait progress, exit statuses."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from vortexd.control.protocol import ControlError, Request, parse_submit
from vortexd.control.server import ControlServer
from vortexd.events import EventBus
from vortexd.ctl import main
from vortexd.journal import Journal, SlotFinished

REPO = Path(__file__).resolve().parents[2]
STAGES = (("image", 1), ("tts", 1), ("warp", 1080), ("encode", 1))
STATE_OF_STAGE = {"image": "preparing", "tts": "prepared", "warp": "warping", "encode": "finishing"}
"""The SlotState each stage's progress belongs to (the journal takes SlotState names only)."""


class _SmallDaemon:
    """Just enough daemon for the client: journals submits and walks each slot through its stages."""

    def __init__(self, journal: Journal, root: Path) -> None:
        self.journal = journal
        self.root = root
        self.events = EventBus()
        self.seen_args: list[dict[str, Any]] = []
        self.draining = False

    def publish(self, event: dict[str, Any]) -> None:
        self.events.publish(event["slot_id"], event["kind"], **event["data"])

    def _state(self, slot_id: str, state: str, **extra: Any) -> None:
        self.journal.set_state(slot_id, state, **extra)
        self.publish(self.journal.events(slot_id)[-1].to_dict())

    async def _run(self, slot_id: str, fail: bool) -> None:
        try:
            await self._stages(slot_id, fail)
        except SlotFinished:
            pass  # cancelled meanwhile: the journal refuses any further state, so the run stops

    async def _stages(self, slot_id: str, fail: bool) -> None:
        await asyncio.sleep(0.05)
        self.journal.begin_attempt(slot_id)
        for stage, total in STAGES:
            self._state(slot_id, STATE_OF_STAGE[stage])
            for done in (total // 2, total):
                await asyncio.sleep(0.005)
                self.publish({"slot_id": slot_id, "kind": "progress",
                              "data": {"stage": stage, "done": done, "total": total}})
            if fail and stage == "warp":
                self._state(slot_id, "failed", error="warp crashed")
                return
        self._state(slot_id, "published", result={"video": f"/srv/out/{slot_id}/video.mp4"})

    async def handle(self, request: Request) -> Any:
        args = request.args
        if request.op == "submit":
            if self.draining:
                raise ControlError("draining", "the daemon is draining; run `vortexctl resume`")
            self.seen_args.append(dict(args))
            recipe = parse_submit(args, [self.root], self.root)
            existing = self.journal.get(recipe.slot_id)
            seq = self.journal.accept(recipe.slot_id, recipe.model_dump_json(), recipe.content_hash())
            if existing is None:
                asyncio.get_running_loop().create_task(self._run(recipe.slot_id, "fail" in recipe.speech.text))
            record = self.journal.get(recipe.slot_id)
            return {"slot_id": recipe.slot_id, "seq": seq, "state": record.state,
                    "duplicate": existing is not None, "image": str(recipe.actor.image)}
        if request.op == "status":
            if "slot_id" in args:
                record = self.journal.get(args["slot_id"])
                if record is None:
                    raise ControlError("not_found", f"no slot {args['slot_id']!r}", {"slot_id": args["slot_id"]})
                return record.summary()
            return {"state": "draining" if self.draining else "serving", "slots": self.journal.counts()}
        if request.op == "slots":
            return {"slots": [r.summary() for r in self.journal.list(args.get("limit", 20), args.get("states"))]}
        if request.op == "cancel":
            self._state(args["slot_id"], "cancelled", error=args.get("reason"))
            return self.journal.get(args["slot_id"]).summary()
        if request.op in ("drain", "resume"):
            self.draining = request.op == "drain"
            return {"state": "draining" if self.draining else "serving"}
        if request.op == "health":
            return {"status": "ok", "journal": str(self.journal.path.name)}
        return self.events.subscribe(args.get("slot_id"))



class _ServerThread:
    """A ControlServer on its own event loop in a thread, so the blocking client can run in the test."""

    def __init__(self, socket_path: Path, root: Path) -> None:
        self.socket_path = socket_path
        self.root = root
        self.daemon: _SmallDaemon | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        with Journal.open(self.root / "journal.sqlite3") as journal:
            self.daemon = _SmallDaemon(journal, self.root)
            server = ControlServer(self.socket_path, self.daemon.handle)
            await server.start()
            self._ready.set()
            await self._stop.wait()
            await server.close()

    def start(self) -> _ServerThread:
        self._thread.start()
        assert self._ready.wait(5), "server did not start"
        return self

    def end_streams(self) -> None:
        """Tell every subscriber's stream to finish (as a daemon does when it shuts down)."""
        assert self._loop is not None and self.daemon is not None
        self._loop.call_soon_threadsafe(self.daemon.events.close)

    def stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


@pytest.fixture
def short_dir() -> Path:
    """A short folder for the socket (sun_path is limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="vx", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def served(short_dir: Path, tmp_path: Path) -> _ServerThread:
    server = _ServerThread(short_dir / "control.sock", tmp_path).start()
    yield server
    server.stop()


def _ctl(server: _ServerThread, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["--socket", str(server.socket_path), *argv], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def _recipe_file(folder: Path, slot_id: str, text: str = "Hello from the newsroom.") -> Path:
    path = folder / f"{slot_id}.toml"
    path.write_text(f'slot_id = "{slot_id}"\n[actor]\nimage = "faces/anchor.png"\n'
                    f'[speech]\ntext = "{text}"\n[motion]\nexpression = "calm"\n', encoding="utf-8")
    return path


def test_submit_sends_the_recipe_with_its_folder_and_reports_the_seq(served: _ServerThread, tmp_path: Path) -> None:
    """`submit` prints "accepted slot …"; the daemon received base_dir, so relative paths resolve there."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    status, out, _ = _ctl(served, "submit", str(_recipe_file(recipes, "news-1")))
    assert status == 0 and out.strip() == "accepted slot news-1 (seq 1)"
    assert served.daemon.seen_args[0]["base_dir"] == str(recipes.resolve())
    assert served.daemon.seen_args[0]["recipe"]["motion"] == {"expression": "calm"}
    status, out, _ = _ctl(served, "submit", str(_recipe_file(recipes, "news-1")), "--json")
    answer = json.loads(out)
    assert status == 0 and answer["result"]["duplicate"] is True and answer["result"]["seq"] == 1
    assert answer["result"]["image"] == str(recipes.resolve() / "faces" / "anchor.png")


def test_submit_waits_longer_than_other_commands_for_the_daemon_to_check_its_inputs(
        served: _ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A submit's answer comes once the daemon has read its inputs (a driving clip takes up to
    ~45 s), so it waits 180 s by default where other commands wait 30 s; --timeout sets either."""
    from vortexd.control import client

    waits: list[float | None] = []
    opened = client.ControlClient.__init__

    def recording(self: client.ControlClient, path: Path | str, timeout_s: float | None = 30.0) -> None:
        waits.append(timeout_s)
        opened(self, path, timeout_s)

    monkeypatch.setattr(client.ControlClient, "__init__", recording)
    recipe = str(_recipe_file(tmp_path, "news-1"))
    assert _ctl(served, "submit", recipe)[0] == 0
    assert _ctl(served, "slots")[0] == 0
    assert _ctl(served, "submit", recipe, "--timeout", "5")[0] == 0
    assert waits == [180.0, 30.0, 5.0]


def test_submit_wait_follows_progress_until_published(served: _ServerThread, tmp_path: Path) -> None:
    """`submit --wait` shows each stage and ends with "published <slot>: <video>" and exit 0."""
    status, out, err = _ctl(served, "submit", "--wait", str(_recipe_file(tmp_path, "news-2")))
    assert status == 0, err
    assert "accepted slot news-2" in out and out.strip().endswith("published news-2: /srv/out/news-2/video.mp4")
    for stage, _ in STAGES:
        assert f"news-2  state  {STATE_OF_STAGE[stage]}" in err and f"{stage:<7} done" in err


def test_submit_wait_exits_1_when_the_slot_fails(served: _ServerThread, tmp_path: Path) -> None:
    """A slot that fails makes `submit --wait` print the failure with its error and exit 1."""
    status, _, err = _ctl(served, "submit", "--wait", str(_recipe_file(tmp_path, "bad-1", "please fail")))
    assert status == 1
    assert "state  failed (warp crashed)" in err and err.strip().endswith("failed bad-1: warp crashed")


def test_submit_wait_json_streams_raw_events(served: _ServerThread, tmp_path: Path) -> None:
    """With --json, --wait prints every protocol line as JSON, ending at the terminal state."""
    status, out, _ = _ctl(served, "--json", "submit", "--wait", str(_recipe_file(tmp_path, "news-3")))
    lines = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert lines[0]["result"]["subscribed"] is True and lines[1]["result"]["slot_id"] == "news-3"
    assert lines[-1]["event"]["kind"] == "state" and lines[-1]["event"]["data"]["state"] == "published"
    assert sum(1 for line in lines if line.get("event", {}).get("kind") == "progress") == 2 * len(STAGES)


def test_slots_and_status_show_the_journal(served: _ServerThread, tmp_path: Path) -> None:
    """`slots` prints a newest-first table; `status` the daemon summary; `status SLOT` one slot."""
    for name in ("a-1", "a-2", "a-3"):
        _ctl(served, "submit", "--wait", str(_recipe_file(tmp_path, name)))
    status, out, _ = _ctl(served, "slots", "--limit", "2")
    rows = out.splitlines()
    assert status == 0 and rows[0].split() == ["SEQ", "SLOT", "STATE", "RESTARTS", "CHANGED", "ERROR"]
    assert [row.split()[:4] for row in rows[1:]] == [["3", "a-3", "published", "1"], ["2", "a-2", "published", "1"]]
    status, out, _ = _ctl(served, "status")
    assert status == 0 and "state: serving" in out and "published: 3" in out
    status, out, _ = _ctl(served, "status", "a-2", "--json")
    assert json.loads(out)["result"]["result"] == {"video": "/srv/out/a-2/video.mp4"}


def test_errors_print_code_and_message_and_exit_1(served: _ServerThread, tmp_path: Path) -> None:
    """Refusals print `error: <code>: <message>` and exit 1: invalid recipe, unknown slot, draining."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"slot_id": "b", "speech": {"text": "hi", "volume": 3}}))
    status, out, err = _ctl(served, "submit", str(bad))
    assert status == 1 and out == "" and err.strip() == "error: invalid_recipe: speech.volume: unknown key"
    status, _, err = _ctl(served, "cancel", "ghost")
    assert status == 1 and err.startswith("error: not_found: ")
    assert _ctl(served, "drain")[0] == 0
    status, _, err = _ctl(served, "submit", str(_recipe_file(tmp_path, "late-1")))
    assert status == 1 and err.startswith("error: draining: ")
    status, out, _ = _ctl(served, "resume")
    assert status == 0 and "state: serving" in out
    status, out, _ = _ctl(served, "cancel", "ghost", "--json")
    assert status == 1 and json.loads(out)["error"]["code"] == "not_found"


def test_cancel_and_subscribe(served: _ServerThread, tmp_path: Path) -> None:
    """`cancel` reports the new state; `subscribe --slot` prints that slot's events until the stream ends."""
    collected: dict[str, Any] = {}

    def watch() -> None:
        collected["result"] = _ctl(served, "subscribe", "--slot", "c-1")

    watcher = threading.Thread(target=watch)
    watcher.start()
    while not served.daemon.events.subscriber_count:
        threading.Event().wait(0.01)
    status, out, _ = _ctl(served, "submit", str(_recipe_file(tmp_path, "c-1")))
    assert status == 0
    status, out, err = _ctl(served, "cancel", "c-1", "--reason", "wrong script")
    assert status == 0, err
    assert out.strip() == "slot c-1 is cancelled"
    threading.Event().wait(0.2)
    served.end_streams()
    watcher.join(5)
    status, out, _ = collected["result"]
    assert status == 0
    assert "c-1  state  cancelled (wrong script)" in out
    # The slot's own run was stopped by the journal: nothing after "cancelled" was published.
    assert out.strip().splitlines()[-1].endswith("cancelled (wrong script)")


def test_no_daemon_exits_2_with_a_hint(short_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a daemon (no socket, or a stale one) vortexctl exits 2 and says what to check; so do
    usage errors and an unreadable recipe file."""
    out, err = io.StringIO(), io.StringIO()
    assert main(["--socket", str(short_dir / "none.sock"), "health"], out=out, err=err) == 2
    assert "no such socket" in err.getvalue() and "hint: is vortexd running?" in err.getvalue()
    stale = short_dir / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))
    sock.close()  # the socket file exists but nobody listens, as after a crash
    monkeypatch.setenv("VORTEX_SOCKET", str(stale))
    err = io.StringIO()
    assert main(["slots"], out=out, err=err) == 2
    assert f"cannot reach vortexd at {stale}: connection refused" in err.getvalue()
    err = io.StringIO()
    assert main(["slots", "--limit", "0"], out=out, err=err) == 2
    assert main(["frobnicate"], out=out, err=io.StringIO()) == 2
    err = io.StringIO()
    assert main(["submit", str(tmp_path / "missing.toml")], out=out, err=err) == 2
    assert err.getvalue().startswith("error: cannot read")
    assert out.getvalue() == ""


def test_the_console_script_runs_as_a_process_and_honours_vortex_socket(served: _ServerThread) -> None:
    """`python -m vortexd.ctl health` in a real process, socket taken from $VORTEX_SOCKET."""
    env = {**os.environ, "VORTEX_SOCKET": str(served.socket_path), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "vortexd.ctl", "health"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["status: ok", "journal: journal.sqlite3"]
