"""What a viewer sees: the mouth opens with jaw_open, lips close for p/b/m, lids close on a blink,
the head turns with parallax — measured with MediaPipe on the rendered frames."""

from __future__ import annotations

import numpy as np

from tests.stages.warp.mesh.conftest import make_plan, new_slab


def _gap(landmarks: np.ndarray, upper: int, lower: int) -> np.ndarray:
    return landmarks[:, lower, 1] - landmarks[:, upper, 1]


def test_inner_lip_gap_follows_jaw_open(prepared, tracker_landmarks):
    """The tracked inner-lip gap (13–14) rises and falls with jaw_open (correlation > 0.9)."""
    jaw = np.concatenate([np.linspace(0, 1, 12), np.ones(4), np.linspace(1, 0, 12), np.zeros(4)])
    slab = new_slab(len(jaw))
    prepared.render(make_plan(len(jaw), jaw_open=jaw), slice(0, len(jaw)), slab)
    gap = _gap(tracker_landmarks(slab), 13, 14)
    assert np.isfinite(gap).all()
    assert np.corrcoef(jaw, gap)[0, 1] > 0.9
    assert gap[12:16].mean() > gap[:2].mean() + 4.0  # a wide-open mouth is clearly wider


def test_lips_closed_keeps_the_mouth_shut_with_the_jaw_half_open(prepared, astronaut_actor, tracker_landmarks):
    """lips_closed = 1 at jaw_open 0.5 reads as shut as at jaw_open 0 (tracked 13–14 gap ≈ 0)."""
    n = 6
    slab = new_slab(3 * n)
    plan = make_plan(3 * n, jaw_open=np.repeat([0.5, 0.5, 0.0], n), lips_closed=np.repeat([0.0, 1.0, 1.0], n))
    prepared.render(plan, slice(0, 3 * n), slab)
    gap = _gap(tracker_landmarks(slab), 13, 14)
    open_gap, closed_gap, shut_gap = (np.median(gap[k * n:(k + 1) * n]) for k in range(3))
    assert open_gap > 5.0
    assert closed_gap < 0.2 * open_gap
    # The tracker sees ~2 px even on this actor's shut lips (its mouth is 43 px wide), and about
    # 1.5 px more on lips stretched shut over a half-lowered jaw: shut means within 4 % of the
    # mouth's width of that (an open mouth on speech reads 15–45 %).
    mouth_w = float(np.linalg.norm(astronaut_actor.landmarks_px[61, :2] - astronaut_actor.landmarks_px[291, :2]))
    assert closed_gap < shut_gap + 0.04 * mouth_w


def test_blink_lowers_the_upper_lid_onto_a_still_lower_lid(prepared, tracker_landmarks):
    """blink = 1 cuts the eye opening (159–145, 386–374) by > 60%; the lower lid barely moves."""
    n = 4
    slab = new_slab(2 * n)
    prepared.render(make_plan(2 * n, blink=np.repeat([0.0, 1.0], n)), slice(0, 2 * n), slab)
    lm = tracker_landmarks(slab)
    for upper, lower in ((159, 145), (386, 374)):
        opening = _gap(lm, upper, lower)
        rest, shut = np.median(opening[:n]), np.median(opening[n:])
        assert shut < 0.4 * rest, (upper, rest, shut)
        lower_shift = abs(np.median(lm[n:, lower, 1]) - np.median(lm[:n, lower, 1]))
        assert lower_shift < 0.25 * rest, (lower, lower_shift, rest)


def test_a_blink_closes_the_lids_wherever_the_head_has_moved_them(prepared, tracker_landmarks):
    """Nodded, turned or shifted, a blink still shuts both eyes: the lid is drawn where the eye is
    now (it was once drawn where the eye sits in the picture, and a nod left half the eye open)."""
    poses = [{"head_pitch_deg": 10.0}, {"head_pitch_deg": -10.0}, {"head_yaw_deg": 20.0},
             {"head_yaw_deg": -20.0}, {"shift_x_px": 15.0, "shift_y_px": -15.0}]
    n = 3
    curves = {name: np.repeat([pose.get(name, 0.0) for pose in poses], 2 * n)
              for name in ("head_pitch_deg", "head_yaw_deg", "shift_x_px", "shift_y_px")}
    blink = np.tile(np.repeat([0.0, 1.0], n), len(poses))
    slab = new_slab(len(blink))
    prepared.render(make_plan(len(blink), blink=blink, **curves), slice(0, len(blink)), slab)
    lm = tracker_landmarks(slab)
    for k, pose in enumerate(poses):
        for upper, lower in ((159, 145), (386, 374)):
            opening = _gap(lm[2 * n * k:2 * n * (k + 1)], upper, lower)
            # nanmedian: a 40° jump between neighbouring frames can lose the tracker for one frame.
            rest, shut = np.nanmedian(opening[:n]), np.nanmedian(opening[n:])
            assert shut < 0.5 * rest, (pose, upper, rest, shut)


def test_head_yaw_swings_the_nose_further_than_the_cheek(prepared, tracker_landmarks):
    """A head turn moves the nose tip more than the cheek contour (depth parallax), planner signs."""
    slab = new_slab(3)
    prepared.render(make_plan(3, head_yaw_deg=[0.0, 8.0, -8.0]), slice(0, 3), slab)
    lm = tracker_landmarks(slab)
    nose = lm[1:, 1, 0] - lm[0, 1, 0]
    cheek = lm[1:, 234, 0] - lm[0, 234, 0]
    assert nose[0] < -2.0 and nose[1] > 2.0  # +yaw turns the face toward the picture's left
    assert np.all(np.abs(nose) > 1.5 * np.abs(cheek))


def test_mouth_opening_is_dark_inside(prepared, astronaut_actor):
    """A wide-open mouth shows a dark interior between the lips, not stretched lip texture."""
    slab = new_slab(2)
    prepared.render(make_plan(2, jaw_open=[0.0, 1.0]), slice(0, 2), slab)
    lm = astronaut_actor.landmarks_px
    x0, x1 = int(lm[61, 0]), int(lm[291, 0])
    y0, y1 = int(lm[13, 1]) - 4, int(lm[14, 1]) + 20
    luma = slab[:, y0:y1, x0:x1].astype(float) @ np.array([0.299, 0.587, 0.114])
    face_luma = float(np.median(astronaut_actor.image[y0 - 40:y0 - 20, x0:x1] @ np.array([0.299, 0.587, 0.114])))
    dark = luma < 0.3 * face_luma
    assert dark[1].sum() > dark[0].sum() + 80  # the opening is a sizeable dark area
