"""Where things are on the MediaPipe face mesh, and a face-aligned frame to measure them in.

The index groups are the standard MediaPipe 468-point topology (rings of the lips and eyes,
brows, face oval). `FaceFrame` turns pixel landmarks into face coordinates — u along the eye
line, v toward the chin, both in pixels — so every motion rule can be written once, for an
upright face, and still be right for a tilted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.errors import StageInputError

N_MESH = 468
"""Landmarks of the face mesh proper (the 10 iris points after it are not used as controls)."""

# Lips, corner to corner (subject's right, image left, first).
LIP_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIP_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIP_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIP_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# The two intermediate rings of each lip; "1" is nearer the outer edge, "2" nearer the inner.
LIP_MID1_UPPER = (76, 184, 74, 73, 72, 11, 302, 303, 304, 408, 306)
LIP_MID2_UPPER = (62, 183, 42, 41, 38, 12, 268, 271, 272, 407, 292)
LIP_MID1_LOWER = (77, 90, 180, 85, 16, 315, 404, 320, 307)
LIP_MID2_LOWER = (96, 89, 179, 86, 15, 316, 403, 319, 325)
MOUTH_CORNERS = (61, 291, 78, 308, 76, 306, 62, 292, 77, 307, 96, 325)
INNER_UPPER_MID, INNER_LOWER_MID = 13, 14

# Eyes: upper-lid margin between the corners, lower lid corner to corner, and the rings of
# lid skin above the margin (2 = at the crease, 3 = under the brow).
RIGHT_EYE_UPPER = (246, 161, 160, 159, 158, 157, 173)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
RIGHT_EYE_UPPER2 = (247, 30, 29, 27, 28, 56, 190)
RIGHT_EYE_UPPER3 = (113, 225, 224, 223, 222, 221, 189)
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_UPPER = (466, 388, 387, 386, 385, 384, 398)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
LEFT_EYE_UPPER2 = (467, 260, 259, 257, 258, 286, 414)
LEFT_EYE_UPPER3 = (342, 445, 444, 443, 442, 441, 413)
LEFT_EYE_CORNERS = (263, 362)

RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
RIGHT_BROW_LOWER = (46, 53, 52, 65, 55)
LEFT_BROW_LOWER = (276, 283, 282, 295, 285)

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
FOREHEAD_TOP, CHIN, NOSE_TIP = 10, 152, 1
CHEEK_RIGHT, CHEEK_LEFT = 234, 454

UPPER_LIP = tuple(sorted(set(LIP_OUTER_UPPER + LIP_MID1_UPPER + LIP_MID2_UPPER + LIP_INNER_UPPER)
                         - set(MOUTH_CORNERS)))
LOWER_LIP = tuple(sorted(set(LIP_OUTER_LOWER + LIP_MID1_LOWER + LIP_MID2_LOWER + LIP_INNER_LOWER)
                         - set(MOUTH_CORNERS)))
LIPS = tuple(sorted(set(UPPER_LIP) | set(LOWER_LIP) | set(MOUTH_CORNERS)))


def lip_innerness() -> dict[int, float]:
    """How far toward the inner lip line each lip point sits: 0 outer edge … 1 inner edge."""
    rings = ((LIP_OUTER_UPPER, 0.0), (LIP_OUTER_LOWER, 0.0), (LIP_MID1_UPPER, 1 / 3),
             (LIP_MID1_LOWER, 1 / 3), (LIP_MID2_UPPER, 2 / 3), (LIP_MID2_LOWER, 2 / 3),
             (LIP_INNER_UPPER, 1.0), (LIP_INNER_LOWER, 1.0))
    return {i: t for ring, t in rings for i in ring}


@dataclass(frozen=True)
class FaceFrame:
    """A face-aligned coordinate frame and the face's size, measured from landmarks.

    u runs along the eye line toward the subject's left (image right for an upright face),
    v is perpendicular to it toward the chin; both in pixels, origin at `origin_px`.
    `depth_px` is each landmark's distance toward the viewer from the ear-to-ear plane.
    """

    origin_px: np.ndarray  # (2,) image point of u = v = 0: between the mouth corners
    u_axis: np.ndarray  # (2,) unit vector
    v_axis: np.ndarray  # (2,) unit vector
    face_h_px: float  # forehead top (10) to chin (152)
    face_w_px: float  # cheek to cheek (234 to 454)
    mouth_w_px: float  # corner to corner (61 to 291)
    depth_px: np.ndarray  # (468,) toward the viewer, 0 at the cheek contour

    @classmethod
    def from_landmarks(cls, landmarks_px: np.ndarray) -> "FaceFrame":
        """Measure the frame from (≥468, 3) pixel landmarks; raise when they are unusable."""
        lm = np.asarray(landmarks_px, dtype=np.float64)
        if lm.ndim != 2 or lm.shape[0] < N_MESH or lm.shape[1] != 3 or not np.isfinite(lm).all():
            raise StageInputError("actor.landmarks_px", "expected finite (478, 3) face-mesh landmarks",
                                  shape=tuple(lm.shape))
        eye_r = lm[list(RIGHT_EYE_LOWER + RIGHT_EYE_UPPER), :2].mean(0)
        eye_l = lm[list(LEFT_EYE_LOWER + LEFT_EYE_UPPER), :2].mean(0)
        eye_vec = eye_l - eye_r
        eye_dist = float(np.hypot(*eye_vec))
        face_h = float(np.hypot(*(lm[CHIN, :2] - lm[FOREHEAD_TOP, :2])))
        face_w = float(np.hypot(*(lm[CHEEK_LEFT, :2] - lm[CHEEK_RIGHT, :2])))
        mouth_w = float(np.hypot(*(lm[291, :2] - lm[61, :2])))
        if min(eye_dist, face_h, face_w, mouth_w) < 4.0:
            raise StageInputError("actor.landmarks_px", "the face is too small to animate",
                                  face_h_px=round(face_h, 1), face_w_px=round(face_w, 1))
        u_axis = eye_vec / eye_dist
        v_axis = np.array([-u_axis[1], u_axis[0]])
        if np.dot(v_axis, lm[CHIN, :2] - eye_r) < 0:  # mirrored landmarks: keep v toward the chin
            v_axis = -v_axis
        origin = 0.5 * (lm[61, :2] + lm[291, :2])
        # MediaPipe's z grows away from the camera, the Actor contract says toward the viewer;
        # decide from the data (the nose tip is nearer the viewer than the cheek contour).
        z = lm[:N_MESH, 2]
        contour_z = 0.5 * (z[CHEEK_RIGHT] + z[CHEEK_LEFT])
        toward = -1.0 if z[NOSE_TIP] < contour_z else 1.0
        depth = toward * (z - contour_z)
        return cls(origin, u_axis, v_axis, face_h, face_w, mouth_w, depth.astype(np.float64))

    def to_face(self, points_px: np.ndarray) -> np.ndarray:
        """Image points (..., 2) → face coordinates (..., 2) as (u, v)."""
        rel = np.asarray(points_px, dtype=np.float64)[..., :2] - self.origin_px
        return np.stack([rel @ self.u_axis, rel @ self.v_axis], axis=-1)

    def to_image_vectors(self, uv: np.ndarray) -> np.ndarray:
        """Displacements (..., 2) in face coordinates → image x, y displacements."""
        uv = np.asarray(uv, dtype=np.float64)
        return uv[..., :1] * self.u_axis + uv[..., 1:2] * self.v_axis


class Polyline:
    """A curve v(u) in face coordinates through landmark points, clamped beyond its ends."""

    def __init__(self, uv: np.ndarray) -> None:
        order = np.argsort(uv[:, 0])
        self.u = uv[order, 0]
        self.v = uv[order, 1]

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """v of the curve at u."""
        return np.interp(u, self.u, self.v)

    def overhang(self, u: np.ndarray) -> np.ndarray:
        """How far (px) u lies beyond the curve's ends; 0 between them."""
        return np.maximum(self.signed_overhang(u), 0.0)

    def signed_overhang(self, u: np.ndarray) -> np.ndarray:
        """Distance (px) beyond the nearer end of the curve; negative between the ends."""
        return np.maximum(self.u[0] - u, u - self.u[-1])


@dataclass(frozen=True)
class MouthGeometry:
    """The lips as curves v(u) in face coordinates, measured on the actor at rest."""

    inner_upper: Polyline
    inner_lower: Polyline
    slit: Polyline  # halfway between the inner lips: where the upper and jaw sides part
    outer_upper: Polyline
    outer_lower: Polyline
    half_w_px: float  # half the corner-to-corner width

    @classmethod
    def measure(cls, frame: FaceFrame, landmarks_px: np.ndarray) -> "MouthGeometry":
        """Read the lip curves off the landmarks."""
        uv = frame.to_face(landmarks_px[:N_MESH, :2])
        up, lo = uv[list(LIP_INNER_UPPER)], uv[list(LIP_INNER_LOWER)]
        # Mis-fitted meshes can put an inner lower point above its upper partner; clamp so the
        # rest gap is never negative.
        lo = lo.copy()
        lo[:, 1] = np.maximum(lo[:, 1], up[:, 1])
        # The parting line runs from outer corner to outer corner through the inner lips' midline.
        mid = np.concatenate([uv[[61]], 0.5 * (up + lo), uv[[291]]])
        return cls(Polyline(up), Polyline(lo), Polyline(mid), Polyline(uv[list(LIP_OUTER_UPPER)]),
                   Polyline(uv[list(LIP_OUTER_LOWER)]), 0.5 * frame.mouth_w_px)

    def rest_gap_px(self, u: np.ndarray) -> np.ndarray:
        """How far apart the inner lips are at u in the actor image (0 for a closed mouth)."""
        return np.maximum(self.inner_lower(u) - self.inner_upper(u), 0.0)


@dataclass(frozen=True)
class EyeGeometry:
    """One eye: lid curves in face coordinates and its size, measured at rest."""

    margin: Polyline  # upper-lid margin, corner to corner
    lower: Polyline  # lower-lid margin, corner to corner
    brow: Polyline  # lower edge of the eyebrow above
    upper_ids: tuple[int, ...]
    ring2_ids: tuple[int, ...]
    ring3_ids: tuple[int, ...]
    lower_ids: tuple[int, ...]
    corner_ids: tuple[int, int]
    height_px: float  # opening at the middle of the eye
    width_px: float
    u_range: tuple[float, float]

    @classmethod
    def measure(cls, frame: FaceFrame, landmarks_px: np.ndarray, side: str) -> "EyeGeometry":
        """Read the eye of `side` ("right" = subject's right, image left) off the landmarks."""
        if side == "right":
            upper, lower, r2, r3, corners, brow = (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_EYE_UPPER2,
                                                   RIGHT_EYE_UPPER3, RIGHT_EYE_CORNERS, RIGHT_BROW_LOWER)
        else:
            upper, lower, r2, r3, corners, brow = (LEFT_EYE_UPPER, LEFT_EYE_LOWER, LEFT_EYE_UPPER2,
                                                   LEFT_EYE_UPPER3, LEFT_EYE_CORNERS, LEFT_BROW_LOWER)
        uv = frame.to_face(landmarks_px[:N_MESH, :2])
        margin = Polyline(np.concatenate([uv[[corners[0]]], uv[list(upper)], uv[[corners[1]]]]))
        low = Polyline(uv[list(lower)])
        width = float(abs(uv[corners[1], 0] - uv[corners[0], 0]))
        mid_u = 0.5 * (uv[corners[0], 0] + uv[corners[1], 0])
        height = float(low(np.array([mid_u]))[0] - margin(np.array([mid_u]))[0])
        # A squinting or mis-fitted eye still gets a usable scale for the lid motions.
        height = max(height, 0.12 * width, 1.0)
        u_lo, u_hi = sorted((float(uv[corners[0], 0]), float(uv[corners[1], 0])))
        return cls(margin, low, Polyline(uv[list(brow)]), upper, r2, r3, lower, corners, height,
                   max(width, 2.0), (u_lo, u_hi))
