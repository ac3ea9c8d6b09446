"""The node on air, on the real daemon: slots stream while they render, go on air at their air
times in one live playlist, and a missed slot's air time carries the filler, never a hole."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.daemon import DaemonProcess, wait_for, write_config

pytestmark = pytest.mark.slow

CADENCE_S = 6.0


def _submit(daemon: DaemonProcess, slot_id: str) -> None:
    recipe = {"slot_id": slot_id, "speech": {"text": f"This is {slot_id} on air."}, "output": {"duration_s": 3}}
    answer = daemon.request("submit", {"recipe": recipe})
    assert answer["ok"], answer


def _state(daemon: DaemonProcess, slot_id: str) -> str:
    return daemon.request("status", {"slot_id": slot_id})["result"]["state"]


def _aired(channel: Path) -> list[tuple[str, bool]]:
    """(slot_id, filler) of every airing so far, from the channel's own state file."""
    state = json.loads((channel / "channel_state.json").read_text())
    return [(entry["slot_id"], entry["filler"]) for entry in state["window"]]


def test_a_missed_slot_airs_the_filler_on_time_and_the_next_slot_airs_after_it(tmp_path: Path) -> None:
    """a publishes and airs; b is held back by a drain until it is late: the filler airs at b's
    air time; c, submitted after `resume`, airs at its own. The live playlist plays across the
    slot boundaries with PyAV, /metrics counts the filler, `status` shows the channel."""
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, cadence_s=CADENCE_S, margin_s=1.0, channel=True))
    daemon.start()
    channel = tmp_path / "out" / "channel"
    try:
        _submit(daemon, "a")
        wait_for(lambda: _state(daemon, "a") == "published", 60, "a published")
        hls = tmp_path / "out" / "a" / "hls"
        assert (hls / "index.m3u8").read_text().count("#EXTINF") == 2 and (hls / "init.mp4").is_file()
        assert daemon.request("drain")["ok"]
        _submit(daemon, "b")
        wait_for(lambda: _state(daemon, "b") == "late", 4 * CADENCE_S, "b late")
        assert daemon.request("resume")["ok"]
        _submit(daemon, "c")
        wait_for(lambda: ("c", False) in _aired(channel), 6 * CADENCE_S, "c on air")
        status = daemon.request("status")["result"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{status['metrics_port']}/metrics", timeout=10).read()
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    aired = _aired(channel)
    names = [slot_id for slot_id, _ in aired]
    assert names.index("a") < names.index("c") and ("filler", True) in aired[names.index("a"):names.index("c")]
    assert status["channel"]["fillers_aired"] >= 1 and status["channel"]["slots_aired"] >= 2
    assert re.search(rb"vortex_channel_fillers_aired [1-9]", metrics)
    assert re.search(rb"vortex_first_segment_seconds_count [1-9]", metrics)
    playlist = (channel / "live.m3u8").read_text()
    assert "#EXT-X-DISCONTINUITY" in playlist and "#EXT-X-PROGRAM-DATE-TIME:" in playlist
    assert "#EXT-X-ENDLIST" not in playlist
    frames = []
    # A live playlist has no end: play from its first listed segment until 3 s of frames are in.
    with av.open(str(channel / "live.m3u8"), options={"live_start_index": "0"}) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == 3 * 24:
                break
    assert len(frames) == 3 * 24 and frames[0].shape == (512, 512, 3)
    assert np.std(frames[0]) > 10  # a picture, not a blank


def test_the_stream_decodes_to_the_same_frames_as_video_mp4_and_arrives_while_it_renders(tmp_path: Path) -> None:
    """A slot's published hls/ and video.mp4 decode to identical frames and audio; its segments
    were readable in the live staging folder before the slot was published; the manifest says
    how soon the first one was (first_segment_s) and lists each segment's duration (≤ 2 s) and sha256."""
    import hashlib

    daemon = DaemonProcess(tmp_path, write_config(tmp_path, cadence_s=20.0, margin_s=1.0, channel=False))
    daemon.start()
    seen_live: list[str] = []
    try:
        recipe = {"slot_id": "s", "speech": {"text": "Streaming while it renders, segment by segment."},
                  "output": {"duration_s": 6}}
        assert daemon.request("submit", {"recipe": recipe})["ok"]
        live = tmp_path / "out" / ".live" / "s"
        deadline = time.monotonic() + 60
        while _state(daemon, "s") != "published" and time.monotonic() < deadline:
            if live.is_dir():
                seen_live += [p.name for p in live.glob("seg_*.m4s") if p.name not in seen_live]
            time.sleep(0.02)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    slot = tmp_path / "out" / "s"
    manifest = json.loads((slot / "manifest.json").read_text())
    assert seen_live, "no segment was readable while the slot rendered"
    assert 0 < manifest["first_segment_s"] < 5.0
    assert all(s["duration_s"] <= 2.0 for s in manifest["segments"])
    assert sum(s["duration_s"] for s in manifest["segments"]) == pytest.approx(6.0, abs=1e-3)
    for segment in manifest["segments"]:
        assert hashlib.sha256((slot / "hls" / segment["name"]).read_bytes()).hexdigest() == segment["sha256"]
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in (slot / "hls" / "index.m3u8").read_text()

    from stages.encode import decode_mp4

    played, filed = decode_mp4(slot / "hls" / "index.m3u8"), decode_mp4(slot / "video.mp4")
    assert len(played.frames) == len(filed.frames) == 6 * 24
    assert np.array_equal(played.frames, filed.frames)
    assert len(filed.audio) == 6 * 24_000 and np.array_equal(played.audio[: len(filed.audio)], filed.audio)
