"""A blink a face tracker reads as shut: the lid comes down over the eye, and MediaPipe's eye
aperture on the shut frames is a fraction of the open one; the shut eye shows skin and an
unbroken lash line, no eye."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.motion.driving.face_geometry import eye_aperture
from stages.warp.mesh import anatomy as an
from tests.stages.warp.mesh.conftest import make_plan, new_slab

BLINK = np.array([0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0])
SHUT = 5  # a frame in the middle of the shut ones
EYES = ((an.RIGHT_EYE_LOWER + an.RIGHT_EYE_UPPER[::-1], an.RIGHT_EYE_CORNERS),
        (an.LEFT_EYE_LOWER + an.LEFT_EYE_UPPER[::-1], an.LEFT_EYE_CORNERS))


@pytest.fixture(scope="module")
def blink(prepared, tracker_landmarks):
    """(frames, landmarks) of BLINK on the astronaut."""
    slab = new_slab(len(BLINK))
    prepared.render(make_plan(len(BLINK), blink=BLINK), slice(0, len(BLINK)), slab)
    return slab, tracker_landmarks(slab)


def test_a_shut_blink_reads_much_narrower_than_open_eyes(blink):
    """MediaPipe's eye aperture on the blink's shut frames is under half the open one, on both
    eyes (the frames close and reopen like a real blink)."""
    aperture = eye_aperture(blink[1])
    assert np.isfinite(aperture).all()
    open_level, shut_level = np.median(aperture[:3]), aperture[4:7].min()
    assert shut_level < 0.5 * open_level, (open_level, shut_level)
    assert aperture[3] > shut_level and aperture[7] > shut_level  # half-shut lies between


def test_the_shut_lids_meet_in_the_picture(blink):
    """In the picture's plane (MediaPipe's depth guess left out: it holds the upper lid in front
    of the lower one by the same amount open or shut) the shut lid gap is a real shut eye's,
    under 0.06 of the eye's width (a lid that stops short, or a thick dark band between two lash
    lines, reads 0.07–0.15)."""
    flat = blink[1].copy()
    flat[..., 2] = 0.0
    aperture = eye_aperture(flat)
    assert aperture[4:7].max() < 0.06, aperture


def test_the_shut_eye_shows_no_eye_and_an_unbroken_lash_line(blink):
    """At the shut frame, almost none of the open eye's opening (its lid contour on the open
    frame) still shows the eye, and down every column across the middle 70 % of the eye the
    darkest pixel is lash-dark against the column, evenly from column to column: the line runs
    unbroken (a lid edge carried down stretched breaks into dashes)."""
    frames, landmarks = blink
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    for ring, (a, b) in EYES:
        mask = np.zeros(luma.shape[1:], np.uint8)
        cv2.fillPoly(mask, [np.round(landmarks[0, list(ring), :2]).astype(np.int32)], 1)
        same = np.abs(frames[SHUT].astype(int) - frames[0]).max(axis=-1) <= 6
        assert same[mask > 0].mean() < 0.05
        (x0, _), (x1, _) = sorted(landmarks[0, [a, b], :2].tolist())
        ys = np.flatnonzero(mask.any(axis=1))
        width = x1 - x0
        band = luma[SHUT, ys[0]:ys[-1] + int(0.3 * width)]
        columns = band[:, int(x0 + 0.15 * width):int(x1 - 0.15 * width) + 1]
        darkest = columns.min(axis=0) / np.median(columns, axis=0)
        assert darkest.max() < 0.65, darkest
        assert np.abs(np.diff(darkest)).max() < 0.15, darkest


def test_open_eyes_are_left_as_the_portrait_has_them(blink, prepared):
    """Before and after the blink the frames are the rest frame, byte for byte: the lid and its
    paint only come in with the blink."""
    rest = new_slab(1)
    prepared.render(make_plan(1), slice(0, 1), rest)
    frames, _ = blink
    for i in (0, len(BLINK) - 1):
        assert np.array_equal(frames[i], rest[0])


def test_the_lower_lid_rises_a_little_on_a_blink_as_real_lids_do(astronaut_actor):
    """On a full blink the lower lid's middle rises 0.03 of the eye's width (real blinks on the
    driving clips: 0.030–0.034, bench_blinks --clips) and its corners less (0.05 of the eye's
    height, as before); its middle does not move sideways."""
    from stages.warp.mesh.controls import build_controls
    from stages.warp.mesh.features import F

    lm = astronaut_actor.landmarks_px
    frame = an.FaceFrame.from_landmarks(lm)
    eyes = (an.EyeGeometry.measure(frame, lm, "right"), an.EyeGeometry.measure(frame, lm, "left"))
    blink = build_controls(lm, frame, an.MouthGeometry.measure(frame, lm), eyes).skin[F["blink"]]
    for eye, (mid, corners) in zip(eyes, ((145, (33, 133)), (374, (263, 362)))):
        rise = -float(blink[mid] @ frame.v_axis) / eye.width_px
        assert 0.025 < rise < 0.035, rise
        for corner in corners:
            assert -float(blink[corner] @ frame.v_axis) / eye.width_px < 0.7 * rise
        sideways = blink[mid] - (blink[mid] @ frame.v_axis) * frame.v_axis
        assert np.linalg.norm(sideways) < 0.1 * rise * eye.width_px
