"""Driving keypoints: plan curves → ratios, pose, shift, smile, retargeting and stitching; templates."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="LivePortrait needs torch")

from stages.types import MotionPlan  # noqa: E402
from stages.warp.liveportrait import keypoints as kpm  # noqa: E402
from stages.warp.liveportrait.calibration import CALIBRATION  # noqa: E402
from stages.warp.liveportrait.checkpoints import load_strict  # noqa: E402
from stages.warp.liveportrait.random_weights import random_state_dict  # noqa: E402
from stages.warp.liveportrait.driving import (MAX_ANGLE_DEG, MAX_JAW_OPEN, FaceRatios, face_ratios,  # noqa: E402
                                              plan_keypoints, plan_kp_info, plan_ratios, retarget_and_stitch,
                                              source_motion, template_keypoints, template_posed)
from stages.warp.liveportrait.retargeting import build_retargeting  # noqa: E402
from stages.warp.liveportrait.templates import MotionTemplate, fit_to_slot, load_template  # noqa: E402

CURVES = ("jaw_open", "lip_width", "lip_round", "lips_closed", "blink", "eye_wide", "brow", "smile",
          "head_yaw_deg", "head_pitch_deg", "head_roll_deg", "shift_x_px", "shift_y_px")
RATIOS = FaceRatios(eye_left=0.28, eye_right=0.30, lip=0.02)
SHIFT_TO_KP = np.array([[0.004, 0.0], [0.0, 0.004]])


def make_plan(n: int, **curves: object) -> MotionPlan:
    """A plan of n frames, every curve 0 unless given."""
    values = {k: np.zeros(n, np.float32) for k in CURVES}
    for k, v in curves.items():
        values[k] = np.broadcast_to(np.asarray(v, np.float32), (n,)).copy()
    return MotionPlan(fps=24, **values)


@pytest.fixture(scope="module")
def nets():
    """The three full-size MLPs with random weights (only what driving uses)."""
    generator = torch.Generator().manual_seed(11)
    mlps = build_retargeting()
    for mlp in mlps.values():
        load_strict(mlp, random_state_dict(mlp, generator), "test")
    return SimpleNamespace(**mlps)


def _kp_info(pitch: float = 0.0, yaw: float = 0.0, roll: float = 0.0) -> dict:
    rng = np.random.default_rng(5)
    kp = torch.tensor(rng.uniform(-0.5, 0.5, (1, 21, 3)), dtype=torch.float32)
    kp[0, 0] = torch.tensor([0.0, 0.0, -0.6])  # a "nose": the point nearest the viewer
    kp[0, 1] = torch.tensor([0.0, -0.7, 0.0])  # the top of the head
    return {"kp": kp, "exp": torch.tensor(rng.normal(0, 0.01, (1, 21, 3)), dtype=torch.float32),
            "t": torch.tensor([[0.01, 0.02, 0.3]]), "scale": torch.tensor([[1.5]]),
            "pitch": torch.tensor([[pitch]]), "yaw": torch.tensor([[yaw]]), "roll": torch.tensor([[roll]])}


@pytest.fixture(scope="module")
def source(nets):
    """A frontal source (all angles 0) with random canonical keypoints."""
    with torch.inference_mode():
        return source_motion(nets, _kp_info(), RATIOS, SHIFT_TO_KP)


def _posed(source, plan: MotionPlan) -> torch.Tensor:
    with torch.inference_mode():
        return kpm.transform_keypoint(plan_kp_info(source, plan))


def _unposed(source, x: torch.Tensor) -> torch.Tensor:
    """Undo scale, t and exp: what remains is kp · Rᵀ."""
    t = torch.cat([source.t[:, :2], torch.zeros(1, 1)], dim=1)
    return (x - t[:, None]) / source.scale[..., None] - source.exp


def test_face_ratios_measure_gap_over_width() -> None:
    """Eye and lip ratios are lid/lip gap divided by eye/mouth width on the mesh points."""
    lm = np.zeros((478, 3), np.float32)
    lm[33], lm[133], lm[159], lm[145] = (100, 200, 0), (140, 200, 0), (120, 195, 0), (120, 207, 0)
    lm[362], lm[263], lm[386], lm[374] = (180, 200, 0), (220, 200, 0), (200, 196, 0), (200, 204, 0)
    lm[61], lm[291], lm[13], lm[14] = (130, 300, 0), (190, 300, 0), (160, 298, 0), (160, 304, 0)
    r = face_ratios(lm)
    assert r.eye_left == pytest.approx(12 / 40, rel=1e-5)
    assert r.eye_right == pytest.approx(8 / 40, rel=1e-5)
    assert r.lip == pytest.approx(6 / 60, rel=1e-5)


def test_jaw_open_raises_lip_ratio_monotonically() -> None:
    """jaw_open 0→1 raises c_d_lip strictly from the calibrated closed to the calibrated speech opening."""
    lip, eye = plan_ratios(make_plan(11, jaw_open=np.linspace(0, 1, 11)), RATIOS)
    assert np.all(np.diff(lip) > 0)
    assert lip[0] == pytest.approx(CALIBRATION.lip_ratio_closed, rel=1e-5)
    assert lip[-1] == pytest.approx(CALIBRATION.lip_ratio_open, rel=1e-5)
    assert np.allclose(eye, RATIOS.eye)


def test_jaw_beyond_one_opens_further_up_to_a_cap() -> None:
    """A loud plan's jaw_open > 1 opens past the speech range, but no further than MAX_JAW_OPEN."""
    lip, _ = plan_ratios(make_plan(3, jaw_open=[1.0, MAX_JAW_OPEN, 5.0]), RATIOS)
    assert lip[0] < lip[1] == lip[2] < 0.6


def test_lips_closed_seals_the_mouth_even_when_the_jaw_is_open() -> None:
    """lips_closed = 1 drives c_d_lip to the calibrated closed ratio whatever jaw_open says."""
    lip, _ = plan_ratios(make_plan(3, jaw_open=0.8, lips_closed=[0.0, 0.5, 1.0]), RATIOS)
    assert lip[0] > lip[1] > lip[2]
    assert lip[2] == pytest.approx(CALIBRATION.lip_ratio_closed, rel=1e-5)


def test_blink_closes_and_eye_wide_opens_the_eye_ratio() -> None:
    """blink 0→1 lowers c_d_eye monotonically to the calibrated closed value; eye_wide raises it."""
    _, eye = plan_ratios(make_plan(11, blink=np.linspace(0, 1, 11)), RATIOS)
    assert np.all(np.diff(eye) < 0)
    assert eye[0] == pytest.approx(RATIOS.eye) and eye[-1] == pytest.approx(CALIBRATION.eye_ratio_closed, rel=1e-5)
    _, wide = plan_ratios(make_plan(3, eye_wide=[0.0, 0.5, 1.0]), RATIOS)
    assert np.all(np.diff(wide) > 0) and wide[-1] == pytest.approx(CALIBRATION.eye_ratio_wide, rel=1e-5)


def test_yaw_rotates_keypoints_about_the_vertical_axis_by_the_plan_angle(source) -> None:
    """+12° plan yaw turns the keypoints 12° about y (get_rotation_matrix convention), nose to image-left."""
    base, turned = (_unposed(source, _posed(source, make_plan(1, head_yaw_deg=a))) for a in (0.0, 12.0))
    # Solve turned = base · M for the 3×3 map M (21 points, exact up to float error).
    m = torch.linalg.lstsq(base[0].double(), turned[0].double()).solution
    expected = kpm.get_rotation_matrix(torch.zeros(1), torch.tensor([12.0]), torch.zeros(1))[0].double()
    assert torch.allclose(m, expected, atol=1e-5)
    angle = np.degrees(np.arccos((np.trace(m.numpy()) - 1) / 2))
    assert angle == pytest.approx(12.0, abs=1e-3)
    assert turned[0, 0, 0] < base[0, 0, 0] - 0.1  # the nose swings toward the image's left
    assert torch.allclose(turned[0, :, 1], base[0, :, 1], atol=1e-6)  # y untouched by a pure yaw


def test_pitch_and_roll_follow_the_planner_sign_conventions(source) -> None:
    """+pitch lifts the nose (chin up); +roll moves the top of the head right (clockwise)."""
    base = _unposed(source, _posed(source, make_plan(1)))
    up = _unposed(source, _posed(source, make_plan(1, head_pitch_deg=10.0)))
    cw = _unposed(source, _posed(source, make_plan(1, head_roll_deg=10.0)))
    assert up[0, 0, 1] < base[0, 0, 1] - 0.05
    assert cw[0, 1, 0] > base[0, 1, 0] + 0.05


def test_angles_are_clipped_to_the_safe_range(source) -> None:
    """A 90° plan yaw is rendered as the 30° limit rather than folding the face."""
    assert torch.equal(_posed(source, make_plan(1, head_yaw_deg=90.0)),
                       _posed(source, make_plan(1, head_yaw_deg=MAX_ANGLE_DEG)))


def test_shift_translates_all_keypoints_by_the_crop_scale(source) -> None:
    """A 10 px shift right moves every keypoint by 10 × the frame→keypoint scale in x only."""
    moved = _posed(source, make_plan(1, shift_x_px=10.0)) - _posed(source, make_plan(1))
    assert torch.allclose(moved[..., 0], torch.full((1, 21), 10 * SHIFT_TO_KP[0, 0]), atol=1e-6)
    assert torch.allclose(moved[..., 1:], torch.zeros(1, 21, 2), atol=1e-7)


def test_smile_adds_the_calibrated_expression_delta(source) -> None:
    """smile = 1 moves the (unrotated) keypoints by scale × the calibrated smile delta."""
    delta = _posed(source, make_plan(1, smile=1.0)) - _posed(source, make_plan(1))
    expected = torch.as_tensor(CALIBRATION.smile_delta())[None] * source.scale[..., None]
    assert torch.allclose(delta, expected, atol=1e-6)


def test_rest_plan_keeps_a_closed_mouth_source_and_stitching_is_applied(nets) -> None:
    """For a closed-mouth source a plan at rest yields stitching(x_s, x_s): retargeting deltas cancel."""
    closed = FaceRatios(RATIOS.eye_left, RATIOS.eye_right, CALIBRATION.lip_ratio_closed)
    with torch.inference_mode():
        source = source_motion(nets, _kp_info(), closed, SHIFT_TO_KP)
        x_d = plan_keypoints(nets, source, make_plan(2))
        stitched = kpm.stitching(nets.stitching, source.x_s, source.x_s)
    assert torch.allclose(x_d, stitched.expand(2, -1, -1), atol=1e-6)
    assert not torch.allclose(x_d[0], source.x_s[0], atol=1e-4)  # the stitching delta is not zero


def test_rest_plan_closes_an_open_mouth_source(nets, source) -> None:
    """A source photographed with an open mouth (c_s_lip 0.02) gets the lip delta to the closed ratio at rest."""
    with torch.inference_mode():
        x_d = plan_keypoints(nets, source, make_plan(1))
        close = kpm.retarget_lip(nets.lip, source.x_s, torch.tensor([[RATIOS.lip, CALIBRATION.lip_ratio_closed]]))
        expected = kpm.stitching(nets.stitching, source.x_s, source.x_s + close - source.lip_rest)
    assert torch.allclose(x_d, expected, atol=1e-6)


def test_lip_and_eye_retargeting_deltas_reach_the_keypoints(nets, source) -> None:
    """Open jaw and blink change x_d by the lip/eye MLP deltas relative to the source's rest, then stitch."""
    plan = make_plan(1, jaw_open=1.0, blink=1.0)
    with torch.inference_mode():
        x_d = plan_keypoints(nets, source, plan)
        posed = kpm.transform_keypoint(plan_kp_info(source, plan))
        lip = kpm.retarget_lip(nets.lip, source.x_s, torch.tensor([[RATIOS.lip, CALIBRATION.lip_ratio_open]]))
        eye = kpm.retarget_eye(nets.eye, source.x_s, torch.tensor(
            [[RATIOS.eye_left, RATIOS.eye_right, CALIBRATION.eye_ratio_closed]]))
        expected = kpm.stitching(nets.stitching, source.x_s,
                                 posed + lip - source.lip_rest + eye - source.eye_rest)
        rest = plan_keypoints(nets, source, make_plan(1))
    assert torch.allclose(x_d, expected, atol=1e-5)
    assert (x_d - rest).abs().max() > 1e-3


def _yaw_template(yaws_deg: list[float]) -> MotionTemplate:
    n = len(yaws_deg)
    rot = kpm.get_rotation_matrix(torch.zeros(n), torch.tensor(yaws_deg), torch.zeros(n)).numpy()
    return MotionTemplate(fps=24.0, scale=np.full((n, 1), 1.2, np.float32), R=rot,
                          exp=np.zeros((n, 21, 3), np.float32), t=np.zeros((n, 3), np.float32))


def test_template_relative_mode_rotates_the_source_like_the_template(source) -> None:
    """Template frame i drives x_s by (R_i R_0ᵀ): a yaw-only template equals the plan's yaw pose."""
    template = _yaw_template([0.0, 5.0, -8.0])
    with torch.inference_mode():
        posed = template_posed(source, template, slice(0, 3))
    assert torch.allclose(posed[0], source.x_s[0], atol=1e-6)  # frame 0 is the reference
    for i, yaw in enumerate([0.0, 5.0, -8.0]):
        assert torch.allclose(posed[i], _posed(source, make_plan(1, head_yaw_deg=yaw))[0], atol=1e-5)
    with torch.inference_mode():  # a later chunk still measures from frame 0 of the whole template
        assert torch.allclose(template_posed(source, template, slice(2, 3))[0], posed[2])


def test_real_template_drives_distinct_stitched_frames(nets, source, shared_dir) -> None:
    """talking.npz at 24 fps gives per-frame keypoints that differ as the template's expression does."""
    template = fit_to_slot(load_template(shared_dir / "motion_templates" / "talking.npz"), 24, 12)
    with torch.inference_mode():
        x_d = template_keypoints(nets, source, template, slice(0, 12))
        posed = template_posed(source, template, slice(0, 12))
        assert torch.allclose(x_d, retarget_and_stitch(nets, source, posed))
    steps = (x_d[1:] - x_d[:-1]).abs().amax(dim=(1, 2))
    assert (steps > 1e-4).all()


def test_template_expression_and_scale_changes_are_relative_to_frame_zero(source) -> None:
    """exp_i − exp_0 adds to the source's exp and s_i / s_0 multiplies its scale."""
    template = _yaw_template([0.0, 0.0])
    delta = np.zeros((21, 3), np.float32)
    delta[19, 1] = 0.05
    template = MotionTemplate(fps=24.0, scale=np.array([[1.2], [1.5]], np.float32), R=template.R,
                              exp=np.stack([np.full((21, 3), 0.3, np.float32), 0.3 + delta]),
                              t=np.zeros((2, 3), np.float32))
    with torch.inference_mode():
        posed = template_posed(source, template, slice(0, 2))
    # Frame 1 = 1.25 × (kp·R_s + exp_s + delta) with the same t: compare against frame 0.
    unscaled0 = _unposed(source, posed[:1]) + source.exp
    t = torch.cat([source.t[:, :2], torch.zeros(1, 1)], dim=1)[:, None]
    unscaled1 = (posed[1:] - t) / (source.scale[..., None] * 1.25)
    assert torch.allclose(unscaled1 - unscaled0, torch.as_tensor(delta)[None], atol=1e-5)
