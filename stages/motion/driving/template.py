"""Driving motion from a LivePortrait motion template (.npz): its pose, translation, lids and lips.

Relative to the template's first frame, as LivePortrait's relative mode drives it: R_i·R_0ᵀ read
back as yaw, pitch and roll (the planner's signs), t_i − t_0 in actor pixels, and the eye and lip
ratios where the template has them (its expression deltas have no meaning outside LivePortrait's
keypoint space, so brows, eye widening and smile stay with the plan).
"""

from __future__ import annotations

import numpy as np

from stages.motion.driving import face_geometry as geo
from stages.motion.driving.motion import DrivingMotion, blink_from_aperture, plan_angles
from stages.warp.liveportrait.templates import MotionTemplate

KEYPOINT_UNIT_PX = 2.3 * 210.0 / 2
"""Actor pixels per keypoint unit: LivePortrait's crop spans [−1, 1] over 2.3 face sizes (its
cropper's scale), and the actor crop's face is ≈ 210 px (stages/image/crop.py)."""
_LIP_RATIO_OPEN = 0.38  # the lip ratio of a wide-open jaw (stages/warp/liveportrait/calibration.py)
_LIP_RATIO_CLOSED = 0.02


def _angles_deg(rotation_t: np.ndarray) -> np.ndarray:
    """(T, 3) LivePortrait yaw, pitch, roll of each frame relative to the first."""
    rot = np.transpose(rotation_t, (0, 2, 1)).astype(np.float64)  # templates store Rᵀ
    return geo.euler_deg(rot @ rot[0].T)


def motion_from_template(template: MotionTemplate) -> DrivingMotion:
    """The plan curves a motion template performs (zeros where it says nothing)."""
    n = template.n_frames
    shift = (template.t[:, :2] - template.t[0, :2]).astype(np.float64) * KEYPOINT_UNIT_PX
    zeros = np.zeros(n)
    curves = {
        **plan_angles(_angles_deg(template.R)),
        "shift_x_px": shift[:, 0], "shift_y_px": shift[:, 1],
        "blink": (blink_from_aperture(template.eye_close_ratio.astype(np.float64).mean(axis=1), template.fps)
                  if template.eye_close_ratio is not None else zeros),
        "eye_wide": zeros, "brow": zeros, "lip_width": zeros, "lip_round": zeros, "smile": zeros,
        "jaw_open": zeros, "lips_closed": zeros,
    }
    if template.lip_close_ratio is not None:
        lip = template.lip_close_ratio[:, 0].astype(np.float64)
        curves["jaw_open"] = np.clip(lip / _LIP_RATIO_OPEN, 0.0, 1.0)
        curves["lips_closed"] = np.clip(1.0 - lip / _LIP_RATIO_CLOSED, 0.0, 1.0)
    return DrivingMotion(template.fps, curves, 0, {"kind": "template", "frames": n})
