"""The motion planner: speech + expression + seed → per-frame animation curves (a MotionPlan).

Mouth curves come from the phoneme timeline when there is one, else from the audio; they are
sampled half a frame ahead so the mouth leads the sound slightly and never lags it. Head sway,
blinks, brows, eyes and smile come from seeded smooth noise shaped by the (cross-faded) presets.

Sign conventions: yaw + turns the face toward the image's left (the actor's right), pitch + lifts
the chin (so a nod is a negative dip), roll + tilts clockwise in the image; shift x + is right,
shift y + is down, in pixels of the 512² frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.errors import StageInputError
from stages.motion.audio_features import audio_mouth_tracks
from stages.motion.curves import (SmoothNoise, blink_curve, cumulative_phase, raised_cosine_bumps,
                                  soft_limit)
from stages.motion.driving.fit import FittedDriving, fit_to_slot
from stages.motion.driving.motion import DrivingMotion
from stages.motion.presets import (PRESETS, TRANSITION_S, PresetCurves, PresetSegment, normalize_expression,
                                   preset_curves)
from stages.motion.visemes import MouthTracks, viseme_tracks
from stages.types import MotionPlan, Speech

DRIVING_MODES = ("pose", "full")
"""pose: head, lids and brows from the driving clip, the mouth from the speech; full: all from the clip."""

LEAD_FRAMES = 0.5
"""Mouth curves are sampled this many frames ahead of each frame's start time."""
MIN_CLOSURE_FRAMES = 1.2
"""A bilabial closure lasts at least this long, so it shows on at least one frame."""

HEAD_LIMIT_SIGMAS = 2.6
"""Head sway saturates softly at this many σ (neutral yaw stays within about ±3°)."""
PITCH_SCALE, ROLL_SCALE, SHIFT_Y_SCALE = 0.7, 0.45, 0.6
"""Pitch, roll and vertical shift amplitudes relative to yaw / horizontal shift."""
ENGAGEMENT_IDLE, ENGAGEMENT_SPEAKING = 0.7, 1.1
"""Head-motion amplitude factor while silent and while speaking (people move more as they talk)."""

NOD_WIDTH_S, NOD_LEAD_S = 0.45, 0.10
"""An emphasis nod lasts NOD_WIDTH_S and starts NOD_LEAD_S before the stressed vowel."""
BROW_WIDTH_S, BROW_LEAD_S = 0.7, 0.15
"""An emphasis brow raise lasts BROW_WIDTH_S and starts BROW_LEAD_S before the vowel."""
EYE_WIDE_PER_BROW = 0.35
"""How much an emphasis brow raise also widens the eyes."""

BLINK_GAMMA_SHAPE = 4.0
"""Blink intervals are gamma-distributed with this shape (coefficient of variation 0.5)."""
BLINK_MIN_INTERVAL = 0.35
"""No two blinks closer than this fraction of the preset's mean interval."""
BLINK_CLOSE_S = (0.07, 0.10)
BLINK_REOPEN_S = (0.15, 0.20)
"""Per-blink lid fall and rise durations are drawn from these ranges (reopening is slower)."""

FACE_DRIFT_RATE_HZ = 0.08
"""Rate of the slow drift of brow and smile around their preset baselines."""
BROW_DRIFT, SMILE_DRIFT = 0.04, 0.15
"""Drift amplitudes: brow in its units, smile as a fraction of the baseline."""


def _check_request(speech: Speech, seed: int, n_frames: int, fps: int) -> None:
    if not isinstance(speech, Speech):
        raise StageInputError("speech", f"expected a Speech, got {type(speech).__name__}")
    if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps <= 0:
        raise StageInputError("output.fps", f"fps must be a positive integer, got {fps!r}")
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames <= 0:
        raise StageInputError("output.duration_s", f"the slot must have at least one frame, got {n_frames!r}",
                              n_frames=n_frames)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise StageInputError("motion.seed", f"seed must be a non-negative integer, got {seed!r}")


def _mouth_tracks(speech: Speech, duration_s: float, fps: int):
    """The mouth's tracks over `duration_s` and what they were read from: the phoneme timeline
    when the speech has one ("phonemes"), else the audio's loudness and spectrum ("audio")."""
    if speech.phonemes:
        return viseme_tracks(speech.phonemes, duration_s, MIN_CLOSURE_FRAMES / fps), "phonemes"
    return audio_mouth_tracks(speech.audio, speech.sample_rate_hz, duration_s), "audio"


def plan_motion(speech: Speech, expression: tuple[PresetSegment, ...] | str, seed: int,
                n_frames: int, fps: int = 24, driving: DrivingMotion | None = None,
                driving_mode: str = "pose") -> MotionPlan:
    """Plan every per-frame curve of a slot from its speech, expression and seed.

    `expression` is anything `normalize_expression` accepts. The same inputs give the same plan;
    another seed gives different head motion and blink times (the mouth follows the speech).
    With `driving` (a video's or template's motion), head, lids and brows come from it fitted to
    the slot ("pose"), or the mouth too ("full"); the presets still scale head and mouth.
    meta: seed, segments, source ("phonemes" | "audio"), lead_s, transition_s, blink_peaks_s,
    emphasis_s; with driving, also driving (mode, kind, reference_frame, joins).
    """
    _check_request(speech, seed, n_frames, fps)
    duration_s = n_frames / fps
    segments = normalize_expression(expression, duration_s)
    frame_s = np.arange(n_frames) / fps
    lead_s = LEAD_FRAMES / fps

    tracks, source = _mouth_tracks(speech, duration_s + lead_s, fps)
    mouth = tracks.sample(frame_s + lead_s)
    params = preset_curves(segments, frame_s)
    # Independent streams per component, so e.g. the number of blinks drawn never shifts the
    # head noise: changing one part of the plan leaves the others as they were.
    rng_head, rng_blink, rng_emphasis, rng_face = np.random.default_rng(seed).spawn(4)

    emphasis = _EmphasisCurves.build(rng_emphasis, tracks, frame_s)
    head = _head_motion(rng_head, params, tracks.sample(frame_s)["activity"], fps, emphasis.nod)
    blink, blink_peaks_s = _blinks(rng_blink, params, frame_s, fps)
    face = _face(rng_face, params, emphasis.brow, fps)
    lip_gain = 0.5 + 0.5 * params.mouth_gain  # lips excursions scale less than the jaw

    curves = {
        "jaw_open": np.clip(mouth["jaw"] * params.mouth_gain, 0.0, 1.0),
        "lip_width": np.clip(mouth["width"] * lip_gain, -1.0, 1.0),
        "lip_round": np.clip(mouth["round"] * lip_gain, 0.0, 1.0),
        "lips_closed": np.clip(mouth["closed"], 0.0, 1.0),
        "blink": np.clip(blink, 0.0, 1.0),
        **face,
        **head,
    }
    meta = {
        "seed": int(seed),
        "segments": [{"preset": s.preset, "start_s": s.start_s} for s in segments],
        "source": source,
        "lead_s": lead_s,
        "transition_s": TRANSITION_S,
        "blink_peaks_s": [round(float(t), 4) for t in blink_peaks_s],
        "emphasis_s": [round(float(t), 4) for t in tracks.emphasis_s],
    }
    if driving is not None:
        fitted = fit_to_slot(driving, n_frames, fps)
        curves.update(_driven_curves(fitted, params, driving_mode))
        meta["driving"] = {"mode": driving_mode, **driving.meta, "reference_frame": driving.reference_frame,
                           "joins": fitted.joins.tolist()}
    return MotionPlan(fps=fps, meta=meta, **_checked(curves))


def _checked(curves: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The curves as float32, refused if any value is not finite (cannot happen for valid inputs:
    fail loudly rather than render garbage)."""
    curves = {name: values.astype(np.float32) for name, values in curves.items()}
    bad = [name for name, values in curves.items() if not np.all(np.isfinite(values))]
    if bad:
        raise RuntimeError(f"motion planner produced non-finite curves: {bad}")
    return curves


def _driving_gains(params: PresetCurves) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, how much the preset scales a driving clip's head rotation and translation
    (neutral = 1: the clip as it is)."""
    neutral = PRESETS["neutral"]
    return (params.head_amplitude_deg / neutral.head_amplitude_deg,
            params.shift_amplitude_px / neutral.shift_amplitude_px)


def driving_gains(plan: MotionPlan) -> tuple[np.ndarray, np.ndarray]:
    """(head rotation gain, translation gain) per frame of a plan, from its preset segments: what
    a warp that reads the driving clip itself (LivePortrait) applies, as the plan's curves have."""
    segments = tuple(PresetSegment(s["preset"], s["start_s"]) for s in plan.meta["segments"])
    return _driving_gains(preset_curves(segments, np.arange(plan.n_frames) / plan.fps))


def _driven_curves(fitted: FittedDriving, params: PresetCurves, mode: str) -> dict[str, np.ndarray]:
    """The curves a driving clip sets: head (scaled by the preset against neutral), lids and brows
    on the preset's resting values; in "full" mode the mouth (scaled like the speech's) and smile."""
    if mode not in DRIVING_MODES:
        raise StageInputError("motion.driving_mode", f"must be one of {', '.join(DRIVING_MODES)}", got=mode)
    head, shift = _driving_gains(params)
    c = fitted.curves
    driven = {
        "head_yaw_deg": c["head_yaw_deg"] * head, "head_pitch_deg": c["head_pitch_deg"] * head,
        "head_roll_deg": c["head_roll_deg"] * head,
        "shift_x_px": c["shift_x_px"] * shift, "shift_y_px": c["shift_y_px"] * shift,
        "blink": c["blink"],
        "eye_wide": np.clip(params.eye_wide + c["eye_wide"], 0.0, 1.0),
        "brow": np.clip(params.brow + c["brow"], -1.0, 1.0),
    }
    if mode == "full":
        mouth = params.mouth_gain / PRESETS["neutral"].mouth_gain
        driven.update({
            "jaw_open": np.clip(c["jaw_open"] * mouth, 0.0, 1.0), "lip_width": c["lip_width"],
            "lip_round": c["lip_round"], "lips_closed": c["lips_closed"], "smile": c["smile"],
        })
    return driven


@dataclass(frozen=True)
class _EmphasisCurves:
    """Unit-amplitude nod and brow-raise bump trains at the emphasised syllables."""

    nod: np.ndarray
    brow: np.ndarray

    @classmethod
    def build(cls, rng: np.random.Generator, tracks: MouthTracks, frame_s: np.ndarray) -> "_EmphasisCurves":
        """Bumps at `tracks.emphasis_s`, each scaled by its strength and a random factor."""
        n = tracks.emphasis_s.size
        # Not every emphasis is equally marked: vary each one's size a little.
        nod_amps = tracks.emphasis_strength * rng.uniform(0.6, 1.0, n)
        brow_amps = tracks.emphasis_strength * rng.uniform(0.5, 1.0, n)
        nod = raised_cosine_bumps(frame_s, tracks.emphasis_s - NOD_LEAD_S, NOD_WIDTH_S, nod_amps)
        brow = raised_cosine_bumps(frame_s, tracks.emphasis_s - BROW_LEAD_S, BROW_WIDTH_S, brow_amps)
        return cls(nod=nod, brow=brow)


def _head_motion(rng: np.random.Generator, params: PresetCurves, activity: np.ndarray, fps: int,
                 nod: np.ndarray) -> dict[str, np.ndarray]:
    """Head rotation (deg) and translation (px): smooth sway plus emphasis nods."""
    # Sampling fixed noise at a time-warped phase lets the preset's rate change smoothly.
    phase = cumulative_phase(params.head_rate_hz, 1.0 / fps)
    unit = [soft_limit(SmoothNoise.draw(rng).sample(phase), HEAD_LIMIT_SIGMAS) for _ in range(5)]
    engagement = ENGAGEMENT_IDLE + (ENGAGEMENT_SPEAKING - ENGAGEMENT_IDLE) * activity
    angle_deg = params.head_amplitude_deg * engagement
    shift_px = params.shift_amplitude_px * engagement
    return {
        "head_yaw_deg": angle_deg * unit[0],
        "head_pitch_deg": PITCH_SCALE * angle_deg * unit[1] - params.nod_deg * nod,
        "head_roll_deg": ROLL_SCALE * angle_deg * unit[2],
        "shift_x_px": shift_px * unit[3],
        "shift_y_px": SHIFT_Y_SCALE * shift_px * unit[4],
    }


def _blinks(rng: np.random.Generator, params: PresetCurves, frame_s: np.ndarray,
            fps: int) -> tuple[np.ndarray, np.ndarray]:
    """Blink curve and blink peak times: gamma-distributed intervals at the preset's rate."""
    # Count blinks in "blink phase" (∫ 1/interval dt): one unit of phase = one mean interval, so a
    # preset change alters the rate smoothly without re-drawing the schedule.
    phase = cumulative_phase(1.0 / params.blink_interval_s, 1.0 / fps)
    n_draw = int(2.0 * phase[-1]) + 8  # far more than can fit; a fixed count keeps draws stable
    gaps = np.maximum(rng.gamma(BLINK_GAMMA_SHAPE, 1.0 / BLINK_GAMMA_SHAPE, n_draw), BLINK_MIN_INTERVAL)
    first = rng.uniform(0.15, 0.9)
    close_s = rng.uniform(*BLINK_CLOSE_S, n_draw)
    reopen_s = rng.uniform(*BLINK_REOPEN_S, n_draw)
    event_phase = first + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    keep = event_phase < phase[-1]
    # Snap each peak onto a frame so that frame shows the lid fully down (blink = 1).
    peaks_s = np.round(np.interp(event_phase[keep], phase, frame_s) * fps) / fps
    return blink_curve(frame_s, peaks_s, close_s[keep], reopen_s[keep]), peaks_s


def _face(rng: np.random.Generator, params: PresetCurves, brow_bumps: np.ndarray,
          fps: int) -> dict[str, np.ndarray]:
    """Brow, eye_wide and smile: preset baselines, emphasis raises and a slow drift."""
    phase = cumulative_phase(np.full(params.brow.size, FACE_DRIFT_RATE_HZ), 1.0 / fps)
    brow_drift = soft_limit(SmoothNoise.draw(rng).sample(phase), HEAD_LIMIT_SIGMAS)
    smile_drift = soft_limit(SmoothNoise.draw(rng).sample(phase), HEAD_LIMIT_SIGMAS)
    brow_raise = params.brow_emphasis * brow_bumps
    return {
        "eye_wide": np.clip(params.eye_wide + EYE_WIDE_PER_BROW * brow_raise, 0.0, 1.0),
        "brow": np.clip(params.brow + brow_raise + BROW_DRIFT * brow_drift, -1.0, 1.0),
        "smile": np.clip(params.smile * (1.0 + SMILE_DRIFT * smile_drift), 0.0, 1.0),
    }
