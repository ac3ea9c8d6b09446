"""Driving motion without a video: fitting to the slot, templates, and how the planner applies it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.errors import StageInputError
from stages.motion import plan_motion
from stages.motion.driving import fit_to_slot, load_driving
from stages.motion.driving.fit import clip_positions
from stages.motion.driving.motion import MOUTH_CURVES, POSE_CURVES, DrivingMotion, blink_from_aperture
from stages.motion.driving.template import motion_from_template
from stages.types import Phoneme, Speech
from stages.warp.liveportrait.templates import template_from_arrays

CURVES = POSE_CURVES + MOUTH_CURVES


def _motion(n: int = 100, fps: float = 25.0, **curves: np.ndarray) -> DrivingMotion:
    values = {name: np.zeros(n) for name in CURVES}
    values.update(curves)
    return DrivingMotion(fps, values)


def _speech(seconds: float = 4.0) -> Speech:
    rate = 24_000
    t = np.arange(int(seconds * rate)) / rate
    audio = (0.2 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    phonemes = tuple(Phoneme(symbol="a" if i % 2 else "m", start_s=i * 0.2, end_s=i * 0.2 + 0.2)
                     for i in range(int(seconds / 0.2)))
    return Speech(audio=audio, sample_rate_hz=rate, phonemes=phonemes, voice="test", backend="test")


def test_ping_pong_starts_on_the_first_frame_and_never_outruns_the_clip() -> None:
    """A 4 s clip over a 45 s slot: frame 0 shows clip frame 0, positions stay inside the clip,
    no slot frame moves further than the clip does in one, and the clip turns around smoothly."""
    positions = clip_positions(100, 25.0, 1080, 24.0)
    speed = 25.0 / 24.0
    assert positions[0] == 0.0 and positions.min() >= 0.0 and positions.max() <= 99.0
    steps = np.diff(positions)
    assert np.abs(steps).max() <= speed + 1e-9
    # Rounded turns: the speed changes by a small fraction of itself per frame, never flips at once.
    assert np.abs(np.diff(steps)).max() < 0.3 * speed


def test_fitting_finds_the_joins_and_no_join_jumps_further_than_the_clip() -> None:
    """A ramp clip (its largest step is its slope) looped over the slot: each turn is a join, and
    the fitted curve never steps further at one than the clip itself does."""
    ramp = np.linspace(0.0, 20.0, 100)
    fitted = fit_to_slot(_motion(head_yaw_deg=ramp), 1080, 24)
    yaw = fitted.curves["head_yaw_deg"]
    assert yaw.shape == (1080,) and yaw.dtype == np.float32
    assert len(fitted.joins) == 11  # 1080 × 25/24 = 1125 clip frames, 99 a leg: 11 turns
    clip_step = (20.0 / 99) * 25 / 24
    assert all(np.abs(np.diff(yaw[j - 3:j + 3])).max() <= clip_step + 1e-6 for j in fitted.joins)


def test_a_template_gives_the_planner_its_pose_in_the_planner_signs() -> None:
    """LivePortrait yaw +10° and pitch +5° (its signs) become plan yaw +10° and pitch −5°; relative to
    the first frame; the lids come from its eye ratios."""
    n = 20
    yaw, pitch = np.radians(np.linspace(0, 10, n)), np.radians(np.linspace(0, 5, n))
    rot = np.zeros((n, 3, 3))
    for i in range(n):
        ry = np.array([[np.cos(yaw[i]), 0, np.sin(yaw[i])], [0, 1, 0], [-np.sin(yaw[i]), 0, np.cos(yaw[i])]])
        rx = np.array([[1, 0, 0], [0, np.cos(pitch[i]), -np.sin(pitch[i])], [0, np.sin(pitch[i]), np.cos(pitch[i])]])
        rot[i] = (ry @ rx).T  # templates store Rᵀ
    eye = np.full((n, 2), 0.35)
    eye[10] = 0.05
    template = template_from_arrays({"scale": np.ones((n, 1)), "R": rot, "exp": np.zeros((n, 21, 3)),
                                     "t": np.zeros((n, 3)), "fps": 20.0, "eye_close_ratio": eye})
    motion = motion_from_template(template)
    assert motion.curves["head_yaw_deg"][-1] == pytest.approx(10.0, abs=1e-3)
    assert motion.curves["head_pitch_deg"][-1] == pytest.approx(-5.0, abs=1e-3)
    assert motion.curves["head_yaw_deg"][0] == pytest.approx(0.0, abs=1e-9)
    assert motion.curves["blink"][10] == 1.0 and motion.curves["blink"][9] < 0.01


def test_lids_shut_for_blinks_and_held_closures_and_only_narrow_otherwise() -> None:
    """Eyes open at 0.3, 30 fps: a two-frame blink and a blink one frame deep shut the lids all the
    way; a two-second look down and a half-blink narrow them, at most to 0.4 (the rest of the travel
    is the blinks'); eyes held shut for a second stay shut; open eyes stay open."""
    aperture = np.full(600, 0.3)
    aperture[50:52] = 0.06
    aperture[100] = 0.12
    aperture[200:260] = 0.2
    aperture[300] = 0.22
    aperture[400:430] = 0.05
    blink = blink_from_aperture(aperture, 30.0)
    assert blink[50:52].min() == 1.0 and blink[100] == 1.0
    assert 0.3 <= blink[210:250].min() and blink[200:260].max() <= 0.4 and blink[300] <= 0.4
    assert blink[403:427].min() == 1.0
    assert blink[:45].max() < 0.01 and blink[500:].max() < 0.01


def test_a_template_of_the_wrong_shape_is_refused_naming_motion_driving(tmp_path: Path) -> None:
    """A .npz whose R is not (T, 3, 3) is refused as motion.driving, with the reason."""
    path = tmp_path / "bad.npz"
    np.savez(path, scale=np.ones((4, 1)), R=np.zeros((4, 2, 2)), exp=np.zeros((4, 21, 3)), t=np.zeros((4, 3)), fps=25)
    with pytest.raises(StageInputError) as caught:
        load_driving(path)
    assert caught.value.field == "motion.driving" and "'R'" in caught.value.message


def test_pose_mode_takes_head_and_lids_from_the_clip_and_keeps_the_mouth_on_the_speech() -> None:
    """pose: head, lids and brows are the clip's (fitted), the mouth is exactly the speech's plan;
    full: the mouth is the clip's too; an excited preset doubles the clip's head motion."""
    speech = _speech()
    yaw = 10 * np.sin(np.linspace(0, 6, 100))
    jaw = np.clip(np.sin(np.linspace(0, 20, 100)), 0, 1)
    motion = _motion(head_yaw_deg=yaw, blink=(np.arange(100) % 30 == 5) * 1.0, jaw_open=jaw)
    plain = plan_motion(speech, "neutral", seed=3, n_frames=96)
    pose = plan_motion(speech, "neutral", seed=3, n_frames=96, driving=motion, driving_mode="pose")
    full = plan_motion(speech, "neutral", seed=3, n_frames=96, driving=motion, driving_mode="full")
    excited = plan_motion(speech, "excited", seed=3, n_frames=96, driving=motion, driving_mode="pose")
    fitted = fit_to_slot(motion, 96, 24).curves
    for name in ("jaw_open", "lip_width", "lip_round", "lips_closed", "smile"):
        assert np.array_equal(getattr(pose, name), getattr(plain, name)), name
    assert np.allclose(pose.head_yaw_deg, fitted["head_yaw_deg"], atol=1e-5)
    assert np.array_equal(pose.blink, fitted["blink"])
    assert np.allclose(full.jaw_open, fitted["jaw_open"], atol=1e-6)
    assert np.allclose(excited.head_yaw_deg, 2 * fitted["head_yaw_deg"], atol=1e-4)
    assert pose.meta["driving"]["mode"] == "pose" and full.meta["driving"]["mode"] == "full"
