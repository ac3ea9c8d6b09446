"""A blink a face tracker reads as shut: the lid comes down over the eye, and MediaPipe's eye
aperture on the shut frames is a fraction of the open one."""

from __future__ import annotations

import numpy as np

from stages.motion.driving.face_geometry import eye_aperture
from tests.stages.warp.mesh.conftest import make_plan, new_slab


def test_a_shut_blink_reads_much_narrower_than_open_eyes(prepared, tracker_landmarks):
    """MediaPipe's eye aperture on the blink's shut frames is under half the open one, on both
    eyes (the frames close and reopen like a real blink)."""
    blink = np.array([0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0])
    slab = new_slab(len(blink))
    prepared.render(make_plan(len(blink), blink=blink), slice(0, len(blink)), slab)
    aperture = eye_aperture(tracker_landmarks(slab))
    assert np.isfinite(aperture).all()
    open_level, shut_level = np.median(aperture[:3]), aperture[4:7].min()
    assert shut_level < 0.5 * open_level, (open_level, shut_level)
    assert aperture[3] > shut_level and aperture[7] > shut_level  # half-shut lies between
