"""Expression presets and preset sequences (`motion.expression`).

A preset is a handful of documented numbers: how large the mouth moves, how much and how fast the
head moves, how often the eyes blink, and the resting eye/brow/smile. A recipe may give one preset,
a list spread over the slot, or explicit `{preset, start_s}` segments; the planner cross-fades the
numbers between segments so no curve jumps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from stages.errors import StageInputError
from stages.motion.curves import crossfade_weights

PRESET_NAMES = ("neutral", "excited", "manic", "calm")
"""The expression presets a recipe may name."""

TRANSITION_S = 0.8
"""Width of the C¹ cross-fade centred on each segment start."""

_FIELD = "motion.expression"


@dataclass(frozen=True)
class Preset:
    """The numbers behind one expression preset.

    mouth_gain: multiplies the viseme jaw/lip excursions (1 = the viseme table's values).
    head_amplitude_deg: 1σ head yaw of the sway noise; pitch uses 0.7×, roll 0.45× of it.
    head_rate_hz: centre rate of the sway noise (its components span 0.45–1.6× this rate).
    shift_amplitude_px: 1σ head translation in pixels of the 512² frame.
    nod_deg: peak downward pitch of an emphasis nod on a stressed syllable.
    blink_interval_s: mean time between blinks (intervals are gamma-distributed around it).
    eye_wide: resting upper-lid raise, 0 … 1.
    brow: resting brow, −1 frown … +1 raised.
    brow_emphasis: extra brow raise at an emphasised syllable.
    smile: resting smile, 0 … 1.
    """

    name: str
    mouth_gain: float
    head_amplitude_deg: float
    head_rate_hz: float
    shift_amplitude_px: float
    nod_deg: float
    blink_interval_s: float
    eye_wide: float
    brow: float
    brow_emphasis: float
    smile: float


# Ordered so that mouth gain, head amplitude and head rate all rise calm < neutral < excited <
# manic: head-motion energy (amplitude × rate) and mouth amplitude are then strictly ordered too.
# Scale check against real talking-head motion (the LivePortrait templates in shared/): per-axis
# head std 1.3–2.3° and RMS speed 6–9 °/s while talking, i.e. between neutral and excited here.
# Smile is held at 0.3 for the lively presets: a wider smile stretches the lips and, measured on
# rendered frames, flattens the vertical lip-gap excursion (excited with smile 0.1 / 0.45 / 0.8:
# gap std 8.5 / 7.5 / 6.0 px), eating the extra mouth gain that sets excited apart from neutral.
PRESETS: dict[str, Preset] = {
    "calm": Preset("calm", mouth_gain=0.6, head_amplitude_deg=0.5, head_rate_hz=0.15,
                   shift_amplitude_px=0.8, nod_deg=0.6, blink_interval_s=5.5, eye_wide=0.0,
                   brow=-0.05, brow_emphasis=0.05, smile=0.2),
    "neutral": Preset("neutral", mouth_gain=0.8, head_amplitude_deg=1.0, head_rate_hz=0.35,
                      shift_amplitude_px=1.6, nod_deg=1.2, blink_interval_s=4.0, eye_wide=0.1,
                      brow=0.0, brow_emphasis=0.12, smile=0.1),
    "excited": Preset("excited", mouth_gain=1.0, head_amplitude_deg=2.0, head_rate_hz=0.6,
                      shift_amplitude_px=3.0, nod_deg=2.2, blink_interval_s=3.0, eye_wide=0.5,
                      brow=0.3, brow_emphasis=0.3, smile=0.3),
    "manic": Preset("manic", mouth_gain=1.2, head_amplitude_deg=3.2, head_rate_hz=1.0,
                    shift_amplitude_px=5.0, nod_deg=3.5, blink_interval_s=2.0, eye_wide=0.8,
                    brow=0.45, brow_emphasis=0.4, smile=0.3),
}

PRESET_PARAMETERS = tuple(f.name for f in fields(Preset) if f.name != "name")
"""The numeric preset fields, in declaration order."""


@dataclass(frozen=True)
class PresetSegment:
    """One preset taking effect at `start_s` seconds into the slot."""

    preset: str
    start_s: float


def _check_name(name: object, index: int | None) -> str:
    where = {} if index is None else {"index": index}
    if not isinstance(name, str) or name.strip().lower() not in PRESETS:
        raise StageInputError(
            _FIELD, f"unknown preset {name!r}; valid presets are {', '.join(PRESET_NAMES)}",
            valid=list(PRESET_NAMES), **where,
        )
    return name.strip().lower()


def _segment_from_item(item: object, index: int) -> PresetSegment:
    if isinstance(item, PresetSegment):
        return PresetSegment(_check_name(item.preset, index), item.start_s)
    if isinstance(item, Mapping):
        extra = set(item) - {"preset", "start_s"}
        if extra or "preset" not in item or "start_s" not in item:
            raise StageInputError(
                _FIELD, f"segment {index} must be {{preset, start_s}}, got keys {sorted(item)}",
                index=index,
            )
        return PresetSegment(_check_name(item["preset"], index), item["start_s"])
    if isinstance(item, str):
        raise StageInputError(_FIELD, "use either a list of preset names or a list of "
                              "{preset, start_s} segments, not a mix", index=index)
    raise StageInputError(
        _FIELD, f"segment {index} must be a preset name or {{preset, start_s}}, got {type(item).__name__}",
        index=index,
    )


def _check_start(start: object, index: int, duration_s: float) -> float:
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start):
        raise StageInputError(_FIELD, f"segment {index} start_s must be a finite number, got {start!r}",
                              index=index)
    if not 0.0 <= start < duration_s:
        raise StageInputError(
            _FIELD, f"segment {index} start_s={start} is outside the slot [0, {duration_s})",
            index=index, duration_s=duration_s,
        )
    return float(start)


def normalize_expression(value: object, duration_s: float) -> tuple[PresetSegment, ...]:
    """Turn a recipe's `motion.expression` into ordered segments starting at 0.

    Accepts a preset name, a list of names (spread evenly over `duration_s`), or a list of
    `{"preset", "start_s"}` dicts / PresetSegment. The first segment is moved to 0; starts must be
    strictly increasing and inside [0, duration_s). Raises StageInputError("motion.expression").
    """
    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0):
        raise StageInputError("output.duration_s", f"duration must be a positive number, got {duration_s!r}")
    if isinstance(value, str):
        return (PresetSegment(_check_name(value, None), 0.0),)
    if not isinstance(value, Sequence) or len(value) == 0:
        raise StageInputError(_FIELD, "expected a preset name or a non-empty list of presets/segments",
                              valid=list(PRESET_NAMES))
    if all(isinstance(item, str) for item in value):
        step_s = duration_s / len(value)
        return tuple(PresetSegment(_check_name(name, i), i * step_s) for i, name in enumerate(value))
    segments = [_segment_from_item(item, i) for i, item in enumerate(value)]
    starts = [_check_start(seg.start_s, i, duration_s) for i, seg in enumerate(segments)]
    for i in range(1, len(starts)):
        if starts[i] <= starts[i - 1]:
            raise StageInputError(
                _FIELD, f"segment start times must increase: segment {i} starts at {starts[i]} "
                f"after segment {i - 1} at {starts[i - 1]}", index=i,
            )
    starts[0] = 0.0  # the first preset covers the slot from its beginning
    return tuple(PresetSegment(seg.preset, start) for seg, start in zip(segments, starts))


@dataclass(frozen=True)
class PresetCurves:
    """Preset parameters per frame after cross-fading: each attribute is float64 (n_frames,)."""

    mouth_gain: np.ndarray
    head_amplitude_deg: np.ndarray
    head_rate_hz: np.ndarray
    shift_amplitude_px: np.ndarray
    nod_deg: np.ndarray
    blink_interval_s: np.ndarray
    eye_wide: np.ndarray
    brow: np.ndarray
    brow_emphasis: np.ndarray
    smile: np.ndarray


def preset_curves(segments: Sequence[PresetSegment], times_s: np.ndarray,
                  transition_s: float = TRANSITION_S) -> PresetCurves:
    """Every preset parameter at `times_s`, cross-faded between segments with a C¹ smoothstep."""
    weights = crossfade_weights(times_s, np.array([s.start_s for s in segments]), transition_s)
    table = np.array([[asdict(PRESETS[s.preset])[p] for p in PRESET_PARAMETERS] for s in segments])
    blended = weights.T @ table  # (n_times, n_parameters)
    return PresetCurves(**{p: blended[:, i] for i, p in enumerate(PRESET_PARAMETERS)})
