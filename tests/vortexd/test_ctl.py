"""vortexctl against the daemon's real control server, op table and SlotEngine (stage bodies scripted):
human and JSON output, --wait progress, exit statuses."""

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
import time
from pathlib import Path
from typing import Any

import pytest

from stages.errors import StageInputError
from tests.support.engine import EngineUnderTest, ScriptedRunner
from vortexd.control.server import ControlServer
from vortexd.ctl import main
from vortexd.ops import ControlOps, DaemonFacts

REPO = Path(__file__).resolve().parents[2]
STAGES = ("image", "tts", "warp", "encode")
STATE_OF_STAGE = {"image": "preparing", "tts": "prepared", "warp": "warping", "encode": "finishing"}
"""A state each stage's progress comes with (the real walk of a slot's states)."""


class _ServerThread:
    """The daemon's control server and op table over a real SlotEngine (journal, scheduler, slabs,
    publish gate) whose stage bodies are scripted, on its own event loop in a thread, so the
    blocking client can run in the test."""

    def __init__(self, socket_path: Path, root: Path) -> None:
        self.socket_path = socket_path
        self.root = root
        self.runner = ScriptedRunner(root / "out", seconds={"prepare": 0.05, "warp": 0.05, "finish": 0.05})
        self.box: EngineUnderTest | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.box = box = EngineUnderTest(self.root, self.runner, cadence_s=30.0)
        engine = box.start()
        facts = DaemonFacts(phase=lambda: "serving", arena=box.arena, running_tasks=lambda: box.tasks.running,
                            loop_lag_s=lambda: 0.0, metrics_port=lambda: None, started_monotonic_s=time.monotonic(),
                            voices=lambda: {"espeak": ["en-us"], "kokoro": []}, subscribe=box.events.subscribe,
                            notify_status=lambda text: None)
        server = ControlServer(self.socket_path, ControlOps(engine, facts).handle)
        await server.start()
        self._ready.set()
        await self._stop.wait()
        await server.close()
        await box.close()

    @property
    def events(self):
        """The engine's event bus."""
        assert self.box is not None
        return self.box.events

    def start(self) -> _ServerThread:
        self._thread.start()
        assert self._ready.wait(10), "server did not start"
        return self

    def end_streams(self) -> None:
        """Tell every subscriber's stream to finish (as a daemon does when it shuts down)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.events.close)

    def stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


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


def _recipe_file(folder: Path, slot_id: str, text: str = "Hello from the newsroom.", image: bool = False) -> Path:
    """A short recipe file; with `image`, it names faces/anchor.png beside it (the sample portrait)."""
    path = folder / f"{slot_id}.toml"
    actor = ""
    if image:
        from PIL import Image
        from skimage import data

        (folder / "faces").mkdir(exist_ok=True)
        Image.fromarray(data.astronaut()).save(folder / "faces" / "anchor.png")
        actor = '[actor]\nimage = "faces/anchor.png"\n'
    path.write_text(f'slot_id = "{slot_id}"\n{actor}[speech]\ntext = "{text}"\n[motion]\nexpression = "calm"\n'
                    '[output]\nduration_s = 2\nfps = 2\n', encoding="utf-8")
    return path


def test_submit_sends_the_recipe_with_its_folder_and_reports_the_seq(served: _ServerThread, tmp_path: Path) -> None:
    """`submit` prints "accepted slot …"; the daemon got the recipe's folder, so its relative image
    resolved there (the slot's inputs record names that file); a second submit is a duplicate."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    status, out, err = _ctl(served, "submit", str(_recipe_file(recipes, "news-1", image=True)))
    assert status == 0 and out.strip() == "accepted slot news-1 (seq 1)", err
    status, out, _ = _ctl(served, "submit", str(_recipe_file(recipes, "news-1", image=True)), "--json")
    answer = json.loads(out)
    assert status == 0 and answer["result"]["duplicate"] is True and answer["result"]["seq"] == 1
    manifest = served.root / "out" / "news-1" / "manifest.json"
    deadline = time.monotonic() + 20
    while not manifest.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    inputs = json.loads(manifest.read_text())["inputs"]
    assert inputs["actor.image"]["path"] == str(recipes.resolve() / "faces" / "anchor.png")


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
    video = served.root / "out" / "news-2" / "video.mp4"
    assert "accepted slot news-2" in out and out.strip().endswith(f"published news-2: {video}")
    for stage in STAGES:
        assert f"news-2  state  {STATE_OF_STAGE[stage]}" in err and f"{stage:<7} done" in err


def test_submit_wait_exits_1_when_the_slot_fails(served: _ServerThread, tmp_path: Path) -> None:
    """A slot that fails makes `submit --wait` print the failure with its error and exit 1."""
    served.runner.fail("bad-1", "warp", StageInputError("speech.text", "warp crashed"))
    status, _, err = _ctl(served, "submit", "--wait", str(_recipe_file(tmp_path, "bad-1", "please fail")))
    assert status == 1
    assert "state  failed (StageInputError: speech.text: warp crashed)" in err
    assert err.strip().endswith("failed bad-1: StageInputError: speech.text: warp crashed")


def test_submit_wait_json_streams_raw_events(served: _ServerThread, tmp_path: Path) -> None:
    """With --json, --wait prints every protocol line as JSON, ending at the terminal state."""
    status, out, _ = _ctl(served, "--json", "submit", "--wait", str(_recipe_file(tmp_path, "news-3")))
    lines = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert lines[0]["result"]["subscribed"] is True and lines[1]["result"]["slot_id"] == "news-3"
    assert lines[-1]["event"]["kind"] == "state" and lines[-1]["event"]["data"]["state"] == "published"
    progress = [line["event"]["data"]["stage"] for line in lines if line.get("event", {}).get("kind") == "progress"]
    assert progress == list(STAGES)


def test_slots_and_status_show_the_journal(served: _ServerThread, tmp_path: Path) -> None:
    """`slots` prints a newest-first table; `status` the daemon summary; `status SLOT` one slot."""
    for name in ("a-1", "a-2", "a-3"):
        _ctl(served, "submit", "--wait", str(_recipe_file(tmp_path, name)))
    status, out, _ = _ctl(served, "slots", "--limit", "2")
    rows = out.splitlines()
    assert status == 0 and rows[0].split() == ["SEQ", "SLOT", "STATE", "RESTARTS", "CHANGED", "ERROR"]
    assert [row.split()[:4] for row in rows[1:]] == [["3", "a-3", "published", "0"], ["2", "a-2", "published", "0"]]
    status, out, _ = _ctl(served, "status")
    assert status == 0 and "phase: serving" in out and "published: 3" in out and "video_slabs" in out
    status, out, _ = _ctl(served, "status", "a-2", "--json")
    assert json.loads(out)["result"]["result"]["video"] == str(served.root / "out" / "a-2" / "video.mp4")


def test_errors_print_code_and_message_and_exit_1(served: _ServerThread, tmp_path: Path) -> None:
    """Refusals print `error: <code>: <message>` and exit 1: invalid recipe, unknown slot, a
    published slot; a drained daemon still accepts recipes but starts none until `resume`."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"slot_id": "b", "speech": {"text": "hi", "volume": 3}}))
    status, out, err = _ctl(served, "submit", str(bad))
    assert status == 1 and out == "" and err.strip() == "error: invalid_recipe: speech.volume: unknown key"
    status, _, err = _ctl(served, "cancel", "ghost")
    assert status == 1 and err.startswith("error: not_found: ")
    assert _ctl(served, "drain")[0] == 0
    assert _ctl(served, "submit", str(_recipe_file(tmp_path, "late-1")))[0] == 0
    time.sleep(0.3)
    assert json.loads(_ctl(served, "status", "late-1", "--json")[1])["result"]["state"] == "queued"
    status, out, _ = _ctl(served, "resume")
    assert status == 0 and "draining: no" in out
    assert _ctl(served, "submit", "--wait", str(_recipe_file(tmp_path, "late-2")))[0] == 0
    status, _, err = _ctl(served, "cancel", "late-2")
    assert status == 1 and err.startswith("error: conflict: slot 'late-2' is already published")
    status, out, _ = _ctl(served, "cancel", "ghost", "--json")
    assert status == 1 and json.loads(out)["error"]["code"] == "not_found"


def test_cancel_and_subscribe(served: _ServerThread, tmp_path: Path) -> None:
    """`cancel` reports the new state; `subscribe --slot` prints that slot's events until the stream ends."""
    collected: dict[str, Any] = {}

    def watch() -> None:
        collected["result"] = _ctl(served, "subscribe", "--slot", "c-1")

    watcher = threading.Thread(target=watch)
    watcher.start()
    served.runner.hold("c-1", "prepare")
    while not served.events.subscriber_count:
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
    # The slot's prepare was interrupted: nothing after "cancelled" was published.
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
    lines = done.stdout.splitlines()
    assert lines[:2] == ["healthy: yes", "phase: serving"] and "workers:" in lines
