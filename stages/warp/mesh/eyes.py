"""The eyelids: an upper-lid layer that slides down over the eye on a blink.

The eye itself (and everything else) follows the face layer. The upper lid — the skin from the
lash line up toward the brow — is a layer of its own: on a blink every column of it travels
down so that the lash line lands on the lower lid (a hair past it), the lash band moving as
one piece and the skin above stretching less and less up to the brow. Where that layer lands
it covers the eye, so a blink draws the lid down over a still iris instead of squashing it.

The lid motion is along the face's vertical, and monotone in it, so its inverse is exact and
cheap to precompute: for a ladder of blink levels, the backward shift of every patch pixel.
A frame blends the two nearest levels and composes the result with the face layer's map.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stages.warp.mesh import anatomy as an
from stages.warp.mesh.field import Box
from stages.warp.mesh.regions import below_coverage, box_from_bounds, face_rect_box, smoothstep

BLINK_LEVELS = 9
"""Precomputed blink amounts 0, 1/8, …, 1; frames interpolate between neighbours."""
_OVERSHOOT = 0.16  # × eye height: how far past the lower lid the margin landmarks go
_LID_EDGE_LIFT = 0.1  # × eye height: the lid label's edge sits this far above those landmarks
_BISECTIONS = 30


def _lid_drop_px(eye: an.EyeGeometry, u: np.ndarray) -> np.ndarray:
    """How far the lash line at u travels for a full blink (0 beyond the eye corners)."""
    lo, hi = eye.u_range
    inside = (u > lo) & (u < hi)
    across = np.clip((u - 0.5 * (lo + hi)) / (0.5 * (hi - lo)), -1.0, 1.0)
    gap = np.maximum(eye.lower(u) - eye.margin(u), 0.0)
    return np.where(inside, gap + _OVERSHOOT * eye.height_px * (1.0 - across**4), 0.0)


def _lid_share(eye: an.EyeGeometry, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Share of the lash line's travel at (u, v): 1 at and below it, fading to 0 under the brow."""
    margin = eye.margin(u)
    reach = np.maximum(0.8 * (margin - eye.brow(u)), 0.6 * eye.height_px)
    return 1.0 - smoothstep(0.0, 1.0, (margin - v) / reach)


@dataclass(frozen=True)
class EyePatch:
    """One eye's patch of the frame: lid label and precomputed backward lid shifts."""

    box: Box
    centre_px: np.ndarray  # (2,) the eye's centre in the source image (x, y)
    v_axis: np.ndarray  # (2,) float32, the face's downward direction in the image
    lid_label: np.ndarray  # (h, w) float32: 1 on upper-lid skin (source space)
    back_shift: np.ndarray  # (BLINK_LEVELS, h, w) float32: source = pixel − shift·v_axis

    @classmethod
    def build(cls, frame: an.FaceFrame, eye: an.EyeGeometry, roi: Box) -> "EyePatch":
        """Lay the patch out from the brow to below the lower lid; precompute the lid maps."""
        h, w = eye.height_px, eye.width_px
        lo, hi = eye.u_range
        brow_v = float(eye.brow(np.linspace(lo, hi, 9)).min())
        rect = (lo - 0.35 * w, brow_v - 0.15 * h, hi + 0.35 * w,
                float(eye.lower(np.linspace(lo, hi, 9)).max()) + 0.8 * h)
        x0, y0, x1, y1 = face_rect_box(frame, rect, 10**6)
        box = box_from_bounds(max(x0, roi.x0), max(y0, roi.y0), min(x1, roi.x0 + roi.w),
                              min(y1, roi.y0 + roi.h), 10**6)
        uv = frame.to_face(box.pixel_centres())
        u, v = uv[..., 0], uv[..., 1]
        # The mesh's margin points often sit a little inside the eye: the label edge is lifted
        # above them so no sliver of eye white rides down with the lid (the overshoot covers
        # the lift, so the closed lid still meets the lower lid).
        shifted = uv.copy()
        shifted[..., 1] += _LID_EDGE_LIFT * h
        label = 1.0 - below_coverage(shifted, eye.margin, widen=0.5)
        drop = _lid_drop_px(eye, u)
        shifts = np.zeros((BLINK_LEVELS,) + u.shape)
        for k in range(1, BLINK_LEVELS):
            b = k / (BLINK_LEVELS - 1)
            # Source v with v_src + b·drop·share(v_src) = v: monotone in v_src, so bisect.
            lo_v, hi_v = v - b * drop - 1.0, v + 1.0
            for _ in range(_BISECTIONS):
                mid = 0.5 * (lo_v + hi_v)
                ahead = mid + b * drop * _lid_share(eye, u, mid) > v
                hi_v = np.where(ahead, mid, hi_v)
                lo_v = np.where(ahead, lo_v, mid)
            shifts[k] = v - 0.5 * (lo_v + hi_v)
        mid_u = np.array([0.5 * (lo + hi)])
        centre_uv = np.array([mid_u[0], 0.5 * float(eye.margin(mid_u)[0] + eye.lower(mid_u)[0])])
        centre = frame.origin_px + frame.to_image_vectors(centre_uv)
        return cls(box, centre, frame.v_axis.astype(np.float32), np.ascontiguousarray(label, np.float32),
                   np.ascontiguousarray(shifts, np.float32))


class EyeCompositor:
    """Per-thread scratch for one eye: the lid map, its claim, and the colour blend.

    The lid's source and the eye's source under a lid edge are far apart in the picture, so the
    lid is remapped on its own and mixed with the face layer by its claim (averaging the two
    maps would sample the iris in between).
    """

    def __init__(self, patch: EyePatch, image: np.ndarray) -> None:
        self.patch = patch
        self.image = image
        h, w = patch.box.h, patch.box.w
        self._origin = np.array([patch.box.x0, patch.box.y0], np.float32)
        self._shift = np.empty((h, w), np.float32)
        self._shift_at = np.empty((h, w), np.float32)
        self._local = np.empty((h, w, 2), np.float32)
        self._lid_map = np.empty((h, w, 2), np.float32)
        self._claim = np.empty((h, w), np.float32)
        self._lid_rgb = np.empty((h, w, 3), np.uint8)
        self._pix = np.empty((h, w, 3), np.float32)
        self._diff = np.empty((h, w, 3), np.float32)

    def render(self, blink: float, face_map: np.ndarray, out_view: np.ndarray) -> None:
        """Draw the lid for `blink` over `out_view` (this patch of the frame, face layer done).

        `face_map` is the face layer's map over the same patch (frame coordinates).
        """
        p = self.patch
        level = float(np.clip(blink, 0.0, 1.0)) * (BLINK_LEVELS - 1)
        k = min(int(level), BLINK_LEVELS - 2)
        f = level - k
        cv2.addWeighted(p.back_shift[k], 1.0 - f, p.back_shift[k + 1], f, 0.0, dst=self._shift)
        # The lid layer = the face layer's map, then the lid's own backward shift at that point.
        np.subtract(face_map, self._origin, out=self._local)
        cv2.remap(self._shift, self._local, None, cv2.INTER_LINEAR, dst=self._shift_at,
                  borderMode=cv2.BORDER_REPLICATE)
        np.multiply(self._shift_at[..., None], p.v_axis, out=self._lid_map)
        np.subtract(face_map, self._lid_map, out=self._lid_map)
        np.subtract(self._lid_map, self._origin, out=self._local)
        cv2.remap(p.lid_label, self._local, None, cv2.INTER_LINEAR, dst=self._claim,
                  borderMode=cv2.BORDER_REPLICATE)
        cv2.remap(self.image, self._lid_map, None, cv2.INTER_LINEAR, dst=self._lid_rgb,
                  borderMode=cv2.BORDER_REPLICATE)
        # out += claim·(lid − out)
        self._pix[...] = out_view
        self._diff[...] = self._lid_rgb
        np.subtract(self._diff, self._pix, out=self._diff)
        np.multiply(self._diff, self._claim[..., None], out=self._diff)
        np.add(self._pix, self._diff, out=self._pix)
        np.add(self._pix, 0.5, out=self._pix)
        np.copyto(out_view, self._pix, casting="unsafe")
