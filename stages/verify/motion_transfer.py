"""The independent judge of a driven slot: does the rendered head do what the driving video did?

Both are tracked with MediaPipe's face mesh and read with the same geometry (head rotation, lid
aperture, eye midpoint, and the nose's 2-D parallax — a second reading of yaw and pitch that
needs no depth). The driving video's tracks are laid on the slot's timeline through the
clip positions the fit used, so frame k of the slot is compared with the moment of the clip it
shows (its blinks are found on its own frames, then placed there the same way). Reported: yaw
and pitch correlation and amplitude (gain) by both readings, blink timing and blinks the clip does not have, the steps at the loop joins
against the clip's own largest step, and the high-frequency jitter of the eye midpoint (the clip's
measured on its own frames, since resampling it would smooth it).

`flow_transfer` reads the rendered side a third way, without MediaPipe: the nose tip and eye
corners carried from the slot's first frame by optical flow (stages.verify.flow_parallax). On
warped photos MediaPipe's landmarks move less than the picture does (its nose tip 0.69–1.07 of
the picture's travel, its rigid fit 0.66–0.88 of the yaw; benchmarks/bench_head_sweep.py,
docs/driving.md); the flow columns read what the picture did. Part of that shortfall is
MediaPipe's tracking mode: it crops each frame where the last one's face was, and lags behind a
warp turning by small steps (a real clip reads the same in either order);
`track_out_of_order` tracks the frames in a shuffled order to read a slot without that lag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.motion.curves import gaussian_smooth, true_runs
from stages.motion.driving import face_geometry as geo
from stages.motion.driving.blinks import blink_spans

JITTER_SIGMA_FRAMES = 2.0
"""What is left after a Gaussian of σ = 2 slot frames (83 ms: ≈ 5 Hz and up) counts as jitter."""
POSITION_DECIMALS = 6
"""Clip positions are read to a millionth of a frame before they are cut to whole frames. Slot and
clip rates are small ratios, so positions often land exactly on a clip frame, and the fit's
arithmetic (a convolution, summed in whatever order the BLAS build picks) leaves them an ulp
either side: floored as they come, 70 − 1e-14 would be frame 69 on one machine and 70 on another."""


@dataclass(frozen=True)
class Tracks:
    """Per-frame yaw and pitch (degrees), lid aperture, eye midpoint and the nose's parallax
    (inter-ocular units: geo.nose_parallax, the 2-D reading of yaw and pitch)."""

    yaw: np.ndarray
    pitch: np.ndarray
    aperture: np.ndarray
    eye_mid: np.ndarray
    parallax: np.ndarray

    @classmethod
    def of(cls, landmarks: np.ndarray, reference: np.ndarray) -> "Tracks":
        """Tracks of `landmarks` (T, 478, 3) relative to the `reference` frame's pose."""
        angles = geo.head_rotation_deg(landmarks, reference)
        mid = geo.eye_midpoint(landmarks) / geo.interocular(reference[None])[0]
        return cls(angles[:, 0], angles[:, 1], geo.eye_aperture(landmarks), mid, geo.nose_parallax(landmarks))

    def at(self, positions: np.ndarray) -> "Tracks":
        """The tracks read at fractional frame `positions` (linear interpolation)."""
        frames = np.arange(len(self.yaw))

        def read(values: np.ndarray) -> np.ndarray:
            return np.interp(positions, frames, values)

        def read2(values: np.ndarray) -> np.ndarray:
            return np.column_stack([read(values[:, 0]), read(values[:, 1])])

        return Tracks(read(self.yaw), read(self.pitch), read(self.aperture), read2(self.eye_mid),
                      read2(self.parallax))


@dataclass(frozen=True)
class TransferReport:
    """How the rendered slot follows its driving video (see the module docstring)."""

    yaw_r: float
    pitch_r: float
    yaw_gain: float
    pitch_gain: float
    parallax_yaw_r: float
    parallax_pitch_r: float
    parallax_yaw_gain: float
    parallax_pitch_gain: float
    driving_blinks: list[int]
    rendered_blinks: list[int]
    blink_offsets: list[int]
    join_step_deg: float
    clip_max_step_deg: float
    rendered_max_step_deg: float
    rendered_jitter: float
    driving_jitter: float

    @property
    def blinks_within_one_frame(self) -> int:
        """How many of the driving video's blinks the slot shows within ±1 frame."""
        return sum(abs(offset) <= 1 for offset in self.blink_offsets)

    @property
    def extra_blinks(self) -> int:
        """How many of the slot's blinks the driving video has none of within ±1 frame."""
        return sum(all(abs(r - d) > 1 for d in self.driving_blinks) for r in self.rendered_blinks)


def blink_frames(aperture: np.ndarray, fps: float) -> list[int]:
    """The middle frame of each blink (stages.motion.driving.blinks). The middle, not the lowest
    frame: a shut lid reads flat for several frames, and where in that plateau the minimum falls
    is tracker noise."""
    return [(start + stop - 1) // 2 for start, stop in blink_spans(aperture, fps)]


def blinks_on_slot(aperture: np.ndarray, fps: float, positions: np.ndarray) -> list[int]:
    """The clip's blinks, found on its own frames at its own `fps`, placed on the slot: the middle
    of each run of slot frames whose clip `positions` lie on a blink frame or next to one. Found on
    the clip's frames because reading the clip at the slot's positions blends neighbouring frames,
    and a blink one or two clip frames deep loses half its depth in the blend."""
    before = np.floor(np.round(positions, POSITION_DECIMALS)).astype(np.int64)
    frames = []
    for start, stop in blink_spans(aperture, fps):
        # Each pass of the looped clip over the blink is one run of slot frames.
        frames += [(first + end - 1) // 2 for first, end in true_runs((before + 1 >= start) & (before < stop))]
    return sorted(frames)


def _r_gain(driving: np.ndarray, rendered: np.ndarray) -> tuple[float, float]:
    """Pearson r, and the rendered motion's amplitude over the driving's (ratio of standard
    deviations: how far the head goes, which correlation does not see)."""
    spread = float(np.std(driving))
    gain = float(np.std(rendered)) / spread if spread > 0 else float("nan")
    return float(np.corrcoef(driving, rendered)[0, 1]), gain


def _steps_deg(tracks: Tracks) -> np.ndarray:
    return np.hypot(np.diff(tracks.yaw), np.diff(tracks.pitch))


def jitter(eye_mid: np.ndarray, sigma_frames: float = JITTER_SIGMA_FRAMES) -> float:
    """RMS of the eye midpoint's high-frequency part (inter-ocular units): what a Gaussian of
    `sigma_frames` does not keep."""
    smooth = np.column_stack([gaussian_smooth(eye_mid[:, k], sigma_frames) for k in range(2)])
    return float(np.sqrt(np.mean(np.sum((eye_mid - smooth) ** 2, axis=1))))


def flow_transfer(driving_landmarks: np.ndarray, reference_frame: int, positions: np.ndarray,
                  rendered_frames: np.ndarray,
                  rendered_rest_landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """(yaw r, yaw gain, pitch r, pitch gain) of the rendered nose parallax read by optical flow
    (points from `rendered_rest_landmarks`, the slot's first frame's landmarks, carried into every
    frame of `rendered_frames`) against the driving video's MediaPipe parallax at the clip
    `positions`: the slot's turn as the picture shows it, free of MediaPipe's reading of a warp."""
    from stages.verify.flow_parallax import flow_parallax

    driving = geo.nose_parallax(driving_landmarks) - geo.nose_parallax(driving_landmarks[reference_frame][None])
    frames = np.arange(len(driving))
    rendered = flow_parallax(rendered_frames, rendered_rest_landmarks)
    (yaw_r, yaw_gain), (pitch_r, pitch_gain) = (_r_gain(np.interp(positions, frames, driving[:, k]), rendered[:, k])
                                                for k in (0, 1))
    return yaw_r, yaw_gain, pitch_r, pitch_gain


def track_out_of_order(frames: np.ndarray, seed: int = 0) -> np.ndarray:
    """(T, 478, 3) landmarks of `frames` tracked by one MediaPipe tracker in a fixed shuffled
    order, put back in order (NaN rows where no face). In order, the tracker crops each frame
    where the last one's face was, and on a warp of a photo turning by small steps its landmarks
    lag behind the picture (the sample actor's ±7.5° yaw sweep reads 0.71 by the rigid fit in
    order, 0.82–0.87 shuffled; a real clip reads the same both ways: d9, d14 0.98–1.06)."""
    from stages.image.face import track_landmarks

    order = np.random.default_rng(seed).permutation(len(frames))
    out = np.empty((len(frames),) + (478, 3), np.float64)
    out[order] = track_landmarks(frames[order])
    return out


def measure_transfer(driving_landmarks: np.ndarray, driving_fps: float, reference_frame: int,
                     rendered_landmarks: np.ndarray, fps: float, positions: np.ndarray,
                     joins: np.ndarray) -> TransferReport:
    """Compare a rendered slot's tracks with its driving video's at the fitted clip positions."""
    driving = Tracks.of(driving_landmarks, driving_landmarks[reference_frame])
    on_slot = driving.at(positions)
    rendered = Tracks.of(rendered_landmarks, rendered_landmarks[0])
    # The clip played straight through at the slot's rate: its own largest step per slot frame.
    straight = driving.at(np.arange(0.0, len(driving.yaw) - 1, driving_fps / fps))
    d_blinks = blinks_on_slot(driving.aperture, driving_fps, positions)
    r_blinks = blink_frames(rendered.aperture, fps)
    offsets = [min((r - d for r in r_blinks), key=abs) for d in d_blinks] if r_blinks else []
    steps = _steps_deg(rendered)
    near_joins = [steps[max(0, j - 2):j + 2].max() for j in joins if j < len(steps)]
    (yaw_r, yaw_gain), (pitch_r, pitch_gain) = _r_gain(on_slot.yaw, rendered.yaw), _r_gain(on_slot.pitch, rendered.pitch)
    (p_yaw_r, p_yaw_gain), (p_pitch_r, p_pitch_gain) = (_r_gain(on_slot.parallax[:, k], rendered.parallax[:, k])
                                                        for k in (0, 1))
    return TransferReport(
        yaw_r=yaw_r, pitch_r=pitch_r, yaw_gain=yaw_gain, pitch_gain=pitch_gain,
        parallax_yaw_r=p_yaw_r, parallax_pitch_r=p_pitch_r, parallax_yaw_gain=p_yaw_gain,
        parallax_pitch_gain=p_pitch_gain,
        driving_blinks=d_blinks, rendered_blinks=r_blinks, blink_offsets=offsets,
        join_step_deg=float(max(near_joins, default=0.0)),
        clip_max_step_deg=float(_steps_deg(straight).max()), rendered_max_step_deg=float(steps.max()),
        # The clip's own jitter, on its own frames (resampling would smooth it) with the same cut-off in Hz.
        rendered_jitter=jitter(rendered.eye_mid),
        driving_jitter=jitter(driving.eye_mid, JITTER_SIGMA_FRAMES * driving_fps / fps))
