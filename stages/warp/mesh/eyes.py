"""The eyelids: an upper-lid layer that slides down over the eye on a blink.

The eye itself (and everything else) follows the face field; the upper lid — the skin from the
lid margin up to the brow — follows its own field, which is the face field plus the blink's
lid travel. Where the lid layer's inverse map lands on lid skin it covers whatever is below,
so a blink draws the lid (lashes first) down over a still iris instead of squashing the eye.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stages.warp.mesh import anatomy as an
from stages.warp.mesh.field import Box, Grid, GridInverter
from stages.warp.mesh.regions import below_coverage, face_rect_box


@dataclass(frozen=True)
class EyePatch:
    """One eye's lid-layer grid, window rectangle and lid label (source space)."""

    grid: Grid
    inner_rect_uv: tuple[float, float, float, float]
    ramp_px: float
    lid_label: np.ndarray  # (h, w) float32: 1 on upper-lid skin

    @classmethod
    def build(cls, frame: an.FaceFrame, eye: an.EyeGeometry, landmarks_px: np.ndarray, roi: Box,
              step: int) -> "EyePatch":
        """Lay the patch out around the eye and paint the lid label."""
        uv = frame.to_face(landmarks_px[list(eye.upper_ids + eye.ring2_ids + eye.ring3_ids
                                             + eye.lower_ids), :2])
        h, w = eye.height_px, eye.width_px
        inner = (uv[:, 0].min() - 0.1 * w, uv[:, 1].min() - 0.1 * h,
                 uv[:, 0].max() + 0.1 * w, uv[:, 1].max() + 0.35 * h)
        ramp = 0.45 * h + 0.1 * w
        reach = ramp + 2.0
        outer = (inner[0] - reach, inner[1] - reach, inner[2] + reach, inner[3] + reach + 0.3 * h)
        grid = Grid.covering(*face_rect_box(frame, outer, 10**6), step=step, within=roi)
        puv = frame.to_face(grid.box.pixel_centres())
        # The label edge sits a hair above the margin landmarks so no sliver of eye white rides
        # down with the lid.
        shifted = puv.copy()
        shifted[..., 1] += 0.04 * h
        label = 1.0 - below_coverage(shifted, eye.margin, widen=0.5)
        return cls(grid, inner, ramp, np.ascontiguousarray(label, dtype=np.float32))


class EyeCompositor:
    """Per-thread scratch for one eye: the lid map, its claim, and the blend into the frame map."""

    def __init__(self, patch: EyePatch) -> None:
        self.patch = patch
        g = patch.grid
        self.inverter = GridInverter(g)
        self._origin = np.array([g.box.x0, g.box.y0], np.float32)
        self._local = np.empty((g.box.h, g.box.w, 2), np.float32)
        self._claim = np.empty((g.box.h, g.box.w), np.float32)

    def composite_map(self, lid_field: np.ndarray, map_view: np.ndarray) -> None:
        """Blend the lid layer over `map_view` (the patch's part of the frame map), in place."""
        s = self.inverter.invert(lid_field)
        np.subtract(s, self._origin, out=self._local)
        cv2.remap(self.patch.lid_label, self._local, None, cv2.INTER_LINEAR, dst=self._claim,
                  borderMode=cv2.BORDER_REPLICATE)
        # map += claim · (s − map)
        np.subtract(s, map_view, out=self._local)
        np.multiply(self._local, self._claim[..., None], out=self._local)
        np.add(map_view, self._local, out=map_view)
