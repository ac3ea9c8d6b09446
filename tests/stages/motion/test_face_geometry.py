"""Face-mesh geometry: a rigidly turned face reads back the turn, in LivePortrait's angle convention."""

from __future__ import annotations

import numpy as np
import pytest

from stages.motion.driving import face_geometry as geo


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The sample portrait's (478, 3) face mesh in pixels."""
    pytest.importorskip("mediapipe", reason="the sample face's mesh needs MediaPipe")
    from stages.image import load_actor

    return load_actor().landmarks_px.astype(np.float64)


def _turned(face: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """`face` rotated about its centre by R = Rz(roll)·Ry(yaw)·Rx(pitch) (degrees), then moved."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    centre = face.mean(axis=0)
    return (face - centre) @ (rz @ ry @ rx).T + centre + np.array([7.0, -3.0, 0.0])


@pytest.mark.parametrize("angles", [(12.0, 0.0, 0.0), (0.0, -8.0, 0.0), (0.0, 0.0, 5.0), (-15.0, 6.0, -4.0)])
def test_a_rigid_turn_reads_back_as_its_angles(face: np.ndarray, angles: tuple[float, float, float]) -> None:
    """Yaw, pitch and roll of a turned (and shifted) copy of the face are the turn's, within 0.01°;
    lids, lips and the inter-ocular distance do not change under it."""
    turned = _turned(face, *angles)[None]
    assert np.allclose(geo.head_rotation_deg(turned, face)[0], angles, atol=1e-2)
    for measure in (geo.eye_aperture, geo.mouth_gap, geo.interocular):
        assert measure(turned)[0] == pytest.approx(measure(face[None])[0], rel=1e-9)

