"""What a face does, read from MediaPipe face-mesh landmarks: head rotation, eye openness, brows, mouth.

Every measure is in units of the face itself (the inter-ocular distance, an eye's width), so a
small face in a large video and the 512² actor read on the same scale. The same functions turn a
driving video into motion and judge a rendered slot, so the two are compared like for like.
Landmark indices are the 468-point mesh's (refine_landmarks adds the irises at 468–477).
"""

from __future__ import annotations

import numpy as np

RIGID_POINTS = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 234, 454, 127, 356)
"""Forehead, nose line, eye corners and the face's sides: they move with the skull, not with the
jaw, lips or lids, so their best rigid fit is the head's rotation."""

_EYES = ((33, 133, (159, 158, 160), (145, 153, 144)),  # corners, upper lid, lower lid (image left eye)
         (362, 263, (386, 385, 387), (374, 380, 373)))
_BROWS = ((105, 66, 107), (334, 296, 336))
_MOUTH_INNER = (13, 14)  # upper and lower inner lip at the middle
_MOUTH_CORNERS = (61, 291)


def _eye_centres(landmarks: np.ndarray) -> np.ndarray:
    """(T, 2, 3) centre of each eye: the midpoint of its corners."""
    return np.stack([(landmarks[:, a] + landmarks[:, b]) / 2 for a, b, _, _ in _EYES], axis=1)


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """(T,) 3-D distance between the eye centres (the unit of every other measure)."""
    centres = _eye_centres(landmarks)
    return np.linalg.norm(centres[:, 0] - centres[:, 1], axis=-1)


def eye_midpoint(landmarks: np.ndarray) -> np.ndarray:
    """(T, 2) image position of the point between the eyes, in pixels."""
    return _eye_centres(landmarks)[:, :, :2].mean(axis=1)


def eye_aperture(landmarks: np.ndarray) -> np.ndarray:
    """(T,) lid gap over eye width, both eyes averaged (≈ 0.3 open, ≈ 0.05 shut)."""
    ratios = []
    for a, b, upper, lower in _EYES:
        gap = np.linalg.norm(landmarks[:, list(upper)] - landmarks[:, list(lower)], axis=-1).mean(axis=1)
        ratios.append(gap / np.linalg.norm(landmarks[:, a] - landmarks[:, b], axis=-1))
    return np.mean(ratios, axis=0)


def open_level(aperture: np.ndarray) -> float:
    """The eyes' usual open aperture: the median of the upper half of the readings (blinks,
    squints and looking down all fall below it)."""
    return float(np.median(aperture[aperture >= np.median(aperture)]))


def brow_height(landmarks: np.ndarray) -> np.ndarray:
    """(T,) brow above its eye's centre, over the inter-ocular distance, both sides averaged."""
    centres = _eye_centres(landmarks)
    heights = [np.linalg.norm(landmarks[:, list(brow)].mean(axis=1) - centres[:, side], axis=-1)
               for side, brow in enumerate(_BROWS)]
    return np.mean(heights, axis=0) / interocular(landmarks)


def mouth_gap(landmarks: np.ndarray) -> np.ndarray:
    """(T,) inner-lip gap over the inter-ocular distance."""
    top, bottom = _MOUTH_INNER
    return np.linalg.norm(landmarks[:, top] - landmarks[:, bottom], axis=-1) / interocular(landmarks)


def mouth_width(landmarks: np.ndarray) -> np.ndarray:
    """(T,) corner-to-corner width over the inter-ocular distance."""
    left, right = _MOUTH_CORNERS
    return np.linalg.norm(landmarks[:, left] - landmarks[:, right], axis=-1) / interocular(landmarks)


def corner_lift(landmarks: np.ndarray) -> np.ndarray:
    """(T,) how far the mouth corners sit above the lips' middle (image up), over the inter-ocular distance."""
    left, right = _MOUTH_CORNERS
    top, bottom = _MOUTH_INNER
    middle_y = (landmarks[:, top, 1] + landmarks[:, bottom, 1]) / 2
    corners_y = (landmarks[:, left, 1] + landmarks[:, right, 1]) / 2
    return (middle_y - corners_y) / interocular(landmarks)


NOSE_TIP = 1


def nose_parallax(landmarks: np.ndarray) -> np.ndarray:
    """(T, 2) the nose tip's offset from the eye midpoint, along the eye line and across it, over
    the inter-ocular distance, all in the picture (2-D): a proxy for yaw and pitch that needs no
    depth. A head turning by θ moves it by (the nose's height over the eyes) × sin θ; a face
    slid or stretched sideways barely moves it. Real heads: 0.56–0.69 per unit sine of yaw in
    ../shared/driving (docs/mesh-warp.md)."""
    centres = _eye_centres(landmarks)[:, :, :2]
    mid = centres.mean(axis=1)
    line = centres[:, 1] - centres[:, 0]
    iod = np.linalg.norm(line, axis=-1)
    along = line / iod[:, None]
    across = np.stack([-along[:, 1], along[:, 0]], axis=-1)
    offset = landmarks[:, NOSE_TIP, :2] - mid
    return np.stack([(offset * along).sum(-1), (offset * across).sum(-1)], axis=-1) / iod[:, None]


def eye_line_roll_deg(landmarks: np.ndarray) -> np.ndarray:
    """(T,) the eye line's angle in the picture, degrees clockwise: roll read without depth."""
    centres = _eye_centres(landmarks)[:, :, :2]
    line = centres[:, 1] - centres[:, 0]
    return np.degrees(np.arctan2(line[:, 1], line[:, 0]))


def _kabsch(reference: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The rotation R (3×3) that best maps centred `reference` onto centred `points` (points ≈ R·ref)."""
    a = reference - reference.mean(axis=0)
    b = points - points.mean(axis=0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


PITCH_PER_GAP_DEG = -18.0
PITCH_PER_APERTURE_DEG = -8.0
"""The mesh's fitted head pitches with the face's own movements: measured on mesh-warp renders of
a still head, opening the jaw reads −17.9° of pitch per inter-ocular unit of lip gap and closing
the eyes −7.9° per unit of lid aperture (the real driving clips regress to −5…−26° and −2…−14°,
the spread being real nods). head_rotation_deg takes these out, so a speaking or blinking face
does not read as nodding."""


def euler_deg(rotations: np.ndarray) -> np.ndarray:
    """(T, 3) yaw, pitch, roll in degrees of rotations R = Rz(roll)·Ry(yaw)·Rx(pitch), (T, 3, 3)."""
    r = np.asarray(rotations, dtype=np.float64)
    return np.degrees(np.column_stack([np.arcsin(np.clip(-r[:, 2, 0], -1.0, 1.0)),
                                       np.arctan2(r[:, 2, 1], r[:, 2, 2]),
                                       np.arctan2(r[:, 1, 0], r[:, 0, 0])]))


def head_rotation_deg(landmarks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(T, 3) yaw, pitch and roll in degrees of each frame's head relative to `reference` (478, 3).

    Axes are the image's (x right, y down, z away from the camera); yaw turns about y, pitch
    about x, roll about z. The rigid points are scaled to a unit inter-ocular distance first, so
    a head moving towards the camera does not read as a rotation; pitch is corrected for the lip
    gap and lid aperture (PITCH_PER_GAP_DEG).
    """
    ref = reference[list(RIGID_POINTS)] / interocular(reference[None])[0]
    scale = interocular(landmarks)[:, None, None]
    points = landmarks[:, list(RIGID_POINTS)] / scale
    angles = euler_deg(np.stack([_kabsch(ref, frame) for frame in points]))
    ref = reference[None]
    angles[:, 1] -= (PITCH_PER_GAP_DEG * (mouth_gap(landmarks) - mouth_gap(ref)[0])
                     + PITCH_PER_APERTURE_DEG * (eye_aperture(landmarks) - eye_aperture(ref)[0]))
    return angles
