"""Keypoint maths: head-pose bins, rotation convention, Eqn. 2, stitching and retargeting."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="LivePortrait networks need torch")

from stages.warp.liveportrait import keypoints as kpm  # noqa: E402
from stages.warp.liveportrait.checkpoints import load_strict  # noqa: E402
from stages.warp.liveportrait.random_weights import random_state_dict  # noqa: E402
from stages.warp.liveportrait.config import RetargetingConfig  # noqa: E402
from stages.warp.liveportrait.retargeting import RetargetingMlp  # noqa: E402


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mlp(which: str, seed: int = 0) -> RetargetingMlp:
    net = RetargetingMlp(getattr(RetargetingConfig(), which))
    return load_strict(net, random_state_dict(net, _gen(seed)), which)


def test_degree_bins_span_plus_minus_97_5() -> None:
    """One-hot bin 0 → −97.5°, bin 65 → +97.5°, uniform logits → 0°, degrees pass through."""
    logits = torch.zeros(3, 66)
    logits[0, 0] = logits[1, 65] = 1e4
    deg = kpm.headpose_pred_to_degree(logits)
    assert deg.tolist() == pytest.approx([-97.5, 97.5, 0.0], abs=1e-4)
    already = torch.tensor([[12.5]])
    assert kpm.headpose_pred_to_degree(already) is already


def test_rotation_axes_follow_pitch_yaw_roll() -> None:
    """kp·Rᵀ: +90° pitch sends +y to +z, +90° yaw sends +z to +x, +90° roll sends +x to +y."""
    zero, ninety = torch.zeros(1), torch.full((1,), 90.0)
    cases = [((ninety, zero, zero), [0, 1, 0], [0, 0, 1]),
             ((zero, ninety, zero), [0, 0, 1], [1, 0, 0]),
             ((zero, zero, ninety), [1, 0, 0], [0, 1, 0])]
    for angles, before, after in cases:
        rot = kpm.get_rotation_matrix(*angles)
        moved = torch.tensor([[before]], dtype=torch.float32) @ rot
        assert moved[0, 0].tolist() == pytest.approx(after, abs=1e-6)


def test_rotation_is_orthonormal_and_order_is_roll_yaw_pitch() -> None:
    """Rᵀ is a proper rotation and equals (Rz·Ry·Rx)ᵀ built from single-axis rotations."""
    angles = (torch.rand(8, generator=_gen(1)) - 0.5) * 360, (torch.rand(8, generator=_gen(2)) - 0.5) * 180, \
        (torch.rand(8, generator=_gen(3)) - 0.5) * 360
    rot = kpm.get_rotation_matrix(*angles)
    eye = torch.eye(3).expand(8, 3, 3)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(8), atol=1e-5)
    z = torch.zeros(8)
    rx, ry, rz = (kpm.get_rotation_matrix(*a).transpose(1, 2) for a in
                  ((angles[0], z, z), (z, angles[1], z), (z, z, angles[2])))
    assert torch.allclose(rot, (rz @ ry @ rx).transpose(1, 2), atol=1e-5)


def _kp_info(batch: int = 2) -> dict:
    g = _gen(4)
    return {"kp": torch.randn(batch, 21, 3, generator=g) * 0.3, "exp": torch.randn(batch, 21, 3, generator=g) * 0.02,
            "t": torch.randn(batch, 3, generator=g) * 0.1, "scale": 1 + torch.rand(batch, 1, generator=g),
            "pitch": torch.randn(batch, 1, generator=g) * 10, "yaw": torch.randn(batch, 1, generator=g) * 10,
            "roll": torch.randn(batch, 1, generator=g) * 10}


def test_transform_keypoint_is_eqn_2_and_ignores_tz() -> None:
    """x = s·(kp·Rᵀ + exp) + (tx, ty, 0); flat and (B,K,3) layouts agree; inputs untouched."""
    info = _kp_info()
    before = {k: v.clone() for k, v in info.items()}
    x = kpm.transform_keypoint(info)
    rot = kpm.get_rotation_matrix(info["pitch"], info["yaw"], info["roll"])
    expected = info["scale"][:, :, None] * (info["kp"] @ rot + info["exp"])
    expected[..., :2] += info["t"][:, None, :2]
    assert torch.allclose(x, expected, atol=1e-6)
    flat = dict(info, kp=info["kp"].reshape(2, 63), exp=info["exp"].reshape(2, 63))
    assert torch.equal(kpm.transform_keypoint(flat), x)
    assert all(torch.equal(info[k], before[k]) for k in info)


def test_refine_kp_info_gives_degrees_and_keypoint_grid() -> None:
    """Raw M outputs become (B,1) degrees and (B,21,3) kp/exp; t and scale pass through."""
    g = _gen(5)
    raw = {"pitch": torch.randn(2, 66, generator=g), "yaw": torch.randn(2, 66, generator=g),
           "roll": torch.randn(2, 66, generator=g), "t": torch.randn(2, 3, generator=g),
           "exp": torch.randn(2, 63, generator=g), "scale": torch.rand(2, 1, generator=g),
           "kp": torch.randn(2, 63, generator=g)}
    info = kpm.refine_kp_info(raw)
    assert info["pitch"].shape == (2, 1) and info["kp"].shape == (2, 21, 3) and info["exp"].shape == (2, 21, 3)
    assert torch.equal(info["kp"][1, 4], raw["kp"][1, 12:15])
    assert info["t"] is raw["t"]


def test_stitching_adds_per_keypoint_delta_and_shared_shift() -> None:
    """x_d' = x_d + δ[:63] per keypoint, with δ[63:65] added to every keypoint's x, y (not z)."""
    net = _mlp("stitching")
    info = _kp_info()
    x_s, x_d = kpm.transform_keypoint(info), kpm.transform_keypoint(dict(info, yaw=info["yaw"] + 15))
    keep_s, keep_d = x_s.clone(), x_d.clone()
    delta = kpm.stitch_delta(net, x_s, x_d)
    out = kpm.stitching(net, x_s, x_d)
    per_kp = out - x_d - delta[:, :63].reshape(2, 21, 3)
    assert torch.allclose(per_kp[..., :2], delta[:, None, 63:65].expand(2, 21, 2), atol=1e-6)
    assert torch.allclose(per_kp[..., 2], torch.zeros(2, 21), atol=1e-6)
    assert torch.equal(x_s, keep_s) and torch.equal(x_d, keep_d)


def test_retargeting_feeds_source_keypoints_then_ratios() -> None:
    """Lip/eye deltas are the MLP of [x_s (63), ratios] reshaped to (B,21,3)."""
    lip, eye = _mlp("lip", 1), _mlp("eye", 2)
    x_s = kpm.transform_keypoint(_kp_info())
    lip_ratio, eye_ratio = torch.tensor([[0.1, 0.4]] * 2), torch.tensor([[0.3, 0.3, 0.1]] * 2)
    lip_delta = kpm.retarget_lip(lip, x_s, lip_ratio)
    eye_delta = kpm.retarget_eye(eye, x_s, eye_ratio)
    assert lip_delta.shape == eye_delta.shape == (2, 21, 3)
    manual = lip(torch.cat([x_s.reshape(2, 63), lip_ratio], dim=1)).reshape(2, 21, 3)
    assert torch.equal(lip_delta, manual)
    assert not torch.allclose(kpm.retarget_eye(eye, x_s, eye_ratio * 0.5), eye_delta)


def test_concat_feat_rejects_mismatched_batches() -> None:
    """Features of different batch sizes cannot be concatenated."""
    with pytest.raises(ValueError):
        kpm.concat_feat(torch.zeros(2, 21, 3), torch.zeros(3, 2))
