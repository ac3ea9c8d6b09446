"""The mouth: two lip layers that part, and a synthesised interior where they do.

Source pixels of the mouth patch are labelled upper side (upper lip and everything above the
lip line), jaw side (lower lip and below) or actor interior (whatever the actor's own parted
lips show — it stays attached to the upper teeth). Each side follows its own smooth field.
For an output pixel q, side k claims q when its inverse map s_k(q) lands in its own label; the
upper side wins overlaps (pressed lips), the actor interior sits behind both, and what nobody
claims is the opened mouth — painted from two textures built once per actor and carried by
the two sides' maps: upper teeth hang under the upper lip (so they stay put while the jaw
drops), tongue and a hint of lower teeth ride on the lower lip.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stages.warp.mesh import anatomy as an
from stages.warp.mesh.field import Box, Grid, GridInverter
from stages.warp.mesh.regions import below_coverage, between_coverage, face_rect_box, smoothstep

_EPS = 1e-4


@dataclass(frozen=True)
class MouthColours:
    """Colours sampled from the actor (RGB, 0–255 floats)."""

    lip: np.ndarray
    cavity: np.ndarray
    teeth: np.ndarray
    tongue: np.ndarray

    @classmethod
    def sample(cls, image: np.ndarray, landmarks_px: np.ndarray) -> "MouthColours":
        """Median lip colour and face brightness → cavity, teeth and tongue colours."""
        lm = landmarks_px[:, :2]
        h, w = image.shape[:2]
        outer = np.concatenate([lm[list(an.LIP_OUTER_UPPER)], lm[list(an.LIP_OUTER_LOWER)][::-1]])
        inner = np.concatenate([lm[list(an.LIP_INNER_UPPER)], lm[list(an.LIP_INNER_LOWER)][::-1]])
        lips = np.zeros((h, w), np.uint8)
        cv2.fillPoly(lips, [np.round(outer).astype(np.int32)], 1)
        cv2.fillPoly(lips, [np.round(inner).astype(np.int32)], 0)
        face = np.zeros((h, w), np.uint8)
        cv2.fillPoly(face, [np.round(lm[list(an.FACE_OVAL)]).astype(np.int32)], 1)
        face_px = image[face.astype(bool)].astype(np.float64)
        lip_px = image[lips.astype(bool)].astype(np.float64)
        skin = np.median(face_px, axis=0) if len(face_px) else np.array([180.0, 150, 130])
        lip = np.median(lip_px, axis=0) if len(lip_px) >= 4 else skin * np.array([0.95, 0.7, 0.7])
        luma = float(skin @ np.array([0.299, 0.587, 0.114]))
        light = float(np.clip(luma / 165.0, 0.45, 1.05))  # dim teeth in dark pictures
        cavity = lip * 0.2 + np.array([6.0, 1.0, 1.0])
        tongue = np.clip(lip * 0.62 + np.array([18.0, 0.0, 2.0]), 0, 255)
        teeth = np.array([238.0, 232.0, 216.0]) * light
        return cls(lip, cavity, teeth, tongue)


@dataclass(frozen=True)
class MouthPatch:
    """The mouth patch's grid, window rectangle, labels and interior textures (source space)."""

    grid: Grid
    inner_rect_uv: tuple[float, float, float, float]
    ramp_px: float
    labels_upper: np.ndarray  # (h, w, 2) float32: upper-side label, actor-interior label
    labels_lower: np.ndarray  # (h, w) float32: jaw-side label
    upper_texture: np.ndarray  # (h, w, 4) float32: premultiplied RGB + alpha of the upper teeth
    lower_texture: np.ndarray  # (h, w, 3) float32: tongue, lower teeth, cavity — opaque

    @classmethod
    def build(cls, image: np.ndarray, landmarks_px: np.ndarray, frame: an.FaceFrame,
              mouth: an.MouthGeometry, roi: Box, step: int, max_drop_px: float) -> "MouthPatch":
        """Lay the patch out around the lips and paint its labels and textures."""
        face_h, mw = frame.face_h_px, frame.mouth_w_px
        uv_lips = frame.to_face(landmarks_px[list(an.LIPS), :2])
        inner = (uv_lips[:, 0].min() - 0.3 * mw, uv_lips[:, 1].min() - 0.04 * face_h,
                 uv_lips[:, 0].max() + 0.3 * mw, uv_lips[:, 1].max() + 0.06 * face_h)
        ramp = 0.1 * face_h
        reach = ramp + 1.2 * max_drop_px + 2.0
        outer = (inner[0] - reach, inner[1] - reach, inner[2] + reach, inner[3] + reach)
        grid = Grid.covering(*face_rect_box(frame, outer, 10**6), step=step, within=roi)
        uv = frame.to_face(grid.box.pixel_centres())
        below = below_coverage(uv, mouth.slit, widen=0.6)
        interior = between_coverage(uv, mouth.inner_upper, mouth.inner_lower)
        labels_upper = np.stack([(1.0 - below) * (1.0 - interior), interior], -1).astype(np.float32)
        labels_lower = (below * (1.0 - interior)).astype(np.float32)
        colours = MouthColours.sample(image, landmarks_px)
        upper_tex, lower_tex = _paint_interior(uv, mouth, face_h, colours)
        return cls(grid, inner, ramp, np.ascontiguousarray(labels_upper),
                   np.ascontiguousarray(labels_lower), upper_tex, lower_tex)


def _paint_interior(uv: np.ndarray, mouth: an.MouthGeometry, face_h: float,
                    colours: MouthColours) -> tuple[np.ndarray, np.ndarray]:
    """Upper-teeth texture (hangs below the upper inner lip) and tongue/cavity texture (rests
    on the lower inner lip), both in source coordinates of the patch."""
    u, v = uv[..., 0], uv[..., 1]
    inner_half_w = max(0.5 * (mouth.inner_upper.u[-1] - mouth.inner_upper.u[0]), 2.0)
    centre_u = 0.5 * (mouth.inner_upper.u[-1] + mouth.inner_upper.u[0])
    across = (u - centre_u) / inner_half_w  # ±1 at the inner corners
    teeth_h = 0.05 * face_h * (1.0 - 0.25 * np.clip(across, -1, 1) ** 2)  # curved incisal line
    below_lip = v - mouth.inner_upper(u)
    span = 0.8 * inner_half_w
    side = np.clip(span - np.abs(u - centre_u) + 0.5, 0.0, 1.0)  # teeth end toward the corners
    bottom = np.clip(teeth_h - below_lip + 0.5, 0.0, 1.0)
    alpha = side * bottom
    shade = 1.0 - 0.4 * np.clip(np.abs(across) / 0.8, 0, 1) ** 2
    shade *= 0.7 + 0.3 * smoothstep(0.0, 0.3 * teeth_h, below_lip)  # the lip's shadow on top
    shade *= 1.0 - 0.12 * smoothstep(0.7 * teeth_h, teeth_h, below_lip)  # translucent edge
    px_per_unit = inner_half_w
    gaps = np.array([0.0, 0.21, -0.21, 0.38, -0.38, 0.53, -0.53, 0.66, -0.66])
    dist = np.min(np.abs(across[..., None] - gaps) * px_per_unit, axis=-1)
    shade *= 1.0 - 0.14 * np.exp(-(dist / 0.6) ** 2) * smoothstep(0.15, 0.6, below_lip / teeth_h)
    teeth_rgb = colours.teeth * shade[..., None]
    upper = np.concatenate([teeth_rgb * alpha[..., None], alpha[..., None]], -1)

    above_lip = mouth.inner_lower(u) - v
    throat = 1.0 - 0.35 * np.clip(np.abs(across), 0, 1)  # darker toward the cheeks
    rgb = colours.cavity * throat[..., None]
    tongue_a = (1.0 - smoothstep(0.025 * face_h, 0.07 * face_h, above_lip)) * np.clip(
        0.85 * inner_half_w - np.abs(u - centre_u) + 0.5, 0, 1)
    tongue_rgb = colours.tongue * (0.8 + 0.2 * (1.0 - smoothstep(0.0, 0.05 * face_h, above_lip)))[..., None]
    rgb = rgb * (1.0 - tongue_a[..., None]) + tongue_rgb * tongue_a[..., None]
    low_teeth_a = 0.85 * np.clip(0.018 * face_h - above_lip + 0.5, 0, 1) * np.clip(
        0.55 * inner_half_w - np.abs(u - centre_u) + 0.5, 0, 1)
    rgb = rgb * (1.0 - low_teeth_a[..., None]) + (0.72 * colours.teeth) * low_teeth_a[..., None]
    return (np.ascontiguousarray(upper, dtype=np.float32), np.ascontiguousarray(rgb, dtype=np.float32))


class MouthCompositor:
    """Per-thread scratch for the mouth: both sides' maps, claims, the hole and its paint."""

    def __init__(self, patch: MouthPatch) -> None:
        self.patch = patch
        g = patch.grid
        self.upper = GridInverter(g)
        self.lower = GridInverter(g)
        h, w = g.box.h, g.box.w
        self._origin = np.array([g.box.x0, g.box.y0], np.float32)
        self._local_u = np.empty((h, w, 2), np.float32)
        self._local_l = np.empty((h, w, 2), np.float32)
        self._lab_u = np.empty((h, w, 2), np.float32)
        self._lab_l = np.empty((h, w), np.float32)
        self._w_lower = np.empty((h, w), np.float32)
        self._w_upper = np.empty((h, w), np.float32)
        self._tmp = np.empty((h, w), np.float32)
        self.hole = np.empty((h, w), np.float32)
        self._tex_u = np.empty((h, w, 4), np.float32)
        self._tex_l = np.empty((h, w, 3), np.float32)
        self._paint = np.empty((h, w, 3), np.float32)
        self._pix = np.empty((h, w, 3), np.float32)
        self.has_hole = False

    def composite_map(self, upper_field: np.ndarray, lower_field: np.ndarray, map_view: np.ndarray) -> None:
        """Overwrite `map_view` (the patch's part of the frame map) with the lip composite."""
        s_u = self.upper.invert(upper_field)
        s_l = self.lower.invert(lower_field)
        np.subtract(s_u, self._origin, out=self._local_u)
        np.subtract(s_l, self._origin, out=self._local_l)
        cv2.remap(self.patch.labels_upper, self._local_u, None, cv2.INTER_LINEAR, dst=self._lab_u,
                  borderMode=cv2.BORDER_REPLICATE)
        cv2.remap(self.patch.labels_lower, self._local_l, None, cv2.INTER_LINEAR, dst=self._lab_l,
                  borderMode=cv2.BORDER_REPLICATE)
        c_up = self._lab_u[..., 0]
        c_in = self._lab_u[..., 1]
        # jaw side: whatever the upper side leaves; actor interior: behind both.
        np.subtract(1.0, c_up, out=self._tmp)
        np.minimum(self._lab_l, self._tmp, out=self._w_lower)
        np.subtract(self._tmp, self._w_lower, out=self._tmp)
        np.minimum(c_in, self._tmp, out=self._tmp)
        np.add(c_up, self._tmp, out=self._w_upper)
        np.add(self._w_upper, self._w_lower, out=self._tmp)
        np.subtract(1.0, self._tmp, out=self.hole)
        np.maximum(self._tmp, _EPS, out=self._tmp)
        np.divide(self._w_lower, self._tmp, out=self._w_lower)
        # map = s_u + (w_lower / total)·(s_l − s_u): a pure upper map where nobody claims.
        np.subtract(s_l, s_u, out=self._local_l)
        np.multiply(self._local_l, self._w_lower[..., None], out=self._local_l)
        np.add(s_u, self._local_l, out=map_view)
        self.has_hole = bool(self.hole.max() > 1.0 / 255.0)

    def paint_interior(self, out_view: np.ndarray) -> None:
        """Blend the synthesised interior into `out_view` (uint8 RGB patch) where the lips part."""
        if not self.has_hole:
            return
        cv2.remap(self.patch.upper_texture, self._local_u, None, cv2.INTER_LINEAR, dst=self._tex_u,
                  borderMode=cv2.BORDER_REPLICATE)
        # self._local_l was reused as scratch; rebuild the lower side's local map.
        np.subtract(self.lower.fine, self._origin, out=self._local_l)
        cv2.remap(self.patch.lower_texture, self._local_l, None, cv2.INTER_LINEAR, dst=self._tex_l,
                  borderMode=cv2.BORDER_REPLICATE)
        alpha = self._tex_u[..., 3]
        np.subtract(1.0, alpha, out=self._tmp)
        np.multiply(self._tex_l, self._tmp[..., None], out=self._paint)
        np.add(self._paint, self._tex_u[..., :3], out=self._paint)
        np.clip(self.hole, 0.0, 1.0, out=self._tmp)
        # out = out + hole·(paint − out), rounded back to uint8 in place.
        self._pix[...] = out_view
        np.subtract(self._paint, self._pix, out=self._paint)
        np.multiply(self._paint, self._tmp[..., None], out=self._paint)
        np.add(self._pix, self._paint, out=self._pix)
        np.add(self._pix, 0.5, out=self._pix)
        np.copyto(out_view, self._pix, casting="unsafe")
