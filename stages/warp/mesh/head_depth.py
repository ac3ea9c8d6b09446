"""The head's depth everywhere in the frame: the face mesh's own depths, a skull beyond them.

A head turn moves each point across the picture by its depth times the sine of the angle, so
the depth map decides how far the nose swings against the eyes (parallax) — and whether the
warp folds. Three parts, computed once per actor on a raster of the frame:

- over the face (inside the face oval) the landmarks' depths interpolated linearly between
  mesh points, so the nose tip keeps its full height over the eyes (a smoothed average halved
  it: part of the mesh warp's "half a turn"), drawn out by FACE_DEPTH_GAIN and RELIEF_GAIN;
- beyond the oval an ellipsoid over the head ellipse (hair, ears, back of the skull), falling to
  the silhouette plane at its rim, joined to the face's edge over a short band;
- a slope limit: the smallest surface above that map whose slope is at most MAX_DEPTH_SLOPE
  (a cone dilation). Where a real surface is steeper (the nose's flanks, the skull's rim) a turn
  would hide what lies behind it; a warp cannot hide, it would fold. Raising the ground next to
  a steep part keeps every peak (the nose tip still swings its full distance) and caps how much
  a turn can squeeze the far side.
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.warp.mesh.anatomy import FACE_OVAL, FaceFrame
from stages.warp.mesh.regions import HeadEllipse, smoothstep

MAX_DEPTH_SLOPE = 1.2
"""Steepest depth slope (depth px per image px). A yaw θ squeezes the far side by
slope·sin θ + (1 − cos θ): at 1.2 and θ = 30° that is 0.73 of the picture's length, so a turn
of ±30° (the planner's limit) never folds, and at ±25° it is 0.6."""
FACE_DEPTH_GAIN = 1.4
RELIEF_GAIN = 1.5
RELIEF_SIGMA = 0.12
"""How far the face's depth is drawn out for the warp: the whole face by FACE_DEPTH_GAIN, and
its relief (the depth less its blur over RELIEF_SIGMA × face height: the nose, the brow, the
eye sockets) by RELIEF_GAIN on top. Why more than the landmarks' own depth: a warp of a
frontal picture turned by θ with that depth reads as turned by only 0.6 θ on MediaPipe —
both by the rigid fit of the skull's points and by the nose's travel across the eye line —
because it cannot show what a real turn shows besides (the far cheek and ear hidden, the near
ear revealed, the light moving). The gains were set on commanded sweeps so that the nose
crosses the face as far per degree as it does on the real heads turning in ../shared/driving
(0.56–0.69 of the eye distance per unit sine there; benchmarks/bench_head_sweep.py), while the
forehead and skull, which the frame's top edge holds, move little more than before.
Read without MediaPipe (optical flow on the rendered sweeps, stages/verify/flow_parallax.py),
the picture's nose then crosses 0.68–0.75 eye distances per unit sine, at ±7.5° as at ±25°: a
little further than real noses; MediaPipe is what reads it short (docs/driving.md)."""
RASTER_STEP_PX = 2
"""Raster pitch of the depth map: finer than every grid that samples it (≥ 2 px)."""
JOIN_BAND = 0.06
"""× face height: the band inside the oval over which the mesh depth hands over to the skull."""


def _raster(frame_px: int) -> tuple[np.ndarray, int]:
    """(n, n, 2) pixel centres (x, y) of the depth raster over the frame, and n."""
    n = frame_px // RASTER_STEP_PX
    centres = (np.arange(n) + 0.5) * RASTER_STEP_PX - 0.5
    gx, gy = np.meshgrid(centres, centres)
    return np.stack([gx, gy], -1), n


def _triangles(points_px: np.ndarray, frame_px: int) -> np.ndarray:
    """(T, 3) vertex indices of the Delaunay triangles of image points (cv2.Subdiv2D)."""
    subdiv = cv2.Subdiv2D((-1, -1, frame_px + 2, frame_px + 2))
    index = {}
    for i, (x, y) in enumerate(np.clip(points_px, -0.5, frame_px + 0.5).astype(np.float32)):
        index.setdefault((float(x), float(y)), i)
        subdiv.insert((float(x), float(y)))
    triangles = []
    for tri in subdiv.getTriangleList().reshape(-1, 3, 2):
        ids = [index.get((float(x), float(y))) for x, y in tri]
        if None not in ids:  # a triangle on Subdiv2D's outer helper vertices
            triangles.append(ids)
    return np.array(triangles, np.int64).reshape(-1, 3)


def _linear_over_mesh(points_px: np.ndarray, values: np.ndarray, n: int, frame_px: int) -> np.ndarray:
    """(n, n) raster of `values` interpolated linearly inside the mesh's triangles; NaN outside."""
    cells = (points_px + 0.5) / RASTER_STEP_PX - 0.5
    out = np.full((n, n), np.nan)
    for tri in _triangles(points_px, frame_px):
        a, b, c = cells[tri]
        lo = np.clip(np.ceil(np.minimum(np.minimum(a, b), c)), 0, n - 1).astype(int)
        hi = np.clip(np.floor(np.maximum(np.maximum(a, b), c)), 0, n - 1).astype(int)
        ys, xs = np.mgrid[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1]
        v0, v1 = b - a, c - a
        den = v0[0] * v1[1] - v1[0] * v0[1]
        if abs(den) < 1e-9:  # a degenerate sliver covers no cell
            continue
        px, py = xs - a[0], ys - a[1]
        wb = (px * v1[1] - v1[0] * py) / den
        wc = (v0[0] * py - px * v0[1]) / den
        inside = (wb >= -1e-9) & (wc >= -1e-9) & (wb + wc <= 1.0 + 1e-9)
        value = (1.0 - wb - wc) * values[tri[0]] + wb * values[tri[1]] + wc * values[tri[2]]
        out[ys[inside], xs[inside]] = value[inside]
    return out


def _inside_distance_px(oval_px: np.ndarray, n: int) -> np.ndarray:
    """(n, n) distance in pixels from each raster cell to the oval's outline, inside it; 0 outside."""
    mask = np.zeros((n, n), np.uint8)
    cv2.fillPoly(mask, [np.round((oval_px + 0.5) / RASTER_STEP_PX - 0.5).astype(np.int32)], 1)
    return cv2.distanceTransform(mask, cv2.DIST_L2, 5) * RASTER_STEP_PX


def _cone_dilation(depth: np.ndarray, slope_per_cell: float) -> np.ndarray:
    """The least surface ≥ `depth` whose slope is ≤ slope_per_cell (per raster cell, 8-neighbour chamfer)."""
    out = depth.astype(np.float32)
    kernel = np.ones((3, 3), np.uint8)
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
    while True:
        # A straight step costs one cell, a diagonal one √2 cells.
        raised = np.maximum(cv2.dilate(out, cross) - slope_per_cell,
                            cv2.dilate(out, kernel) - np.sqrt(2.0) * slope_per_cell)
        if not (raised > out + 1e-4).any():
            return out
        np.maximum(out, raised, out=out)


def _with_relief(face: np.ndarray, gain: float, sigma_cells: float) -> np.ndarray:
    """The face's depth with its relief (what stands out of its smooth shape: the nose, the
    brow ridge, the eye sockets' hollows) scaled by `gain`; NaN outside the face stays NaN."""
    inside = np.isfinite(face)
    weight = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), sigma_cells)
    smooth = cv2.GaussianBlur(np.where(inside, face, 0.0).astype(np.float32), (0, 0), sigma_cells)
    smooth = smooth / np.maximum(weight, 1e-6)
    return np.where(inside, smooth + gain * (face - smooth), np.nan)


class HeadDepth:
    """Depth toward the viewer (pixels, 0 at the cheek contour) of any point of the frame."""

    def __init__(self, frame: FaceFrame, landmarks_px: np.ndarray, head: HeadEllipse,
                 crown_depth_px: float, frame_px: int) -> None:
        mesh = np.asarray(landmarks_px, dtype=np.float64)[: frame.depth_px.shape[0], :2]
        points, n = _raster(frame_px)
        flat = points.reshape(-1, 2)
        face = _linear_over_mesh(mesh, frame.depth_px, n, frame_px)
        face = FACE_DEPTH_GAIN * _with_relief(face, RELIEF_GAIN, RELIEF_SIGMA * frame.face_h_px / RASTER_STEP_PX)
        r = head.radius(frame.to_face(flat)).reshape(n, n)
        skull = crown_depth_px * np.clip(1.0 - r**2, 0.0, 1.0)
        inside = _inside_distance_px(mesh[list(FACE_OVAL)], n)
        share = smoothstep(0.0, JOIN_BAND * frame.face_h_px, inside) * np.isfinite(face)
        depth = np.where(share > 0.0, share * np.nan_to_num(face) + (1.0 - share) * skull, skull)
        self._map = _cone_dilation(depth, MAX_DEPTH_SLOPE * RASTER_STEP_PX)

    def at(self, points_px: np.ndarray) -> np.ndarray:
        """Depth at image points (..., 2), bilinear between raster cells."""
        pts = np.asarray(points_px, dtype=np.float64)
        cells = ((pts.reshape(-1, 2) + 0.5) / RASTER_STEP_PX - 0.5).astype(np.float32)
        # cv2.remap wants a 2-D map under 32767 a side: lay the points out in rows of 256.
        count = len(cells)
        grid = np.zeros((-(-count // 256) * 256, 2), np.float32)
        grid[:count] = cells
        grid = grid.reshape(-1, 256, 2)
        values = cv2.remap(self._map, grid[..., 0], grid[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return values.reshape(-1)[:count].astype(np.float64).reshape(pts.shape[:-1])
