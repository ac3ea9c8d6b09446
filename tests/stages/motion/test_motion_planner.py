"""The whole plan: shapes and ranges, determinism, presets, blinks, head motion, sequences."""

from __future__ import annotations

import numpy as np
import pytest

from stages.errors import StageInputError
from stages.motion import PRESETS, plan_motion
from stages.types import MotionPlan

FPS = 24
N_FRAMES = 1080
ORDER = ("calm", "neutral", "excited", "manic")
HEAD = ("head_yaw_deg", "head_pitch_deg", "head_roll_deg")
RANGES = {
    "jaw_open": (0, 1), "lip_width": (-1, 1), "lip_round": (0, 1), "lips_closed": (0, 1),
    "blink": (0, 1), "eye_wide": (0, 1), "brow": (-1, 1), "smile": (0, 1),
}


def _head_speed(plan: MotionPlan) -> float:
    """RMS angular speed of the head in degrees per second."""
    velocity = np.stack([np.diff(getattr(plan, c)) * FPS for c in HEAD])
    return float(np.sqrt(np.mean(velocity**2)))


def _head_extent(plan: MotionPlan) -> float:
    """RMS head angle in degrees (how far it moves)."""
    return float(np.sqrt(np.mean(np.stack([getattr(plan, c) for c in HEAD]) ** 2)))


def _blink_peaks(plan: MotionPlan) -> np.ndarray:
    """Frames where a blink reaches full closure (start of each run of blink == 1)."""
    full = plan.blink >= 0.999
    return np.flatnonzero(full & ~np.r_[False, full[:-1]])


@pytest.mark.parametrize("use_phonemes", [True, False])
def test_every_curve_is_float32_finite_and_in_range(speech_45s, audio_only_45s, use_phonemes):
    """Every curve is float32 (n_frames,), finite, and within its documented range."""
    speech = speech_45s if use_phonemes else audio_only_45s
    plan = plan_motion(speech, "manic", seed=3, n_frames=N_FRAMES)
    assert plan.fps == FPS and plan.n_frames == N_FRAMES
    for name, curve in plan.curves().items():
        assert curve.dtype == np.float32 and curve.shape == (N_FRAMES,), name
        assert np.all(np.isfinite(curve)), name
        if name in RANGES:
            lo, hi = RANGES[name]
            assert lo <= curve.min() and curve.max() <= hi, name
    assert plan.meta["source"] == ("phonemes" if use_phonemes else "audio")
    assert plan.meta["seed"] == 3 and plan.meta["segments"] == [{"preset": "manic", "start_s": 0.0}]


def test_same_seed_same_plan_other_seed_other_head_and_blinks(speech_45s):
    """Same inputs and seed → identical curves; another seed → other head motion and blink times."""
    a = plan_motion(speech_45s, "neutral", seed=11, n_frames=N_FRAMES)
    b = plan_motion(speech_45s, "neutral", seed=11, n_frames=N_FRAMES)
    c = plan_motion(speech_45s, "neutral", seed=12, n_frames=N_FRAMES)
    for name in a.curves():
        np.testing.assert_array_equal(a.curves()[name], b.curves()[name])
    assert np.corrcoef(a.head_yaw_deg, c.head_yaw_deg)[0, 1] < 0.9
    assert not np.array_equal(_blink_peaks(a), _blink_peaks(c))
    np.testing.assert_array_equal(a.jaw_open, c.jaw_open)  # the mouth follows the speech only


def test_plan_does_not_touch_global_rng(speech_45s):
    """Planning neither reads nor advances numpy's global random state."""
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    plan_motion(speech_45s, "excited", seed=1, n_frames=N_FRAMES)
    assert np.random.random() == expected


@pytest.mark.parametrize("use_phonemes", [True, False])
def test_mouth_amplitude_is_ordered_by_preset(speech_45s, audio_only_45s, use_phonemes):
    """std(jaw_open) rises strictly calm < neutral < excited < manic."""
    speech = speech_45s if use_phonemes else audio_only_45s
    stds = [plan_motion(speech, p, seed=0, n_frames=N_FRAMES).jaw_open.std() for p in ORDER]
    assert all(x < y for x, y in zip(stds, stds[1:])), stds


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_head_motion_energy_is_ordered_by_preset(speech_45s, seed):
    """Head angular speed and extent both rise strictly calm < neutral < excited < manic."""
    plans = [plan_motion(speech_45s, p, seed=seed, n_frames=N_FRAMES) for p in ORDER]
    speeds = [_head_speed(p) for p in plans]
    extents = [_head_extent(p) for p in plans]
    assert all(x < y for x, y in zip(speeds, speeds[1:])), speeds
    assert all(x < y for x, y in zip(extents, extents[1:])), extents


def test_excited_has_wider_eyes_and_raised_brows(speech_45s):
    """Excited eyes are wider and brows higher than neutral, throughout."""
    neutral = plan_motion(speech_45s, "neutral", seed=0, n_frames=N_FRAMES)
    excited = plan_motion(speech_45s, "excited", seed=0, n_frames=N_FRAMES)
    assert excited.eye_wide.min() > neutral.eye_wide.max()
    assert excited.brow.mean() > neutral.brow.mean() + 0.2


def test_neutral_head_stays_within_a_few_degrees_and_pixels(speech_45s):
    """Neutral yaw stays within ±3° and shifts within ±5 px, across seeds."""
    for seed in range(8):
        plan = plan_motion(speech_45s, "neutral", seed=seed, n_frames=N_FRAMES)
        assert np.abs(plan.head_yaw_deg).max() <= 3.0
        assert np.abs(plan.shift_x_px).max() <= 5.0 and np.abs(plan.shift_y_px).max() <= 5.0
        assert plan.head_yaw_deg.std() > 0.3  # but it does move


def test_calm_is_slow_and_small(speech_45s):
    """Calm moves the head under 1.5° and slowly (RMS speed under half of neutral's)."""
    calm = plan_motion(speech_45s, "calm", seed=0, n_frames=N_FRAMES)
    neutral = plan_motion(speech_45s, "neutral", seed=0, n_frames=N_FRAMES)
    assert np.abs(calm.head_yaw_deg).max() < 1.5
    assert _head_speed(calm) < 0.5 * _head_speed(neutral)


def test_head_motion_is_smooth(speech_45s):
    """Head curves have no jitter: even for manic, under 1 % of their power lies above 4 Hz."""
    plan = plan_motion(speech_45s, "manic", seed=0, n_frames=N_FRAMES)
    freqs_hz = np.fft.rfftfreq(N_FRAMES, 1.0 / FPS)
    for name in HEAD + ("shift_x_px", "shift_y_px"):
        curve = getattr(plan, name).astype(np.float64)
        power = np.abs(np.fft.rfft(curve - curve.mean())) ** 2
        assert power[freqs_hz > 4.0].sum() < 0.01 * power.sum(), name


def test_blink_rate_follows_preset(speech_45s):
    """Blinks average about 45 s / interval per slot (±20 %), more often for livelier presets."""
    means = []
    for preset in ORDER:
        counts = [len(_blink_peaks(plan_motion(speech_45s, preset, seed=s, n_frames=N_FRAMES)))
                  for s in range(6)]
        expected = 45.0 / PRESETS[preset].blink_interval_s
        assert abs(np.mean(counts) - expected) <= 0.2 * expected, (preset, counts, expected)
        means.append(np.mean(counts))
    assert all(x < y for x, y in zip(means, means[1:])), means


def test_blinks_close_fast_and_reopen_slowly(speech_45s):
    """Each blink hits 1 on a frame, reaches it in ≤3 frames and takes longer to reopen."""
    plan = plan_motion(speech_45s, "neutral", seed=4, n_frames=N_FRAMES)
    peaks = _blink_peaks(plan)
    assert len(peaks) >= 6
    for k in peaks[(peaks > 8) & (peaks < N_FRAMES - 8)]:
        window = plan.blink[k - 8:k + 9]
        closing = 8 - np.flatnonzero(window[:9] > 0.01)[0]
        reopening = np.flatnonzero(window[8:] > 0.01)[-1]
        assert closing <= 3 and reopening > closing, window


def test_preset_sequence_changes_without_jumps(speech_45s):
    """A 4-preset sequence is C¹: no step or kink at the boundaries beyond what occurs elsewhere."""
    plan = plan_motion(speech_45s, list(ORDER), seed=2, n_frames=N_FRAMES)
    starts_s = [seg["start_s"] for seg in plan.meta["segments"]][1:]
    t = np.arange(N_FRAMES) / FPS
    near = np.zeros(N_FRAMES, dtype=bool)
    for start in starts_s:
        near |= np.abs(t - start) <= 0.6
    for name in HEAD + ("shift_x_px", "shift_y_px"):
        curve = getattr(plan, name).astype(np.float64)
        d1, d2 = np.abs(np.diff(curve)), np.abs(np.diff(curve, 2))
        assert d1[near[1:]].max() <= 1.2 * d1[~near[1:]].max(), name
        assert d2[near[2:]].max() <= 1.2 * d2[~near[2:]].max(), name
    for name in ("eye_wide", "brow", "smile"):
        curve = getattr(plan, name).astype(np.float64)
        # A cut between presets would step by 0.2–0.4 in one frame.
        assert np.abs(np.diff(curve)[near[1:]]).max() < 0.08, name
        assert np.abs(np.diff(curve, 2)[near[2:]]).max() < 0.02, name
    # Each preset really takes over: eyes end up manic-wide, having started calm…
    assert plan.eye_wide[:200].max() < 0.15 and plan.eye_wide[-100:].min() > 0.7
    # …and the neutral → excited widening (0.1 → 0.5) takes over half a second, 10 % to 90 %.
    b = int(round(starts_s[1] * FPS))
    segment = plan.eye_wide[b - 24:b + 24].astype(np.float64)
    rise = (segment - segment[0]) / (segment[-1] - segment[0])
    assert (np.argmax(rise > 0.9) - np.argmax(rise > 0.1)) / FPS >= 0.4


@pytest.mark.parametrize("kwargs, field", [
    ({"seed": -1}, "motion.seed"),
    ({"seed": 1.5}, "motion.seed"),
    ({"fps": 0}, "output.fps"),
    ({"n_frames": 0}, "output.duration_s"),
    ({"expression": "sleepy"}, "motion.expression"),
])
def test_bad_arguments_name_the_recipe_field(speech_45s, kwargs, field):
    """Invalid seed, fps, length or preset raise StageInputError naming the recipe field."""
    args = {"speech": speech_45s, "expression": "neutral", "seed": 0, "n_frames": N_FRAMES, "fps": FPS}
    args.update(kwargs)
    with pytest.raises(StageInputError) as err:
        plan_motion(**args)
    assert err.value.field == field


def test_video_longer_than_speech_rests_after_it(speech_45s):
    """When the slot outlasts the speech, the mouth rests after the last phoneme."""
    plan = plan_motion(speech_45s, "neutral", seed=0, n_frames=60 * FPS)
    assert plan.n_frames == 60 * FPS
    assert plan.jaw_open[46 * FPS:].max() < 0.01
