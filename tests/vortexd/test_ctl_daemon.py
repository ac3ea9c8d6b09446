"""`vortexctl` against a real `vortexd serve` subprocess: submit --wait sees every state, cancel,
drain and resume, slots and status, in human and JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, write_config

pytestmark = pytest.mark.slow

LIFE = ["queued", "preparing", "prepared", "warping", "warped", "finishing", "published"]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One daemon for the module (2 s slots at a 4 s cadence)."""
    folder = tmp_path_factory.mktemp("vortexd-ctl")
    process = DaemonProcess(folder, write_config(folder, cadence_s=4.0))
    process.start()
    yield process
    assert process.stop() == 0, process.log_tail()


def ctl(daemon: DaemonProcess, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """Run `vortexctl --socket <daemon> ARGS` as a user would."""
    return subprocess.run([sys.executable, "-m", "vortexd.ctl", *args, "--socket", str(daemon.socket_path)],
                          capture_output=True, text=True, timeout=timeout_s)


def _recipe_file(daemon: DaemonProcess, slot_id: str, seconds: float = 2.0) -> Path:
    path = daemon.folder / f"{slot_id}.toml"
    path.write_text(f'slot_id = "{slot_id}"\n[speech]\ntext = "Good evening from {slot_id}."\n'
                    f'[output]\nduration_s = {seconds}\n')
    return path


def test_submit_wait_follows_every_state_until_published(daemon: DaemonProcess) -> None:
    """--wait prints each state of the slot's life in order, warp progress, and the video path."""
    result = ctl(daemon, "submit", str(_recipe_file(daemon, "wait-1")), "--wait")
    assert result.returncode == 0, result.stderr
    states = [line.split()[-1] for line in result.stderr.splitlines() if "  state  " in line]
    assert states == LIFE, result.stderr
    assert "accepted slot wait-1" in result.stdout
    assert result.stdout.strip().endswith(f"published wait-1: {daemon.folder / 'out' / 'wait-1' / 'video.mp4'}")


def test_subscribe_json_streams_the_same_life(daemon: DaemonProcess) -> None:
    """--json submit --wait: one JSON object per line, the state events in order, none missed."""
    result = ctl(daemon, "submit", str(_recipe_file(daemon, "wait-2")), "--wait", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    states = [m["event"]["data"]["state"] for m in lines if m.get("event", {}).get("kind") == "state"]
    assert states == LIFE, states


def test_cancel_drain_resume_and_slots(daemon: DaemonProcess) -> None:
    """Drain holds new slots queued; cancel ends one; resume lets the other publish; slots and
    status show it all, RESTARTS 0."""
    assert ctl(daemon, "drain").returncode == 0
    for slot_id in ("held-1", "held-2"):
        assert ctl(daemon, "submit", str(_recipe_file(daemon, slot_id))).returncode == 0
    time.sleep(1.0)
    status = json.loads(ctl(daemon, "status", "held-1", "--json").stdout)["result"]  # the raw response
    assert status["state"] == "queued"
    cancelled = ctl(daemon, "cancel", "held-1", "--reason", "not needed")
    assert cancelled.returncode == 0, cancelled.stderr
    assert ctl(daemon, "cancel", "held-1").returncode != 0  # already final: refused
    assert ctl(daemon, "resume").returncode == 0
    waited = ctl(daemon, "submit", str(_recipe_file(daemon, "held-2")), "--wait")  # same recipe: follows it
    assert waited.returncode == 0, waited.stderr
    rows = {line.split()[1]: line.split() for line in ctl(daemon, "slots").stdout.splitlines()[1:]}
    assert rows["held-1"][2] == "cancelled" and rows["held-2"][2] == "published"
    assert rows["held-2"][3] == "0"
    assert json.loads(ctl(daemon, "status", "held-1", "--json").stdout)["result"]["error"] == "not needed"


def test_a_text_only_recipe_from_outside_the_roots_is_accepted_but_its_files_are_not(daemon: DaemonProcess,
                                                                                      tmp_path: Path) -> None:
    """A recipe kept in a folder outside allowed_roots may still speak text; a relative image
    next to it is refused by field, and the answer does not show the folder's contents."""
    (tmp_path / "talk.toml").write_text('slot_id = "outside"\n[speech]\ntext = "Hello."\n[output]\nduration_s = 1\n')
    assert ctl(daemon, "submit", str(tmp_path / "talk.toml")).returncode == 0
    (tmp_path / "face.toml").write_text('slot_id = "outside-face"\n[actor]\nimage = "me.jpg"\n'
                                        '[speech]\ntext = "Hello."\n')
    refused = ctl(daemon, "submit", str(tmp_path / "face.toml"))
    assert refused.returncode != 0 and "actor.image" in refused.stderr
