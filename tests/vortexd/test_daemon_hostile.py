"""The defects a hostile or unlucky week found (issue P7), each against a real daemon subprocess:
idle connections, files swapped after the acknowledgement, bad inputs accepted then failed, a
second daemon on the same state folder, and `vortexd render` of a slot too big for memory."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.support.daemon import DaemonProcess, wait_for, write_config

pytestmark = pytest.mark.slow

IDLE_TIMEOUT_S = 2.0


def _state(daemon: DaemonProcess, slot_id: str) -> str | None:
    answer = daemon.request("status", {"slot_id": slot_id})
    return answer["result"]["state"] if answer["ok"] else None


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One daemon whose allowed root is `<folder>/inbox`, with a short control idle timeout."""
    folder = tmp_path_factory.mktemp("vortexd-hostile")
    (folder / "inbox").mkdir()
    process = DaemonProcess(folder, write_config(folder, allowed_roots=[str(folder / "inbox")],
                                                 control_idle_timeout_s=IDLE_TIMEOUT_S))
    process.start()
    yield process
    assert process.stop() == 0, process.log_tail()


def _recipe(slot_id: str, **extra) -> dict:
    data = {"slot_id": slot_id, "speech": {"text": "Good evening."}, "output": {"duration_s": 2}}
    data.update(extra)
    return data


def test_idle_connections_cannot_lock_operators_out(daemon: DaemonProcess) -> None:
    """64 silent connections fill the house: health still answers at once, and after the idle
    timeout the silent ones are told so and closed, so submit works again."""
    idle = []
    for _ in range(64):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket_path))
        idle.append(sock)
    try:
        time.sleep(0.3)
        assert daemon.request("health")["result"]["healthy"]  # a reserve connection
        assert daemon.request("slots")["error"]["code"] == "busy"
        time.sleep(IDLE_TIMEOUT_S + 1.0)
        for sock in idle[:3]:
            sock.settimeout(2.0)
            told = json.loads(sock.makefile("rb").readline())
            assert told["error"]["code"] == "idle_timeout"
        assert daemon.request("slots")["ok"]
    finally:
        for sock in idle:
            sock.close()


def test_a_file_swapped_for_a_symlink_after_the_ack_is_not_what_renders(daemon: DaemonProcess,
                                                                           shared_dir: Path, tmp_path: Path) -> None:
    """The image is read and copied at submit: replacing it afterwards with a symlink to a file
    outside the roots changes nothing; the manifest names the accepted bytes' sha256."""
    inbox = daemon.folder / "inbox"
    accepted = (shared_dir / "faces" / "s9.jpg").read_bytes()
    (inbox / "actor.jpg").write_bytes(accepted)
    secret = tmp_path / "secret.jpg"
    shutil.copy(shared_dir / "faces" / "s10.jpg", secret)
    answer = daemon.request("submit", {"recipe": _recipe("swap", actor={"image": str(inbox / "actor.jpg")})})
    assert answer["ok"], answer
    (inbox / "actor.jpg").unlink()
    (inbox / "actor.jpg").symlink_to(secret)
    wait_for(lambda: _state(daemon, "swap") in ("published", "failed"), 60, "the slot to finish")
    manifest = json.loads((daemon.folder / "out" / "swap" / "manifest.json").read_text())
    assert manifest["inputs"]["actor.image"] == hashlib.sha256(accepted).hexdigest()


def test_a_symlink_out_of_the_roots_is_refused_without_naming_its_target(daemon: DaemonProcess,
                                                                         shared_dir: Path, tmp_path: Path) -> None:
    """A recipe naming a symlink that leads outside the roots is refused; the answer does not
    reveal where the link leads."""
    secret = tmp_path / "hidden-place" / "secret.jpg"
    secret.parent.mkdir()
    shutil.copy(shared_dir / "faces" / "s10.jpg", secret)
    link = daemon.folder / "inbox" / "link.jpg"
    link.symlink_to(secret)
    answer = daemon.request("submit", {"recipe": _recipe("link", actor={"image": str(link)})})
    assert answer["error"]["code"] == "invalid_recipe" and answer["error"]["details"]["field"] == "actor.image"
    assert "hidden-place" not in json.dumps(answer)


def _fake_wav(path: Path) -> Path:
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    return path


@pytest.mark.parametrize("case", ["dog", "fake wav", "not an image"])
def test_bad_inputs_are_refused_at_submit_and_never_journaled(daemon: DaemonProcess, shared_dir: Path,
                                                              case: str) -> None:
    """A dog, a fake wav or a text file as a picture: `invalid_recipe` naming the field at submit;
    the slot never enters the journal, so it can neither fail later nor count as a miss."""
    inbox = daemon.folder / "inbox"
    if case == "dog":
        shutil.copy(shared_dir / "faces" / "s25.jpg", inbox / "dog.jpg")
        recipe, field = _recipe("bad-dog", actor={"image": str(inbox / "dog.jpg")}), "actor.image"
    elif case == "fake wav":
        recipe, field = _recipe("bad-wav", speech={"audio": str(_fake_wav(inbox / "fake.wav"))}), "speech.audio"
    else:
        (inbox / "notes.jpg").write_text("not a picture")
        recipe, field = _recipe("bad-image", actor={"image": str(inbox / "notes.jpg")}), "actor.image"
    answer = daemon.request("submit", {"recipe": recipe})
    assert answer["error"]["code"] == "invalid_recipe", answer
    assert answer["error"]["details"]["field"] == field
    assert daemon.request("status", {"slot_id": recipe["slot_id"]})["error"]["code"] == "not_found"


def test_a_real_wav_is_accepted_and_hashed(daemon: DaemonProcess) -> None:
    """A 2 s 16-bit wav in the inbox is snapshotted and published; the manifest has its sha256."""
    path = daemon.folder / "inbox" / "line.wav"
    t = np.arange(48_000) / 24_000
    samples = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(24_000), out.writeframes(samples.tobytes())
    answer = daemon.request("submit", {"recipe": _recipe("wav", speech={"audio": str(path)})})
    assert answer["ok"], answer
    wait_for(lambda: _state(daemon, "wav") == "published", 60, "the wav slot published")
    manifest = json.loads((daemon.folder / "out" / "wav" / "manifest.json").read_text())
    assert manifest["inputs"]["speech.audio"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_daemon_on_the_same_state_folder_exits_at_once(daemon: DaemonProcess) -> None:
    """Same config: exit status 2 and `error: … already running (pid N)` before touching anything;
    the first daemon keeps serving."""
    second = subprocess.run([sys.executable, "-m", "vortexd.cli", "serve", "--config", str(daemon.config)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert f"already running on state folder {daemon.folder} (pid {daemon.process.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    assert daemon.request("health")["result"]["healthy"]


def test_a_second_daemon_on_another_state_folder_but_the_same_socket_exits_before_warming_up(
        daemon: DaemonProcess, tmp_path: Path) -> None:
    """Its own state folder, the running daemon's socket: exit status 2 within a couple of seconds
    (before loading any backend) naming the socket, no traceback; the first daemon keeps serving."""
    import time

    config = write_config(tmp_path, socket_path=str(daemon.socket_path))
    started = time.monotonic()
    second = subprocess.run([sys.executable, "-m", "vortexd.cli", "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second.stderr
    assert f"another process serves the control socket {daemon.socket_path}" in second.stderr
    assert "Traceback" not in second.stderr and "warmed_up" not in second.stderr
    assert time.monotonic() - started < 10.0
    assert daemon.request("health")["result"]["healthy"]


def test_render_of_a_slot_too_big_for_memory_is_refused_naming_what_it_needs(tmp_path: Path, repo_root: Path) -> None:
    """`vortexd render` of a 600 s recipe under an 8 GB address-space limit (its video needs
    10.5 GiB): `error: not enough memory to render …` naming what it needs, exit 2, nothing
    published, no traceback."""
    (tmp_path / "long.toml").write_text('slot_id = "long"\n[speech]\ntext = "A long slot."\n'
                                        '[output]\nduration_s = 600\n')
    limit = 8 * 2**30

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run([sys.executable, "-m", "vortexd.cli", "render", str(tmp_path / "long.toml"),
                             "-o", str(tmp_path / "out"), "--quiet", "--no-verify"],
                            capture_output=True, text=True, timeout=120, preexec_fn=cap_memory, cwd=repo_root,
                            env={**os.environ, "MALLOC_ARENA_MAX": "2"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: not enough memory to render"), result.stderr
    assert "14400 frames need 10.5 GiB" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "long").exists()
