"""Plan curves → the per-frame feature vector every displacement basis is linear in.

Most features are plan curves as they are (clipped to a safe range, so an overshooting plan
cannot fold the face); a few are products or trigonometric terms, which keeps the rest of the
warp linear: control displacements = features @ basis.
"""

from __future__ import annotations

import numpy as np

from stages.types import MotionPlan

FEATURES = (
    "jaw", "jaw_closed", "closed", "width", "round", "smile", "eye_wide", "brow_up", "brow_down",
    "blink", "sin_yaw", "versin_yaw", "sin_pitch", "versin_pitch", "sin_roll", "versin_roll",
    "shift_x", "shift_y",
)
"""Names of the feature columns, in order. versin = 1 − cos."""
N_FEATURES = len(FEATURES)
F = {name: k for k, name in enumerate(FEATURES)}

# Safe ranges: beyond these the mesh warp would fold or tear rather than look bigger.
_UNIT_CLIP = (0.0, 1.3)
_SIGNED_CLIP = (-1.3, 1.3)
MAX_ANGLE_DEG = 30.0
_MAX_SHIFT_FRACTION = 0.15  # of the frame size
JAW_RESPONSE = 0.6
"""The jaw feature is jaw_open ** JAW_RESPONSE: calibrated with JAW_DROP on the shared driving
clips' speakers (docs/mesh-warp.md)."""


def fill_features(plan: MotionPlan, start: int, stop: int, frame_size_px: int,
                  out: np.ndarray) -> np.ndarray:
    """Write the (stop − start, N_FEATURES) feature rows for frames [start, stop) into `out`."""
    rows = out[: stop - start]
    sl = slice(start, stop)

    def put(name: str, values: np.ndarray, lo: float, hi: float) -> None:
        """Column `name` = values clipped to [lo, hi]."""
        np.clip(values, lo, hi, out=rows[:, F[name]])

    jaw = rows[:, F["jaw"]]
    put("jaw", plan.jaw_open[sl], *_UNIT_CLIP)
    # The jaw opens quickly at first and then less and less: a half-open plan shows a mouth
    # well apart (as speakers' mouths are on most vowels), while a full one is no wider.
    np.power(jaw, JAW_RESPONSE, out=jaw)
    put("closed", plan.lips_closed[sl], 0.0, 1.0)
    # Lips seal early in a closure (they touch well before the gesture peaks): ease out, 1 − (1 − c)².
    closed = rows[:, F["closed"]]
    np.subtract(1.0, closed, out=closed)
    np.multiply(closed, closed, out=closed)
    np.subtract(1.0, closed, out=closed)
    np.multiply(jaw, closed, out=rows[:, F["jaw_closed"]])
    put("width", plan.lip_width[sl], *_SIGNED_CLIP)
    put("round", plan.lip_round[sl], *_UNIT_CLIP)
    put("smile", plan.smile[sl], *_UNIT_CLIP)
    put("blink", plan.blink[sl], 0.0, 1.0)
    # A blink closes the eye whatever the excitement: the wide-eye lift gives way to it.
    put("eye_wide", plan.eye_wide[sl], *_UNIT_CLIP)
    rows[:, F["eye_wide"]] *= 1.0 - rows[:, F["blink"]]
    put("brow_up", plan.brow[sl], 0.0, _SIGNED_CLIP[1])
    put("brow_down", -np.asarray(plan.brow[sl]), 0.0, _SIGNED_CLIP[1])
    for axis, curve in (("yaw", plan.head_yaw_deg), ("pitch", plan.head_pitch_deg),
                        ("roll", plan.head_roll_deg)):
        rad = rows[:, F[f"sin_{axis}"]]
        np.clip(curve[sl], -MAX_ANGLE_DEG, MAX_ANGLE_DEG, out=rad)
        np.deg2rad(rad, out=rad)
        np.cos(rad, out=rows[:, F[f"versin_{axis}"]])
        np.subtract(1.0, rows[:, F[f"versin_{axis}"]], out=rows[:, F[f"versin_{axis}"]])
        np.sin(rad, out=rad)
    limit = _MAX_SHIFT_FRACTION * frame_size_px
    put("shift_x", plan.shift_x_px[sl], -limit, limit)
    put("shift_y", plan.shift_y_px[sl], -limit, limit)
    return rows
