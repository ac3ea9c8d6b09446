"""Fit driving motion to a slot: resampled to the slot's fps, looped by ping-pong with rounded turns.

The clip plays forward, then backward, then forward…: the position in the clip is a triangle wave
of source-frame index over slot time. A triangle turns with a jump in speed, so the wave is
convolved with a Hann window of TURN_S: straight stretches are unchanged (a symmetric kernel maps a
line to itself) and each turn becomes a smooth slow-down and speed-up, never faster than the clip
itself. Curves are read at those positions by linear interpolation, so every slot frame shows a
pose the clip passes through, and no join steps further than the clip does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.errors import StageInputError
from stages.motion.driving.motion import DrivingMotion

TURN_S = 0.6
"""Width of the rounded turn: long enough to slow down naturally, short next to any clip (≥ 7 s)."""


@dataclass(frozen=True)
class FittedDriving:
    """Curves at the slot's fps (float32, n_frames each), the clip position of every slot frame,
    and the slot frames where the clip turns around (the loop joins)."""

    curves: dict[str, np.ndarray]
    positions: np.ndarray
    joins: np.ndarray


def clip_positions(n_source: int, source_fps: float, n_frames: int, fps: float) -> np.ndarray:
    """Fractional source-frame index of each slot frame: ping-pong with Hann-rounded turns."""
    last = n_source - 1
    if last < 1:
        return np.zeros(n_frames)
    speed = source_fps / fps  # source frames per slot frame
    radius = max(1, int(round(TURN_S * fps / 2)))
    window = np.hanning(2 * radius + 3)[1:-1]
    window /= window.sum()
    t = np.arange(-radius, n_frames + radius, dtype=np.float64)
    folded = np.mod(t * speed, 2 * last)
    triangle = np.where(folded > last, 2 * last - folded, folded)
    # Before the slot starts the clip "was" playing into frame 0 (a line, not a turn), so the
    # start is not rounded: frame 0 shows the clip's frame 0.
    triangle[:radius] = t[:radius] * speed
    # The window's weighted sum in a fixed order (np.convolve sums through BLAS, whose rounding
    # depends on the CPU's kernels: a position landing exactly on a clip frame must land there on
    # every machine). The Hann window is symmetric, so this is the convolution.
    rounded = sum(weight * triangle[k:k + n_frames] for k, weight in enumerate(window))
    return np.clip(rounded, 0.0, last)


def fit_to_slot(motion: DrivingMotion, n_frames: int, fps: float) -> FittedDriving:
    """`motion` over a slot of `n_frames` at `fps`: resampled, and looped by rounded ping-pong."""
    if n_frames < 1 or fps <= 0:
        raise StageInputError("output", "a slot needs at least one frame and a positive fps",
                              n_frames=n_frames, fps=fps)
    positions = clip_positions(motion.n_frames, motion.fps, n_frames, fps)
    source = np.arange(motion.n_frames, dtype=np.float64)
    curves = {name: np.interp(positions, source, values).astype(np.float32)
              for name, values in motion.curves.items()}
    # A blink shut for one clip frame must stay shut in the slot: its lids take the more closed of
    # the two clip frames around each slot frame instead of a blend that would halve a short blink.
    # Read to a millionth of a frame before flooring: an exact landing picks the same two frames everywhere.
    before = np.floor(np.round(positions, 6)).astype(np.int64)
    after = np.minimum(before + 1, motion.n_frames - 1)
    blink = motion.curves["blink"]
    curves["blink"] = np.maximum(blink[before], blink[after]).astype(np.float32)
    direction = np.sign(np.diff(positions))
    turns = np.flatnonzero(direction[1:] * direction[:-1] < 0) + 1
    return FittedDriving(curves, positions, turns)
