"""kill -9 of a process playing the channel out, three times: each restart continues the channel.

A real child process runs a Channel through air times as fast as it can (a made-up wall clock
moving 1 s per tick), airing slots and a filler for every third index, and is killed with
SIGKILL at an arbitrary moment; a new process resumes on the same folder. Whatever moment the
kill hit, the state file is whole, every file the playlist lists exists, no air index airs twice,
and the media and discontinuity sequences run on without reuse.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.hls_media import make_hls_slot
from vortexd.channel import PLAYLIST_NAME, STATE_NAME, Channel, ChannelOptions, Schedule
from vortexd.channel_state import load_state

T0 = 1_700_000_000.0
CADENCE = 5.0
REPO_ROOT = Path(__file__).resolve().parents[2]

PLAYER = """
import sys, time
from pathlib import Path
from vortexd.channel import Channel, ChannelOptions, Schedule
from vortexd.logs import configure_logging

configure_logging("info")
folder, filler, slot_a, slot_b = map(Path, sys.argv[1:5])
t0, cadence = float(sys.argv[5]), float(sys.argv[6])
now = t0
channel = Channel(folder, filler, Schedule(t0, cadence), ChannelOptions(window_slots=2, grace_s=3.0),
                  clock=lambda: now)
last = channel.state.last_index
index = 0 if last is None else last + 1
while True:
    if index % 3 != 1:  # every third air index has no slot: the filler airs there
        channel.slot_ready(index, f"slot-{index}", slot_a if index % 2 else slot_b)
    for step in range(int(cadence)):
        now = t0 + cadence * index + step
        channel.tick(now)
        time.sleep(0.003)
    index += 1
"""


def aired_lines(stderr: str) -> list[dict[str, object]]:
    """The channel's airing log records (JSON lines), in order; a line cut by the kill is skipped."""
    records = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") in ("channel.slot_aired", "channel.filler_aired"):
            records.append(record)
    return records


def run_until_killed(args: list[str], state_path: Path, past_index: int) -> str:
    """Start the player, SIGKILL it once its state shows `past_index` aired, return its stderr."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    child = subprocess.Popen([sys.executable, "-c", PLAYER, *args], stderr=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, env=env, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if state_path.exists() and (load_state(state_path).last_index or -1) >= past_index:
                break
            time.sleep(0.05)
        assert child.poll() is None, f"the player exited early: {child.stderr.read()}"
        time.sleep(0.013 * (past_index % 7))  # land the kill at varying points of a tick
        child.send_signal(signal.SIGKILL)
        _, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return stderr


def check_whole(folder: Path) -> None:
    """The state and playlist a kill left are whole, and every listed file exists."""
    state = load_state(folder / STATE_NAME)
    text = (folder / PLAYLIST_NAME).read_text()
    assert text.startswith("#EXTM3U\n") and text.endswith("\n")
    uris = re.findall(r'URI="([^"]+)"', text) + [l for l in text.splitlines() if l and not l.startswith("#")]
    assert uris and all((folder / uri).is_file() for uri in uris)
    for entry in state.window:
        assert all((folder / entry.folder / s.name).is_file() for s in entry.media.segments)


@pytest.mark.timeout(240)
def test_kill_9_three_times_and_the_channel_continues_without_airing_anything_twice(tmp_path: Path) -> None:
    """Three SIGKILLs at arbitrary moments; each restart resumes the numbering, and across all
    runs every air index, media sequence and discontinuity sequence is used once, in order."""
    slots = {name: make_hls_slot(tmp_path / name / "hls", level=level, tone_hz=tone)
             for name, level, tone in (("a", 40, 440.0), ("b", 200, 880.0), ("filler", 120, 220.0))}
    folder = tmp_path / "channel"
    args = [str(folder), str(slots["filler"]), str(slots["a"]), str(slots["b"]), str(T0), str(CADENCE)]
    records: list[dict[str, object]] = []
    for round_index in range(3):
        records += aired_lines(run_until_killed(args, folder / STATE_NAME, past_index=6 * (round_index + 1)))
        check_whole(folder)
    indices = [int(r["index"]) for r in records]
    ordinals = [int(r["discontinuity_sequence"]) for r in records]
    msns = [int(r["media_sequence"]) for r in records]
    assert indices == sorted(set(indices)) and ordinals == sorted(set(ordinals)) and msns == sorted(set(msns))
    assert all(("filler" in str(r["slot_id"])) == (int(r["index"]) % 3 == 1) for r in records)
    # A last restart in this process continues right after what the state file says aired.
    state = load_state(folder / STATE_NAME)
    last = state.window[-1]
    channel = Channel(folder, slots["filler"], Schedule(T0, CADENCE), ChannelOptions(window_slots=2),
                      clock=lambda: last.air_time_s + 1)
    assert channel.tick(last.air_time_s + 1).aired is None
    aired = channel.tick(last.air_time_s + CADENCE).aired
    assert (aired.index, aired.ordinal) == (last.index + 1, last.ordinal + 1)
    assert aired.first_msn == last.first_msn + len(last.media.segments)
    assert aired.index > max(indices) and aired.ordinal > max(ordinals)
    check_whole(folder)
