"""Where the warp may act: the head ROI, its falloff window, and soft source-space labels.

Everything outside the head ROI is the actor image, untouched. Inside it, every displacement
is multiplied by `head_window`, which is 1 over the head (face, ears, hair) and falls smoothly
(C¹) to exactly 0 before the ROI border, and across the frame edges — so head motion bends the
nearby background a little but never drags it, and never pulls the frame's edge inward.

Labels say which layer a *source* pixel belongs to (upper face, jaw side, mouth interior,
eyelid). They are anti-aliased: along a lip or lid line the transition is one pixel wide, and
beyond the line's ends (mouth corners, eye corners) it widens, so the layers blend smoothly
across the cheeks instead of meeting at a crease.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.warp.mesh.anatomy import FaceFrame, Polyline
from stages.warp.mesh.field import Box


def smoothstep(edge0: float | np.ndarray, edge1: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    """C¹ step: 0 at edge0, 1 at edge1, cubic in between."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class HeadEllipse:
    """The head (face oval, ears, hair) as an ellipse in face coordinates, and its falloff."""

    centre_uv: np.ndarray  # (2,)
    semi_u_px: float
    semi_v_px: float
    outer_ratio: float = 2.0  # the window reaches 0 at this multiple of the semi-axes

    @classmethod
    def around(cls, frame: FaceFrame, oval_uv: np.ndarray, top_uv: np.ndarray,
               chin_uv: np.ndarray) -> "HeadEllipse":
        """Fit the head ellipse around the face oval, with room for hair above and ears aside."""
        h = frame.face_h_px
        top_v = top_uv[1] - 0.28 * h  # hair above the forehead landmark
        bottom_v = chin_uv[1] + 0.06 * h
        centre = np.array([0.5 * (oval_uv[:, 0].min() + oval_uv[:, 0].max()), 0.5 * (top_v + bottom_v)])
        semi_u = 0.5 * (oval_uv[:, 0].max() - oval_uv[:, 0].min()) * 1.22
        return cls(centre, float(semi_u), float(0.5 * (bottom_v - top_v)))

    def radius(self, uv: np.ndarray) -> np.ndarray:
        """Normalised elliptical radius (1 on the ellipse) of face-coordinate points."""
        du = (uv[..., 0] - self.centre_uv[0]) / self.semi_u_px
        dv = (uv[..., 1] - self.centre_uv[1]) / self.semi_v_px
        return np.sqrt(du * du + dv * dv)

    def bounding_box_px(self, frame: FaceFrame) -> tuple[float, float, float, float]:
        """Image-space (x0, y0, x1, y1) around the outer falloff ellipse."""
        t = np.linspace(0.0, 2.0 * np.pi, 181)
        uv = self.centre_uv + self.outer_ratio * np.stack(
            [self.semi_u_px * np.cos(t), self.semi_v_px * np.sin(t)], -1)
        xy = frame.origin_px + frame.to_image_vectors(uv)
        return xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max() + 1.0, xy[:, 1].max() + 1.0


def head_window(frame: FaceFrame, head: HeadEllipse, points_px: np.ndarray,
                frame_px: int, edge_margin_px: float) -> np.ndarray:
    """Falloff weights (..., 2) in [0, 1] for the x and y displacement at image points (..., 2).

    1 on the head, 0 far off. At the frame's edges only the component across the edge eases
    off (x near the left and right edges, y near the top and bottom): content may slide along
    an edge, since what comes in is the picture's own edge row, but never across it, where the
    picture has nothing to show. A head the framing cuts at the top can so turn with its hair
    instead of having it pinned to the edge.
    """
    r = head.radius(frame.to_face(points_px))
    w = 1.0 - smoothstep(1.0, head.outer_ratio * 0.97, r)
    x, y = points_px[..., 0], points_px[..., 1]
    across_x = smoothstep(1.0, edge_margin_px, np.minimum(x, frame_px - 1 - x))
    across_y = smoothstep(1.0, edge_margin_px, np.minimum(y, frame_px - 1 - y))
    return np.stack([w * across_x, w * across_y], axis=-1)


def box_window(frame: FaceFrame, points_px: np.ndarray, inner_uv: tuple[float, float, float, float],
               ramp_px: float) -> np.ndarray:
    """1 inside the face-coordinate rectangle (u0, v0, u1, v1), 0 beyond `ramp_px` from it (C¹)."""
    uv = frame.to_face(points_px)
    u0, v0, u1, v1 = inner_uv
    du = np.maximum(np.maximum(u0 - uv[..., 0], uv[..., 0] - u1), 0.0)
    dv = np.maximum(np.maximum(v0 - uv[..., 1], uv[..., 1] - v1), 0.0)
    return 1.0 - smoothstep(0.0, ramp_px, np.hypot(du, dv))


def face_rect_box(frame: FaceFrame, rect_uv: tuple[float, float, float, float],
                  frame_px: int) -> tuple[float, float, float, float]:
    """Image-space bounding box (x0, y0, x1, y1) of a face-coordinate rectangle."""
    u0, v0, u1, v1 = rect_uv
    corners = np.array([[u0, v0], [u1, v0], [u0, v1], [u1, v1]])
    xy = frame.origin_px + frame.to_image_vectors(corners)
    lo = np.clip(xy.min(0), 0, frame_px)
    hi = np.clip(xy.max(0) + 1.0, 0, frame_px)
    return lo[0], lo[1], hi[0], hi[1]


def below_coverage(uv: np.ndarray, line: Polyline, widen: float) -> np.ndarray:
    """Fraction of each unit pixel lying below `line` (larger v); soft beyond the line's ends.

    Between the ends the edge is a 1-px anti-aliased step; past them the transition widens by
    `widen` px per px of overhang, so the two sides blend over the cheeks.
    """
    u, v = uv[..., 0], uv[..., 1]
    width = 1.0 + widen * line.overhang(u)
    return np.clip((v - line(u)) / width + 0.5, 0.0, 1.0)


def between_coverage(uv: np.ndarray, upper: Polyline, lower: Polyline) -> np.ndarray:
    """Fraction of each unit pixel (in v) lying between two curves; 0 where they touch."""
    v = uv[..., 1]
    top = upper(uv[..., 0])
    bottom = np.maximum(lower(uv[..., 0]), top)
    return np.clip(np.minimum(v + 0.5, bottom) - np.maximum(v - 0.5, top), 0.0, 1.0)


def box_from_bounds(x0: float, y0: float, x1: float, y1: float, frame_px: int) -> Box:
    """Integer box for float bounds, clipped to the frame."""
    bx0 = int(np.clip(np.floor(x0), 0, frame_px - 1))
    by0 = int(np.clip(np.floor(y0), 0, frame_px - 1))
    bx1 = int(np.clip(np.ceil(x1), bx0 + 1, frame_px))
    by1 = int(np.clip(np.ceil(y1), by0 + 1, frame_px))
    return Box(bx0, by0, bx1 - bx0, by1 - by0)
