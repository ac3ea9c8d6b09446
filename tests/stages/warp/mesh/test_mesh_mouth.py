"""The opened mouth's inside: a dark cavity, teeth with edges, a tongue; closed lips untouched.

The astronaut shows her own teeth, so the painted teeth are tested on a closed-mouth portrait
made from her: a frame rendered with the lips pressed shut, its landmarks found again.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.types import Actor
from tests.stages.warp.mesh.conftest import make_plan, new_slab

_LUMA = np.array([0.299, 0.587, 0.114])
_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)


@pytest.fixture(scope="module")
def closed_mouth(prepared):
    """(actor, prepared warp) of the astronaut with her lips rendered shut."""
    from stages.image.face import detect_landmarks
    from stages.warp.mesh import MeshWarpBackend

    slab = new_slab(1)
    prepared.render(make_plan(1, lips_closed=1.0), slice(0, 1), slab)
    image = np.ascontiguousarray(slab[0])
    actor = Actor(image, detect_landmarks(image), np.eye(2, 3), "astronaut, lips shut", "test")
    return actor, MeshWarpBackend().prepare(actor)


def _mask(shape, points, ids) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(points[list(ids), :2]).astype(np.int32)], 1)
    return mask.astype(bool)


def test_closed_lips_stay_as_the_portrait_has_them(closed_mouth):
    """With the jaw shut the mouth's pixels are the portrait's (nothing painted over them)."""
    actor, warp = closed_mouth
    slab = new_slab(1)
    warp.render(make_plan(1), slice(0, 1), slab)
    lips = _mask(actor.image.shape, actor.landmarks_px, _OUTER)
    diff = np.abs(slab[0].astype(int) - actor.image.astype(int))[lips]
    assert np.percentile(diff, 99) <= 3


def test_an_open_mouth_shows_a_dark_cavity_teeth_with_edges_and_a_tongue(closed_mouth, tracker_landmarks):
    """jaw_open 1: inside the tracked inner lips, a dark share (cavity), a bright share at the top
    (upper teeth) whose row is broken by darker seams between teeth, and reddish mid-dark
    pixels at the bottom (tongue) — not one flat band."""
    actor, warp = closed_mouth
    slab = new_slab(2)
    warp.render(make_plan(2, jaw_open=[1.0, 1.0]), slice(0, 2), slab)
    lm = tracker_landmarks(slab)[1]
    frame = slab[1].astype(np.float64)
    luma = frame @ _LUMA
    inner = _mask(frame.shape, lm, _INNER)
    lips = _mask(frame.shape, lm, _OUTER) & ~inner
    lip_luma = float(np.median(luma[lips]))
    inside = luma[inner]
    assert np.mean(inside < 0.35 * lip_luma) > 0.2  # a dark cavity
    assert np.mean(inside > 1.1 * lip_luma) > 0.05  # teeth
    # Along the teeth's row (just under the upper lip) the luma dips between teeth.
    top = int(lm[13, 1]) + 3
    cols = np.flatnonzero(inner[top])
    row = luma[top, cols[len(cols) // 5]:cols[-len(cols) // 5]]
    dips = np.sum((row[1:-1] < row[:-2] - 2) & (row[1:-1] <= row[2:]))
    assert dips >= 2
    # The tongue: around the tracked lower inner lip (the tracker puts it on the tongue's top on
    # this small mouth), red and between the cavity's darkness and the lips' lightness.
    x, y = int(lm[14, 0]), int(round(lm[14, 1]))
    column = frame[y - 4:y + 3, x - 2:x + 3].mean(1)
    redness = column[:, 0] - column[:, 1]
    r, g, b = column[int(np.argmax(redness))]
    assert r > g + 25 and 0.2 * lip_luma < (r * 0.299 + g * 0.587 + b * 0.114) < lip_luma
