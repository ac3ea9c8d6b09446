"""The real daemon as a subprocess: cadence with overlap, supervision, hostile input, metrics, kill -9."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, scrape_metrics, wait_for, write_config

pytestmark = pytest.mark.slow

LINES = ("Good evening from the director node.", "Maybe people like bubbles.", "The weather looks bright.",
         "Please stand by for the news.", "Thank you and good night.")


def _recipe(i: int, **extra) -> dict:
    data = {"slot_id": f"slot-{i}", "speech": {"text": LINES[i % len(LINES)]},
            "motion": {"seed": i}, "output": {"duration_s": 6}}
    data.update(extra)
    return data


def _collect_events(daemon: DaemonProcess, sink: list, stop: threading.Event) -> None:
    with daemon.client(timeout_s=None) as client:
        _, events = client.subscribe()
        for message in events:
            sink.append(message)
            if stop.is_set():
                return


def _states(daemon: DaemonProcess) -> dict[str, str]:
    return {s["slot_id"]: s["state"] for s in daemon.request("slots", {"limit": 100})["result"]["slots"]}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One daemon for the module, stopped with SIGTERM at the end."""
    folder = tmp_path_factory.mktemp("vortexd")
    process = DaemonProcess(folder, write_config(folder))
    process.start()
    yield process
    assert process.stop() == 0, process.log_tail()


def test_five_slots_publish_before_deadline_with_prepare_overlapping_warp(daemon: DaemonProcess) -> None:
    """Five 6 s slots at a 6 s cadence all publish before their deadlines; TTS of k+1 runs while k warps."""
    events: list = []
    stop = threading.Event()
    listener = threading.Thread(target=_collect_events, args=(daemon, events, stop), daemon=True)
    listener.start()
    time.sleep(0.3)
    for i in range(5):
        answer = daemon.request("submit", {"recipe": _recipe(i)})
        assert answer["ok"], answer
    wait_for(lambda: all(_states(daemon).get(f"slot-{i}") == "published" for i in range(5)), 120, "5 published")
    stop.set()
    daemon.request("health")  # one more event-free round trip lets the listener see stop
    for i in range(5):
        status = daemon.request("status", {"slot_id": f"slot-{i}"})["result"]
        assert status["result"]["deadline_slack_s"] > 0, status
        assert (daemon.folder / "out" / f"slot-{i}" / "video.mp4").is_file()
    times: dict[tuple[str, str], float] = {}
    for message in events:
        event = message.get("event", {})
        if event.get("kind") == "state":
            times.setdefault((event["slot_id"], event["data"]["state"]), event["at"])
    overlaps = 0
    for k in range(4):
        warp_start, warp_end = times[(f"slot-{k}", "warping")], times[(f"slot-{k}", "warped")]
        prep_start, prep_end = times[(f"slot-{k+1}", "preparing")], times[(f"slot-{k+1}", "prepared")]
        overlaps += prep_start < warp_end and prep_end > warp_start
    assert overlaps >= 3, times


def test_a_failing_stage_fails_only_its_slot_as_rejected(daemon: DaemonProcess) -> None:
    """A voice espeak does not know is found only when speaking: that slot fails alone, counted as
    rejected (not a deadline miss), the next slot publishes and health stays green."""
    bad = daemon.request("submit", {"recipe": _recipe(5, speech={"text": "Hello.", "voice": "xx-nowhere"})})
    good = daemon.request("submit", {"recipe": _recipe(6)})
    assert bad["ok"] and good["ok"]
    wait_for(lambda: _states(daemon).get("slot-6") == "published", 60, "slot-6 published")
    failed = daemon.request("status", {"slot_id": "slot-5"})["result"]
    assert failed["state"] == "failed" and "speech.voice" in failed["error"]
    assert daemon.request("health")["result"]["healthy"]
    assert daemon.request("status")["result"]["stats"]["rejected"] >= 1


def test_a_thousand_hostile_lines_each_get_a_structured_error(daemon: DaemonProcess) -> None:
    """Bad JSON, unknown ops, huge lines and invalid recipes each get {ok: false, error: {code, …}}."""
    hostile: list[bytes] = []
    for i in range(1000):
        kind = i % 5
        if kind == 0:
            hostile.append(b"{not json" + str(i).encode())
        elif kind == 1:
            hostile.append(json.dumps({"id": i, "op": f"explode{i}"}).encode())
        elif kind == 2:
            hostile.append(b"[" * 5000 + b"]" * 5000 if i % 10 == 2 else b"x" * (2 << 20))
        elif kind == 3:
            hostile.append(json.dumps({"id": i, "op": "submit", "args": {"recipe": {"slot_id": "h", "speech": {}}}}).encode())
        else:
            hostile.append(json.dumps({"id": i, "op": "submit", "args": {"recipe": {
                "slot_id": f"h{i}", "speech": {"text": "hi"}, "motion": {"expression": "furious"}}}}).encode())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(daemon.socket_path))
    reader = sock.makefile("rb")
    writer = threading.Thread(target=lambda: [sock.sendall(line + b"\n") for line in hostile], daemon=True)
    writer.start()
    codes = []
    for _ in hostile:
        answer = json.loads(reader.readline())
        assert answer["ok"] is False and {"code", "message", "details"} <= set(answer["error"]), answer
        codes.append(answer["error"]["code"])
    sock.close()
    assert set(codes) >= {"bad_json", "unknown_op", "line_too_long", "invalid_recipe"}
    furious = [c for c, line in zip(codes, hostile) if b"furious" in line]
    assert set(furious) == {"invalid_recipe"}
    assert daemon.request("health")["result"]["healthy"]


def test_voices_lists_espeak_and_kokoro_voices(daemon: DaemonProcess) -> None:
    """The voices op names the espeak voices and the Kokoro voices a recipe may use."""
    voices = daemon.request("voices")["result"]["voices"]
    assert "en-us" in voices["espeak"] and "kokoro:jf_alpha" in voices["kokoro"]


def test_metrics_endpoint_exposes_slot_timing_series(daemon: DaemonProcess) -> None:
    """After a slot published and one was rejected, /metrics has stage and end-to-end histograms,
    slack, outcomes (agreeing with the journal), arena and warp rate (the test runs its own slots:
    it passes alone and in any order)."""
    mute = {"text": "Hello.", "voice": "xx-nowhere"}
    for recipe in (_recipe(7, slot_id="metrics-ok"), _recipe(8, slot_id="metrics-mute", speech=mute)):
        assert daemon.request("submit", {"recipe": recipe})["ok"]
    wait_for(lambda: _states(daemon).get("metrics-ok") == "published"
              and _states(daemon).get("metrics-mute") == "failed", 60, "one slot published, one rejected")
    values = scrape_metrics(daemon)
    published = [k for k, v in _states(daemon).items() if v == "published"]
    # Each publish counted once, and the counter agrees with the journal.
    assert (values['vortex_slots_total{outcome="published"}']
            + values['vortex_slots_total{outcome="published_late"}']) == len(published) >= 1
    assert values['vortex_slots_total{outcome="rejected"}'] >= 1
    assert values['vortex_stage_duration_seconds_count{stage="warp"}'] >= 1
    assert values["vortex_slot_end_to_end_seconds_count"] >= 1
    assert values["vortex_warp_frames_per_second"] > 0
    assert values['vortex_arena_bytes{kind="budget",region="video_slabs"}'] >= 2 * 144 * 512 * 512 * 3
    assert any(k.startswith("vortex_deadline_slack_seconds_bucket") for k in values)
    assert "vortex_deadline_misses_total" in values and "vortex_queue_depth" in values


def test_kill_9_mid_slot_then_restart_publishes_every_recipe_exactly_once(tmp_path: Path) -> None:
    """kill -9 while a slot warps; after a restart every accepted recipe is published exactly once."""
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, max_slot_frames=240, cadence_s=10.0))
    daemon.start()
    for i in range(3):
        assert daemon.request("submit", {"recipe": _recipe(i, output={"duration_s": 10})})["ok"]
    wait_for(lambda: "warping" in _states(daemon).values(), 60, "a slot warping")
    daemon.stop(signal.SIGKILL)
    restarted = DaemonProcess(tmp_path, daemon.config)
    restarted.start()
    try:
        wait_for(lambda: all(v == "published" for v in _states(restarted).values())
                  and len(_states(restarted)) == 3, 120, "all published after restart")
        restarts = {s["slot_id"]: s["attempts"] for s in restarted.request("slots")["result"]["slots"]}
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    # The slot killed mid-warp (and any not yet started) ran again: RESTARTS says so, once.
    assert set(restarts.values()) <= {0, 1} and 1 in restarts.values(), restarts
    published = sorted(p.name for p in (tmp_path / "out").iterdir() if (p / "manifest.json").is_file())
    assert published == ["slot-0", "slot-1", "slot-2"]
    with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
        rows = db.execute("SELECT slot_id, COUNT(*) FROM events WHERE kind = 'state' "
                          "AND data_json LIKE '%\"published\"%' GROUP BY slot_id").fetchall()
    assert dict(rows) == {"slot-0": 1, "slot-1": 1, "slot-2": 1}


def test_sigterm_mid_slot_drains_within_the_bound_and_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM while a slot warps: exit 0 within drain_timeout_s; after a restart every slot is published once."""
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, max_slot_frames=240, cadence_s=10.0, drain_timeout_s=15.0))
    daemon.start()
    for i in range(2):
        assert daemon.request("submit", {"recipe": _recipe(i, output={"duration_s": 10})})["ok"]
    wait_for(lambda: "warping" in _states(daemon).values(), 60, "a slot warping")
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout_s=40) == 0, daemon.log_tail()
    assert time.monotonic() - started < 15.0 + 10.0
    restarted = DaemonProcess(tmp_path, daemon.config)
    restarted.start()
    try:
        wait_for(lambda: sorted(_states(restarted).values()) == ["published", "published"], 120,
                  "both published after restart")
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if (p / "manifest.json").is_file()) == ["slot-0", "slot-1"]


def test_a_slot_that_cannot_make_its_deadline_is_late_and_counted(tmp_path: Path) -> None:
    """With a 1.5 s cadence a 6 s slot cannot be published in time: it is marked late and counted as a miss."""
    daemon = DaemonProcess(tmp_path, write_config(tmp_path, cadence_s=1.5, margin_s=1.0))
    daemon.start()
    try:
        assert daemon.request("submit", {"recipe": _recipe(0)})["ok"]
        wait_for(lambda: _states(daemon).get("slot-0") == "late", 30, "slot-0 late")
        time.sleep(1.5)  # one scheduling tick to mirror the miss into the metrics
        port = daemon.request("status")["result"]["metrics_port"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert 'vortex_slots_total{outcome="late"} 1.0' in text
    assert "vortex_deadline_misses_total 1.0" in text
    assert not (tmp_path / "out" / "slot-0").exists()
