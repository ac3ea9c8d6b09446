"""Driving videos end to end: refused at submit when unusable; a driven slot follows its video,
measured on the encoded output."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from stages.errors import StageInputError
from vortexd.recipe import parse_recipe
from vortexd.spool import snapshot_inputs

DRIVING = Path(__file__).resolve().parents[3] / "shared" / "driving"
needs_clips = pytest.mark.skipif(not (DRIVING / "d11.mp4").exists(), reason="needs ../shared/driving")


def _recipe(folder: Path, driving: str) -> object:
    return parse_recipe({"slot_id": "driven", "speech": {"text": "Hello."}, "motion": {"driving": driving}}, folder)


def _write_video(path: Path, frames: list[np.ndarray], fps: int, rotation_deg: int = 0) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "12"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation_deg:
            stream.set_display_rotation(rotation_deg)
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def _first_frames(name: str, n: int) -> list[np.ndarray]:
    import av

    with av.open(str(DRIVING / name)) as container:
        return [frame.to_ndarray(format="rgb24") for _, frame in zip(range(n), container.decode(video=0))]


def _faceless_video(path: Path, width: int = 64, height: int = 64) -> None:
    _write_video(path, [np.full((height, width, 3), 20 * i, np.uint8) for i in range(10)], 25)


@needs_clips
def test_a_clip_stored_sideways_is_read_standing_up(tmp_path: Path) -> None:
    """A phone's portrait clip is stored sideways with a display rotation: read upright, its head
    pose is the same as the upright clip's (a sideways face would swap yaw and pitch)."""
    from stages.motion.driving import face_geometry as geo
    from stages.motion.driving import track_video

    frames = _first_frames("d9.mp4", 50)  # 512 × 480: standing up shows in the size too
    _write_video(tmp_path / "upright.mp4", frames, 25)
    upright = track_video(tmp_path / "upright.mp4")
    for rotation, quarter_turns in ((90, -1), (-90, 1)):  # stored turned the other way
        path = tmp_path / f"sideways{rotation}.mp4"
        _write_video(path, [np.ascontiguousarray(np.rot90(rgb, quarter_turns)) for rgb in frames], 25, rotation)
        sideways = track_video(path)
        pose = [geo.head_rotation_deg(v.landmarks, v.landmarks[0]) for v in (upright, sideways)]
        assert sideways.size_px == upright.size_px
        assert np.abs(pose[1] - pose[0]).max() < 1.0, rotation


@needs_clips
def test_a_fast_clip_is_read_at_30_frames_a_second(tmp_path: Path) -> None:
    """A 60 fps clip (d14's first two seconds, each frame shown twice) is tracked at every other
    frame: the same 60 readings at 30 fps as the clip at its own 30 fps, in half the tracking."""
    from stages.motion.driving import track_video

    frames = _first_frames("d14.mp4", 60)
    _write_video(tmp_path / "at30.mp4", frames, 30)
    _write_video(tmp_path / "at60.mp4", [rgb for rgb in frames for _ in range(2)], 60)
    at30, at60 = track_video(tmp_path / "at30.mp4"), track_video(tmp_path / "at60.mp4")
    assert at60.fps == at30.fps == 30.0 and at60.n_frames == at30.n_frames == 60
    assert np.abs(at60.landmarks[..., :2] - at30.landmarks[..., :2]).mean() < 1.0


@pytest.mark.parametrize(("name", "make", "reason"), [
    ("notes.mp4", lambda p: p.write_text("not a video"), "not a readable video"),
    ("sky.mp4", _faceless_video, "a face was found in only 0 of 10 frames"),
    ("huge.mp4", lambda p: _faceless_video(p, 2560, 1440), "frames of 2560×1440 are larger than 1920×1080"),
], ids=["not a video", "no face", "too large"])
def test_an_unusable_driving_video_is_refused_at_submit(tmp_path: Path, name: str, make, reason: str) -> None:
    """The submit snapshot refuses it naming motion.driving and why; nothing is left to render."""
    make(tmp_path / name)
    with pytest.raises(StageInputError) as caught:
        snapshot_inputs(_recipe(tmp_path, name), [tmp_path], tmp_path / "spool")
    assert caught.value.field == "motion.driving" and reason in caught.value.message


@needs_clips
def test_a_usable_driving_video_is_snapshotted_and_hashed(tmp_path: Path) -> None:
    """A real clip is copied into the spool under its sha256 and the recipe names the copy."""
    shutil.copy(DRIVING / "d11.mp4", tmp_path / "idle.mp4")
    recipe, inputs = snapshot_inputs(_recipe(tmp_path, "idle.mp4"), [tmp_path], tmp_path / "spool")
    assert recipe.motion.driving == tmp_path / "spool" / f"{inputs['motion.driving']['sha256']}.mp4"
    assert recipe.motion.driving.read_bytes() == (DRIVING / "d11.mp4").read_bytes()


@needs_clips
@pytest.mark.slow
def test_a_driven_slot_follows_its_video_on_the_encoded_output(tmp_path: Path) -> None:
    """d11 driving a 12 s mesh slot in pose mode, judged on the decoded MP4: head yaw and pitch follow
    the video, the loop joins step no further than the clip, the eye midpoint jitters no more than
    the clip's, and the mouth stays on the speech."""
    from vortexd import pipeline
    from vortexd.settings import Settings
    from tests.support.slots import judge_driven_slot

    backends = pipeline.Backends(Settings(output_dir=tmp_path))
    text = "Good evening from the director node. Tonight the weather looks bright and the roads are clear."
    row = judge_driven_slot(DRIVING / "d11.mp4", text, 12.0, "pose", tmp_path, backends)
    report = row["report"]
    assert report.yaw_r >= 0.9 and report.pitch_r >= 0.75, report  # measured here: 0.97 and 0.82
    assert report.join_step_deg <= report.clip_max_step_deg, report
    assert report.rendered_jitter <= report.driving_jitter, report
    assert row["lag_frames"] is not None and abs(row["lag_frames"]) <= 1, row


@needs_clips
@pytest.mark.slow
def test_the_slot_blinks_when_the_clip_does_and_only_then(tmp_path: Path) -> None:
    """d14 (a blink every second or so, some in narrowed eyes, and a lid flutter that is no blink)
    driving a 12 s mesh slot, judged on the decoded MP4: each of the clip's blinks lands within ±1
    frame and the slot has no blink of its own (measured here: 10 of 10, none extra)."""
    from vortexd import pipeline
    from vortexd.settings import Settings
    from tests.support.slots import judge_driven_slot

    backends = pipeline.Backends(Settings(output_dir=tmp_path))
    text = "Good evening from the director node. Tonight the weather looks bright and the roads are clear."
    report = judge_driven_slot(DRIVING / "d14.mp4", text, 12.0, "pose", tmp_path, backends)["report"]
    assert len(report.driving_blinks) >= 8, report
    assert report.blinks_within_one_frame == len(report.driving_blinks), report
    assert report.extra_blinks == 0, report


@needs_clips
@pytest.mark.slow
def test_the_daemon_renders_a_driven_recipe_and_refuses_a_faceless_clip(tmp_path: Path) -> None:
    """Through a real daemon: a faceless clip is refused at submit naming motion.driving; a real one
    publishes, and its manifest records the clip's sha256 and the mode."""
    import hashlib
    import json

    from tests.support.daemon import DaemonProcess, wait_for, write_config

    shutil.copy(DRIVING / "d12.mp4", tmp_path / "talk.mp4")
    _faceless_video(tmp_path / "sky.mp4")
    daemon = DaemonProcess(tmp_path, write_config(tmp_path))
    daemon.start()
    try:
        def submit(clip: str, slot_id: str) -> dict:
            recipe = {"slot_id": slot_id, "speech": {"text": "Good evening."}, "output": {"duration_s": 3},
                      "motion": {"driving": str(tmp_path / clip), "driving_mode": "full"}}
            return daemon.request("submit", {"recipe": recipe})

        refused = submit("sky.mp4", "faceless")
        assert submit("talk.mp4", "driven")["ok"]
        wait_for(lambda: daemon.request("status", {"slot_id": "driven"})["result"]["state"] == "published",
                 60, "the driven slot published")
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert not refused["ok"] and refused["error"]["code"] == "invalid_recipe"
    assert refused["error"]["details"]["field"] == "motion.driving"
    manifest = json.loads((tmp_path / "out" / "driven" / "manifest.json").read_text())
    assert manifest["driving"]["sha256"] == hashlib.sha256((DRIVING / "d12.mp4").read_bytes()).hexdigest()
    assert manifest["driving"]["mode"] == "full" and manifest["driving"]["kind"] == "video"


@needs_clips
def test_the_clip_motion_is_smoothed_without_lag() -> None:
    """d11's head yaw as the plan gets it against the tracker's raw reading: the best alignment is
    at lag 0 (zero-phase smoothing never delays a turn), the frame-to-frame wobble is smaller, and
    the curve is relative to the clip's neutral frame."""
    from stages.motion.driving import face_geometry, motion_from_video, track_video

    video = track_video(DRIVING / "d11.mp4")
    motion = motion_from_video(video)
    raw = face_geometry.head_rotation_deg(video.landmarks, video.landmarks[motion.reference_frame])[:, 0]
    smooth = motion.curves["head_yaw_deg"]
    lags = range(-5, 6)
    scores = [np.corrcoef(np.roll(smooth, lag)[10:-10], raw[10:-10])[0, 1] for lag in lags]
    assert list(lags)[int(np.argmax(scores))] == 0 and max(scores) > 0.99
    assert np.abs(np.diff(smooth, 2)).mean() < 0.6 * np.abs(np.diff(raw, 2)).mean()
    assert abs(smooth[motion.reference_frame]) < 0.5
