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
    """Per-thread scratch for one eye: the lid map, its claim, and the two-layer composite.

    The lid's source and the eye's source under a lid edge are far apart in the picture, so the
    edge is not made by averaging map coordinates (that would sample the iris in between): each
    pixel takes the stronger layer's map, and the weaker one is remapped and blended by colour.
    """

    def __init__(self, patch: EyePatch, image: np.ndarray) -> None:
        self.patch = patch
        self.image = image
        g = patch.grid
        self.inverter = GridInverter(g, iterations=6)
        h, w = g.box.h, g.box.w
        self._origin = np.array([g.box.x0, g.box.y0], np.float32)
        self._local = np.empty((h, w, 2), np.float32)
        self._claim = np.empty((h, w), np.float32)
        self._lid_wins = np.empty((h, w), bool)
        self._map2 = np.empty((h, w, 2), np.float32)
        self._w2 = np.empty((h, w), np.float32)
        self._second = np.empty((h, w, 3), np.uint8)
        self._pix = np.empty((h, w, 3), np.float32)
        self._diff = np.empty((h, w, 3), np.float32)

    def composite_map(self, lid_field: np.ndarray, map_view: np.ndarray) -> None:
        """Put the lid layer over `map_view` (the patch's part of the frame map), in place."""
        s = self.inverter.invert(lid_field)
        np.subtract(s, self._origin, out=self._local)
        cv2.remap(self.patch.lid_label, self._local, None, cv2.INTER_LINEAR, dst=self._claim,
                  borderMode=cv2.BORDER_REPLICATE)
        np.greater_equal(self._claim, 0.5, out=self._lid_wins)
        np.copyto(self._map2, s)
        np.copyto(self._map2, map_view, where=self._lid_wins[..., None])
        np.copyto(map_view, s, where=self._lid_wins[..., None])
        np.subtract(1.0, self._claim, out=self._w2)
        np.minimum(self._w2, self._claim, out=self._w2)  # the losing layer's share

    def finish(self, out_view: np.ndarray) -> None:
        """Blend the losing layer into `out_view` (the patch of the remapped frame)."""
        cv2.remap(self.image, self._map2, None, cv2.INTER_LINEAR, dst=self._second,
                  borderMode=cv2.BORDER_REPLICATE)
        self._pix[...] = out_view
        self._diff[...] = self._second
        np.subtract(self._diff, self._pix, out=self._diff)
        np.multiply(self._diff, self._w2[..., None], out=self._diff)
        np.add(self._pix, self._diff, out=self._pix)
        np.add(self._pix, 0.5, out=self._pix)
        np.copyto(out_view, self._pix, casting="unsafe")
