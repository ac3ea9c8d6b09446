"""LivePortrait motion templates (.npz): per-frame head pose and expression from a real video.

A template holds, per frame, what M extracted from a driving video: `scale` (T,1), `R` (T,3,3) —
the matrix as `get_rotation_matrix` returns it (Rᵀ, keypoints are row vectors) — `exp` (T,21,3),
`t` (T,3) and the clip's `fps`; some also carry `eye_close_ratio` (T,2) and `lip_close_ratio` (T,1).
`fit_to_slot` resamples a template in time to a slot's fps and frame count: linear in scale,
exp, t and the ratios, spherical (slerp) in rotation, and ping-pong past the clip's end so the
motion never jumps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.spatial.transform import Rotation

from stages.errors import StageInputError

TEMPLATE_FIELD = "motion.template"
NUM_KP = 21
_ROTATION_TOLERANCE = 1e-3
"""‖RRᵀ − I‖∞ allowed: stored float32 matrices are orthonormal to ~2e-7."""

Extend = Literal["mirror", "loop", "hold"]


@dataclass(frozen=True)
class MotionTemplate:
    """Per-frame LivePortrait motion at `fps` (arrays float32, first axis = frame)."""

    fps: float
    scale: np.ndarray  # (T, 1)
    R: np.ndarray  # (T, 3, 3), as returned by get_rotation_matrix (the transpose of the rotation)
    exp: np.ndarray  # (T, 21, 3)
    t: np.ndarray  # (T, 3)
    eye_close_ratio: np.ndarray | None = None  # (T, 2)
    lip_close_ratio: np.ndarray | None = None  # (T, 1)
    source: str = ""

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.scale.shape[0])

    @property
    def duration_s(self) -> float:
        """Length of the clip in seconds."""
        return self.n_frames / self.fps

    def slice(self, frames: slice) -> "MotionTemplate":
        """The frames `frames` of the template (views)."""
        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[frames]

        return replace(self, scale=self.scale[frames], R=self.R[frames], exp=self.exp[frames], t=self.t[frames],
                       eye_close_ratio=cut(self.eye_close_ratio), lip_close_ratio=cut(self.lip_close_ratio))


def _array(data: dict, key: str, shape: tuple[int | None, ...], path: str, required: bool = True) -> np.ndarray | None:
    if key not in data:
        if required:
            raise StageInputError(TEMPLATE_FIELD, f"{path} has no '{key}' array", keys=sorted(data))
        return None
    arr = np.asarray(data[key], dtype=np.float32)
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
        want = "×".join("T" if s is None else str(s) for s in shape)
        raise StageInputError(TEMPLATE_FIELD, f"'{key}' in {path} should be {want}", shape=tuple(arr.shape))
    if not np.isfinite(arr).all():
        raise StageInputError(TEMPLATE_FIELD, f"'{key}' in {path} holds NaN or infinite values")
    return np.ascontiguousarray(arr)


def template_from_arrays(data: dict, source: str = "<arrays>") -> MotionTemplate:
    """Validate a mapping of template arrays (the .npz layout) and build the template."""
    scale = _array(data, "scale", (None, 1), source)
    rot = _array(data, "R", (None, 3, 3), source)
    exp = _array(data, "exp", (None, NUM_KP, 3), source)
    t = _array(data, "t", (None, 3), source)
    eye = _array(data, "eye_close_ratio", (None, 2), source, required=False)
    lip = _array(data, "lip_close_ratio", (None, 1), source, required=False)
    n = scale.shape[0]
    for name, arr in (("R", rot), ("exp", exp), ("t", t), ("eye_close_ratio", eye), ("lip_close_ratio", lip)):
        if arr is not None and arr.shape[0] != n:
            raise StageInputError(TEMPLATE_FIELD, f"'{name}' in {source} has {arr.shape[0]} frames, 'scale' has {n}")
    if n < 1:
        raise StageInputError(TEMPLATE_FIELD, f"{source} holds no frames")
    if "fps" not in data:
        raise StageInputError(TEMPLATE_FIELD, f"{source} has no 'fps'")
    fps = float(np.asarray(data["fps"]).reshape(-1)[0])
    if not np.isfinite(fps) or fps <= 0:
        raise StageInputError(TEMPLATE_FIELD, f"fps in {source} must be positive", fps=fps)
    if (scale <= 0).any():
        raise StageInputError(TEMPLATE_FIELD, f"'scale' in {source} must be positive")
    err = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3, dtype=np.float32)).max()
    if err > _ROTATION_TOLERANCE or (np.linalg.det(rot) <= 0).any():
        raise StageInputError(TEMPLATE_FIELD, f"'R' in {source} is not a rotation matrix per frame",
                              orthonormality_error=float(err))
    return MotionTemplate(fps, scale, rot, exp, t, eye, lip, source)


def load_template(path: str | Path) -> MotionTemplate:
    """Read and validate a motion template .npz (no pickled objects are loaded)."""
    path = Path(path)
    if not path.is_file():
        raise StageInputError(TEMPLATE_FIELD, f"{path} not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise StageInputError(TEMPLATE_FIELD, f"{path} is not a readable .npz: {exc}") from None
    return template_from_arrays(data, str(path))


def source_positions(n_source: int, fps_source: float, n_frames: int, fps: float, extend: Extend) -> np.ndarray:
    """Fractional template frame index for each of `n_frames` output frames at `fps`."""
    pos = np.arange(n_frames, dtype=np.float64) * (fps_source / fps)
    last = n_source - 1
    if last == 0:
        return np.zeros(n_frames)
    if extend == "hold":
        return np.minimum(pos, last)
    if extend == "loop":
        return np.mod(pos, n_source)
    if extend == "mirror":
        period = 2 * last
        folded = np.mod(pos, period)
        return np.where(folded > last, period - folded, folded)
    raise StageInputError("motion.template_extend", f"unknown mode {extend!r}", valid=["mirror", "loop", "hold"])


def fit_to_slot(template: MotionTemplate, fps: float, n_frames: int, extend: Extend = "mirror") -> MotionTemplate:
    """The template resampled to `n_frames` frames at `fps` (frame i is at time i / fps).

    Past the clip's end it plays backwards ('mirror', continuous), restarts ('loop': jumps at the
    seam unless the clip loops) or freezes ('hold').
    """
    if n_frames < 1 or fps <= 0:
        raise StageInputError("output", "a slot needs at least one frame and a positive fps",
                              n_frames=n_frames, fps=fps)
    pos = source_positions(template.n_frames, template.fps, n_frames, fps, extend)
    return resample(template, pos, fps, wrap=extend == "loop")


def resample(template: MotionTemplate, positions: np.ndarray, fps: float, wrap: bool = False) -> MotionTemplate:
    """The template read at fractional frame `positions` (one output frame each, at `fps`): linear
    in scale, exp, t and the ratios, spherical in rotation; `wrap` interpolates the last frame
    into the first (a loop) instead of holding it."""
    pos = np.asarray(positions, dtype=np.float64)
    i0 = np.floor(pos).astype(np.int64) % template.n_frames
    i1 = (i0 + 1) % template.n_frames if wrap else np.minimum(i0 + 1, template.n_frames - 1)
    w = (pos - np.floor(pos)).astype(np.float32)

    def lerp(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        ww = w.reshape((-1,) + (1,) * (a.ndim - 1))
        return ((1 - ww) * a[i0] + ww * a[i1]).astype(np.float32)

    rots = Rotation.from_matrix(template.R.astype(np.float64))
    step = (rots[i0].inv() * rots[i1]).as_rotvec() * w[:, None]
    rot = (rots[i0] * Rotation.from_rotvec(step)).as_matrix().astype(np.float32)
    return MotionTemplate(float(fps), lerp(template.scale), rot, lerp(template.exp), lerp(template.t),
                          lerp(template.eye_close_ratio), lerp(template.lip_close_ratio), template.source)
