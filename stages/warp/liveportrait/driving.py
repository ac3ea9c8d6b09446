"""Driving keypoints x_d: from a motion plan (audio-driven) or a motion template, all frames at once.

From a MotionPlan, per frame (vectorised over frames, no driving video):
1. pose — the source's head angles plus the plan's, converted from the planner's sign
   conventions to LivePortrait's (derived below);
2. expression — exp_s + smile · the calibrated smile delta;
3. translation — t_s + the plan's shift, frame pixels → keypoint units through the crop transform;
4. x_d = transform_keypoint (Eqn. 2);
5. retargeting — the lip MLP at c_d_lip (from jaw_open / lips_closed) and the eye MLP at c_d_eye
   (from blink / eye_wide), each *minus* the same MLP at the source's own ratio, so asking for the
   source's own opening adds nothing whatever the MLP's offset. jaw_open = 0 means a closed mouth
   (the planner's meaning), so a source photographed with its mouth open is closed at rest — what
   the official pipeline's lip normalisation does too;
6. stitching (the official S network).

Sign conventions. LivePortrait keypoints have x right, y down, z into the image, and
get_rotation_matrix applies pitch about x, then yaw about y, then roll about z. For a point in
front of the face centre (z < 0, the nose):
- Ry(+θ): x' = x·cosθ + z·sinθ < x — the nose swings to the image's left: the planner's +yaw (+1);
- Rx(+θ): y' = y·cosθ − z·sinθ > y — the nose drops, chin to chest: the planner's +pitch lifts the
  chin, so pitch flips (−1);
- Rz(+θ): x' = x·cosθ − y·sinθ — the top of the head (y < 0) moves right: clockwise in the image,
  the planner's +roll (+1).

From a motion template (the official relative mode): R_new = (R_i·R_0ᵀ)·R_s, exp_s + (exp_i − exp_0),
s_s·(s_i / s_0), t_s + (t_i − t_0) with tz = 0, then stitching.

Ratios on the source come from its MediaPipe landmarks with the definitions of LivePortrait's
203-point ones (lid gap / eye width, inner-lip gap / mouth width); the two landmark models put
the points in slightly different places, one reason the rest deltas are subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from stages.errors import StageInputError
from stages.types import FRAME_SIZE_PX, PLAN_TO_LP_SIGN, MotionPlan
from stages.warp.liveportrait import keypoints as kpm
from stages.warp.liveportrait.calibration import CALIBRATION, Calibration
from stages.warp.liveportrait.checkpoints import LivePortraitNetworks
from stages.warp.liveportrait.templates import MotionTemplate

MAX_ANGLE_DEG = 30.0
"""Plan angles are clipped here: a single-image warp tears beyond it (the planner's presets stay well inside)."""
MAX_SHIFT_FRACTION = 0.15
"""Plan shifts are clipped to this fraction of the frame."""
MAX_JAW_OPEN = 1.3
"""A loud preset may push jaw_open past 1; up to 1.3 it maps to a lip ratio of 0.49, still inside
what the real templates reach (0.67), so the lip MLP is not asked to extrapolate."""

# MediaPipe face-mesh points for the ratios: (upper, lower) gap over (corner, corner) width.
_EYE_IMAGE_LEFT = ((159, 145), (33, 133))
_EYE_IMAGE_RIGHT = ((386, 374), (362, 263))
_LIP = ((13, 14), (61, 291))
_RATIO_EPS = 1e-6


@dataclass(frozen=True)
class FaceRatios:
    """Eye and lip opening ratios of a face (LivePortrait's c_eye, c_lip)."""

    eye_left: float  # the eye on the image's left (the actor's right)
    eye_right: float
    lip: float

    @property
    def eye(self) -> float:
        """Mean of the two eyes."""
        return 0.5 * (self.eye_left + self.eye_right)


def face_ratios(landmarks_px: np.ndarray) -> FaceRatios:
    """Eye and lip ratios from (478, 3) MediaPipe landmarks."""
    lm = np.asarray(landmarks_px, dtype=np.float64)[:, :2]

    def ratio(pairs: tuple[tuple[int, int], tuple[int, int]]) -> float:
        (a, b), (c, d) = pairs
        return float(np.linalg.norm(lm[a] - lm[b]) / (np.linalg.norm(lm[c] - lm[d]) + _RATIO_EPS))

    return FaceRatios(ratio(_EYE_IMAGE_LEFT), ratio(_EYE_IMAGE_RIGHT), ratio(_LIP))


@dataclass(frozen=True)
class SourceMotion:
    """The source's motion state on the device (batch 1), and the constants every frame reuses."""

    kp: torch.Tensor  # (1, K, 3) canonical keypoints
    pitch: torch.Tensor  # (1, 1) degrees
    yaw: torch.Tensor
    roll: torch.Tensor
    exp: torch.Tensor  # (1, K, 3)
    t: torch.Tensor  # (1, 3)
    scale: torch.Tensor  # (1, 1)
    R: torch.Tensor  # (1, 3, 3) as get_rotation_matrix returns it
    x_s: torch.Tensor  # (1, K, 3)
    ratios: FaceRatios
    lip_rest: torch.Tensor  # (1, K, 3) lip delta at the source's own lip ratio
    eye_rest: torch.Tensor  # (1, K, 3) eye delta at the source's own eye ratio
    shift_to_kp: np.ndarray  # (2, 2) frame-pixel shift → keypoint units


def _lip_input(source_ratio: float, driving: torch.Tensor) -> torch.Tensor:
    """(n, 2) [c_s_lip, c_d_lip] rows."""
    return torch.stack([torch.full_like(driving, source_ratio), driving], dim=1)


def _eye_input(ratios: FaceRatios, driving: torch.Tensor) -> torch.Tensor:
    """(n, 3) [c_s_left, c_s_right, c_d_eye] rows (the pipeline passes one driving eye ratio)."""
    return torch.stack([torch.full_like(driving, ratios.eye_left), torch.full_like(driving, ratios.eye_right),
                        driving], dim=1)


def source_motion(nets: LivePortraitNetworks, kp_info: dict[str, torch.Tensor], ratios: FaceRatios,
                  shift_to_kp: np.ndarray) -> SourceMotion:
    """Bundle M's refined output for the source (batch 1) with its ratios and rest deltas."""
    x_s = kpm.transform_keypoint(kp_info)
    one = x_s.new_ones(1)
    lip_rest = kpm.retarget_lip(nets.lip, x_s, _lip_input(ratios.lip, one * ratios.lip))
    eye_rest = kpm.retarget_eye(nets.eye, x_s, _eye_input(ratios, one * ratios.eye))
    angles = {n: kp_info[n].reshape(1, 1) for n in ("pitch", "yaw", "roll")}
    return SourceMotion(kp=kp_info["kp"], exp=kp_info["exp"], t=kp_info["t"], scale=kp_info["scale"],
                        R=kpm.get_rotation_matrix(*angles.values()), x_s=x_s, ratios=ratios,
                        lip_rest=lip_rest, eye_rest=eye_rest, shift_to_kp=np.asarray(shift_to_kp, np.float64),
                        **angles)


def _unit(curve: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(curve, np.float64), 0.0, 1.0)


def plan_ratios(plan: MotionPlan, ratios: FaceRatios,
                calibration: Calibration = CALIBRATION) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame driving (lip ratio, eye ratio), float32 (n,) each.

    Lip: jaw_open maps [0, 1] onto the calibrated [closed, speech-open] range, then lips_closed
    pulls it back to closed (lips seal whatever the jaw does). Eye: the source's own ratio (its
    eyes as photographed are the rest), widened by eye_wide towards the widest eye seen, then
    closed by blink.
    """
    jaw = np.clip(np.asarray(plan.jaw_open, np.float64), 0.0, MAX_JAW_OPEN)
    closed = _unit(plan.lips_closed)
    lip = calibration.lip_ratio_closed + jaw * (calibration.lip_ratio_open - calibration.lip_ratio_closed)
    lip = lip + closed * (calibration.lip_ratio_closed - lip)
    wide, blink = _unit(plan.eye_wide), _unit(plan.blink)
    eye = ratios.eye + wide * max(calibration.eye_ratio_wide - ratios.eye, 0.0)
    eye = eye + blink * (calibration.eye_ratio_closed - eye)
    return lip.astype(np.float32), eye.astype(np.float32)


def plan_kp_info(source: SourceMotion, plan: MotionPlan,
                 calibration: Calibration = CALIBRATION) -> dict[str, torch.Tensor]:
    """The kp_info (kp, pitch, yaw, roll in degrees, exp, t, scale) of every plan frame."""
    n = plan.n_frames
    dev = source.kp.device

    def column(values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, np.float32), device=dev).reshape(n, 1)

    angles = {name: getattr(source, name) + PLAN_TO_LP_SIGN[name] * column(
        np.clip(curve, -MAX_ANGLE_DEG, MAX_ANGLE_DEG))
        for name, curve in (("pitch", plan.head_pitch_deg), ("yaw", plan.head_yaw_deg), ("roll", plan.head_roll_deg))}
    limit = MAX_SHIFT_FRACTION * FRAME_SIZE_PX
    shift_px = np.clip(np.stack([plan.shift_x_px, plan.shift_y_px], axis=1), -limit, limit)
    shift_kp = shift_px @ source.shift_to_kp.T  # (n, 2): the crop may be rotated against the frame
    t = source.t + torch.cat([torch.as_tensor(shift_kp, dtype=torch.float32, device=dev),
                              torch.zeros(n, 1, device=dev)], dim=1)
    smile = column(np.clip(plan.smile, 0.0, 1.0)).reshape(n, 1, 1)
    exp = source.exp + smile * torch.as_tensor(calibration.smile_delta(), device=dev)
    return {"kp": source.kp.expand(n, -1, -1), "exp": exp, "t": t, "scale": source.scale.expand(n, 1), **angles}


def retarget_and_stitch(nets: LivePortraitNetworks, source: SourceMotion, x_d: torch.Tensor,
                        lip_ratio: torch.Tensor | None = None, eye_ratio: torch.Tensor | None = None) -> torch.Tensor:
    """Add the lip/eye retargeting deltas (relative to the source's rest) to x_d, then stitch."""
    n = x_d.shape[0]
    x_s = source.x_s.expand(n, -1, -1)
    if lip_ratio is not None:
        x_d = x_d + kpm.retarget_lip(nets.lip, x_s, _lip_input(source.ratios.lip, lip_ratio)) - source.lip_rest
    if eye_ratio is not None:
        x_d = x_d + kpm.retarget_eye(nets.eye, x_s, _eye_input(source.ratios, eye_ratio)) - source.eye_rest
    return kpm.stitching(nets.stitching, x_s, x_d)


def plan_keypoints(nets: LivePortraitNetworks, source: SourceMotion, plan: MotionPlan,
                   calibration: Calibration = CALIBRATION) -> torch.Tensor:
    """(n, K, 3) driving keypoints for every frame of `plan` (slice the plan first)."""
    x_d = kpm.transform_keypoint(plan_kp_info(source, plan, calibration))
    lip, eye = plan_ratios(plan, source.ratios, calibration)
    dev = x_d.device
    return retarget_and_stitch(nets, source, x_d, torch.as_tensor(lip, device=dev), torch.as_tensor(eye, device=dev))


def _template_rows(template: MotionTemplate, frames: slice | np.ndarray) -> np.ndarray:
    """The frame indices `frames` names, checked to lie inside the template."""
    n = template.n_frames
    contiguous = not isinstance(frames, slice) or (frames.step in (None, 1) and (frames.stop or 0) <= n)
    rows = np.arange(n)[frames] if isinstance(frames, slice) else np.asarray(frames)
    if not contiguous or rows.size and not 0 <= rows.min() <= rows.max() < n:
        raise StageInputError("motion.template", "the template does not cover the requested frames",
                              frames=str(frames), template_frames=n)
    return rows


LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)
"""The expression keypoints that move the lips (the official pipeline's animation_region "lip")."""


def template_posed(source: SourceMotion, template: MotionTemplate, frames: slice | np.ndarray,
                   keep_source_lips: bool = False,
                   gains: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
    """(n, K, 3) relative-mode keypoints of template frames `frames` (a slice or frame indices),
    before stitching; `keep_source_lips` leaves the lips' expression as the source's, for the lip
    retargeting to move them instead; `gains` (per row: head rotation, translation) scale the
    clip's movement away from its first frame, as the expression presets do.

    Frame 0 of the *whole* template is the reference, so any chunk of a slot moves consistently.
    """
    rows = _template_rows(template, frames)
    dev = source.kp.device

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a, np.float32), device=dev)

    if gains is None:
        rot_i, rot_0 = tensor(template.R[rows]), tensor(template.R[0:1])
        rot = rot_i @ rot_0.transpose(1, 2) @ source.R
    else:
        relative = template.R[rows].astype(np.float64) @ template.R[0].T.astype(np.float64)
        scaled = Rotation.from_rotvec(Rotation.from_matrix(relative).as_rotvec() * gains[0][:, None])
        rot = tensor(scaled.as_matrix()) @ source.R
    delta = tensor(template.exp[rows]) - tensor(template.exp[0:1])
    if keep_source_lips:
        delta[:, list(LIP_KEYPOINTS)] = 0.0
    exp = source.exp + delta
    scale = source.scale * tensor(template.scale[rows]) / tensor(template.scale[0:1])
    if gains is None:
        t = source.t + tensor(template.t[rows]) - tensor(template.t[0:1])
    else:
        t = source.t + tensor((template.t[rows] - template.t[0:1]) * gains[1][:, None])
    x = (source.kp @ rot + exp) * scale[..., None]
    return torch.cat([x[..., :2] + t[:, None, :2], x[..., 2:]], dim=-1)  # tz ignored (set to 0)


def template_keypoints(nets: LivePortraitNetworks, source: SourceMotion, template: MotionTemplate,
                       frames: slice | np.ndarray) -> torch.Tensor:
    """(n, K, 3) stitched driving keypoints of template frames `frames` (official relative mode)."""
    return retarget_and_stitch(nets, source, template_posed(source, template, frames))
