"""Implicit-keypoint maths around the networks: head pose, Eqn. 2, stitching and retargeting.

Keypoints are row vectors (B, K, 3) in (x right, y down, z into the image) order, so a rotation
R acts as kp · Rᵀ; `get_rotation_matrix` therefore returns Rᵀ, as the official code does.
None of these functions modifies its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from stages.warp.liveportrait.config import BIN_OFFSET_DEG, BIN_WIDTH_DEG, NUM_BINS


def headpose_pred_to_degree(pred: torch.Tensor) -> torch.Tensor:
    """(B,66) bin logits → (B,) degrees = 3·Σ softmax_i·i − 97.5; any other input is returned as is.

    Uniform logits give 0°, a one-hot at bin 0 gives −97.5°, at bin 65 gives +97.5°.
    """
    if pred.ndim != 2 or pred.shape[1] != NUM_BINS:
        return pred
    bins = torch.arange(NUM_BINS, dtype=pred.dtype, device=pred.device)
    return torch.sum(torch.softmax(pred, dim=1) * bins, dim=1) * BIN_WIDTH_DEG - BIN_OFFSET_DEG


def get_rotation_matrix(pitch_deg: torch.Tensor, yaw_deg: torch.Tensor, roll_deg: torch.Tensor) -> torch.Tensor:
    """(B,3,3) Rᵀ with R = Rz(roll)·Ry(yaw)·Rx(pitch); angles in degrees, shape (B,) or (B,1).

    kp · Rᵀ applies pitch about x first, then yaw about y, then roll about z.
    """
    # deg / 180 · π in that order (and π as a Python float) keeps float32 bit parity.
    x, y, z = (a.reshape(-1) / 180 * math.pi for a in (pitch_deg, yaw_deg, roll_deg))
    one, zero = torch.ones_like(x), torch.zeros_like(x)

    def matrix(*entries: torch.Tensor) -> torch.Tensor:
        return torch.stack(entries, dim=1).reshape(-1, 3, 3)

    rot_x = matrix(one, zero, zero, zero, torch.cos(x), -torch.sin(x), zero, torch.sin(x), torch.cos(x))
    rot_y = matrix(torch.cos(y), zero, torch.sin(y), zero, one, zero, -torch.sin(y), zero, torch.cos(y))
    rot_z = matrix(torch.cos(z), -torch.sin(z), zero, torch.sin(z), torch.cos(z), zero, zero, zero, one)
    return torch.bmm(torch.bmm(rot_z, rot_y), rot_x).transpose(1, 2)


def refine_kp_info(raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """M's raw outputs → kp_info with angles in degrees (B,1) and kp, exp as (B,K,3) (get_kp_info)."""
    b = raw["kp"].shape[0]
    info = dict(raw)
    for name in ("pitch", "yaw", "roll"):
        info[name] = headpose_pred_to_degree(raw[name])[:, None]
    info["kp"] = raw["kp"].reshape(b, -1, 3)
    info["exp"] = raw["exp"].reshape(b, -1, 3)
    return info


def transform_keypoint(kp_info: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Eqn. 2: x = scale·(kp·Rᵀ + exp) + (tx, ty, 0), as (B,K,3).

    kp and exp may be (B,3K) or (B,K,3); pitch/yaw/roll may be (B,66) logits or degrees (B,)/(B,1).
    tz is ignored.
    """
    kp = kp_info["kp"]
    b = kp.shape[0]
    kp = kp.reshape(b, -1, 3)
    rot = get_rotation_matrix(*(headpose_pred_to_degree(kp_info[n]) for n in ("pitch", "yaw", "roll")))
    x = (kp @ rot + kp_info["exp"].reshape(b, -1, 3)) * kp_info["scale"][..., None]
    t = kp_info["t"]
    return torch.cat([x[..., :2] + t[:, None, :2], x[..., 2:]], dim=-1)


def concat_feat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[a.flatten, b.flatten] per batch row: (B, A) ++ (B, B′) → (B, A + B′)."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"batch sizes differ: {a.shape[0]} vs {b.shape[0]}")
    return torch.cat([a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)], dim=1)


def stitch_delta(stitching_mlp: torch.nn.Module, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
    """S(concat_feat(x_s, x_d)): (B, 3K + 2) keypoint deltas and one shared (tx, ty)."""
    return stitching_mlp(concat_feat(kp_source, kp_driving))


def stitching(stitching_mlp: torch.nn.Module, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
    """x_d' = x_d + δ[:3K] (per keypoint), then x_d'[..., :2] += δ[3K:3K+2] (shared): (B,K,3)."""
    b, k = kp_source.shape[:2]
    delta = stitch_delta(stitching_mlp, kp_source, kp_driving)
    moved = kp_driving + delta[..., : 3 * k].reshape(b, k, 3)
    shift = delta[..., 3 * k: 3 * k + 2].reshape(b, 1, 2)
    return torch.cat([moved[..., :2] + shift, moved[..., 2:]], dim=-1)


def retarget_lip(lip_mlp: torch.nn.Module, kp_source: torch.Tensor, lip_close_ratio: torch.Tensor) -> torch.Tensor:
    """Lip keypoint delta (B,K,3) from x_s and [c_s_lip, c_d_lip] (B,2)."""
    return lip_mlp(concat_feat(kp_source, lip_close_ratio)).reshape(-1, kp_source.shape[1], 3)


def retarget_eye(eye_mlp: torch.nn.Module, kp_source: torch.Tensor, eye_close_ratio: torch.Tensor) -> torch.Tensor:
    """Eye keypoint delta (B,K,3) from x_s and [c_s_left, c_s_right, c_d_eye] (B,3)."""
    return eye_mlp(concat_feat(kp_source, eye_close_ratio)).reshape(-1, kp_source.shape[1], 3)
