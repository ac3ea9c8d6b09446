"""The mouth: two lip layers that part, and a synthesised interior where they do.

Source pixels of the mouth patch are labelled upper side (upper lip and everything above the
lip line), jaw side (lower lip and below) or teeth side (whatever the actor's own parted lips
show). Each side follows its own smooth field: the upper and jaw sides their lips' motion, the
teeth side only the head's (upper teeth are fixed to the skull — when a lip corner drops it
covers them rather than bending them). For an output pixel q, side k claims q when its inverse
map s_k(q) lands in its own label; the upper side wins overlaps (pressed lips), the teeth side
sits behind both lips, and what nobody claims is the opened mouth — painted from two textures
built once per actor: upper teeth hanging from the rest line of the upper lip (carried by the
teeth side), and tongue, a hint of lower teeth and the dark cavity resting on the lower lip
(carried by the jaw side).
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
    gum: np.ndarray

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
        tongue = np.clip(lip * 0.55 + np.array([16.0, 0.0, 2.0]), 0, 255)
        teeth = np.array([238.0, 232.0, 216.0]) * light
        gum = np.clip(lip * 0.85 + np.array([12.0, 0.0, 0.0]), 0, 255)
        return cls(lip, cavity, teeth, tongue, gum)


@dataclass(frozen=True)
class MouthPatch:
    """The mouth patch's grid, window rectangle, labels and interior textures (source space)."""

    grid: Grid
    inner_rect_uv: tuple[float, float, float, float]
    ramp_px: float
    labels_upper: np.ndarray  # (h, w) float32: upper-side label
    labels_lower: np.ndarray  # (h, w) float32: jaw-side label
    labels_teeth: np.ndarray  # (h, w, 2) float32: teeth-side label, where the mouth may open
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
        labels_upper = ((1.0 - below) * (1.0 - interior)).astype(np.float32)
        labels_lower = (below * (1.0 - interior)).astype(np.float32)
        # The mouth opens only between its corners; past them a shortfall of claims is just the
        # two sides' fields differing a little, and is renormalised away, never painted dark.
        may_open = 1.0 - smoothstep(-0.08 * mouth.half_w_px, 0.02 * mouth.half_w_px,
                                    mouth.slit.signed_overhang(uv[..., 0]))
        labels_teeth = np.stack([interior, may_open], -1).astype(np.float32)
        colours = MouthColours.sample(image, landmarks_px)
        upper_tex, lower_tex = _paint_interior(uv, mouth, face_h, colours)
        return cls(grid, inner, ramp, np.ascontiguousarray(labels_upper),
                   np.ascontiguousarray(labels_lower), np.ascontiguousarray(labels_teeth),
                   upper_tex, lower_tex)


def _paint_interior(uv: np.ndarray, mouth: an.MouthGeometry, face_h: float,
                    colours: MouthColours) -> tuple[np.ndarray, np.ndarray]:
    """Upper-teeth texture (hangs from the rest line of the upper inner lip) and the
    tongue/cavity texture (rests on the lower inner lip), in source coordinates of the patch."""
    u, v = uv[..., 0], uv[..., 1]
    inner_half_w = max(0.5 * (mouth.inner_upper.u[-1] - mouth.inner_upper.u[0]), 2.0)
    centre_u = 0.5 * (mouth.inner_upper.u[-1] + mouth.inner_upper.u[0])
    across = (u - centre_u) / inner_half_w  # ±1 at the inner corners
    off_centre_px = np.abs(u - centre_u)

    # Upper teeth: a band of incisors and canines under the lip, its lower edge gently curved,
    # darker toward the corners and in the lip's shadow, with faint gaps between teeth.
    teeth_h = 0.05 * face_h * (1.0 - 0.3 * np.clip(across, -1, 1) ** 2)
    below_lip = v - mouth.inner_upper(u)
    # Where the actor's own lips part, its own teeth (or darkness) show and stay in front of
    # the painted interior; painted teeth there would hang below them, so only gums remain.
    own_teeth = smoothstep(1.0, 3.0, mouth.rest_gap_px(u))
    gum = smoothstep(0.5, -1.0, below_lip)
    alpha = (np.clip(0.85 * inner_half_w - off_centre_px + 0.5, 0.0, 1.0)
             * np.clip(teeth_h - below_lip + 0.5, 0.0, 1.0) * np.maximum(1.0 - own_teeth, gum))
    shade = 1.0 - 0.45 * smoothstep(0.35, 0.85, np.abs(across))
    shade *= 0.78 + 0.22 * smoothstep(-0.01 * face_h, 0.25 * teeth_h, below_lip)
    shade *= 1.0 - 0.1 * smoothstep(0.75, 1.0, below_lip / teeth_h)
    gaps = np.array([0.0, 0.22, -0.22, 0.4, -0.4, 0.56, -0.56, 0.7, -0.7])
    gap_dist_px = np.min(np.abs(across[..., None] - gaps), axis=-1) * inner_half_w
    shade *= 1.0 - 0.16 * np.exp(-(gap_dist_px / 0.7) ** 2) * smoothstep(0.1, 0.6, below_lip / teeth_h)
    teeth_rgb = colours.teeth * shade[..., None]
    # Above the rest line of the lip the teeth meet the gums, seen when the upper lip lifts.
    gum = gum[..., None]
    teeth_rgb = teeth_rgb * (1.0 - gum) + colours.gum * (0.85 + 0.15 * shade[..., None]) * gum
    upper = np.concatenate([teeth_rgb * alpha[..., None], alpha[..., None]], -1)

    # Jaw side: dark cavity (darker toward the cheeks and deep in the mouth), the tongue's
    # front resting behind the lower lip (lower teeth stay hidden behind it).
    above_lip = mouth.inner_lower(u) - v
    depth = 1.0 - 0.35 * np.clip(np.abs(across), 0, 1) - 0.15 * smoothstep(0.0, 0.08 * face_h, above_lip)
    rgb = colours.cavity * depth[..., None]
    tongue_a = (0.85 * (1.0 - smoothstep(0.0, 0.045 * face_h, above_lip))
                * np.clip(0.75 * inner_half_w - off_centre_px + 0.5, 0, 1)
                * (1.0 - smoothstep(0.3, 0.75, np.abs(across))))
    tongue_rgb = colours.tongue * (0.6 + 0.4 * (1.0 - smoothstep(0.0, 0.04 * face_h, above_lip)))[..., None]
    rgb = rgb * (1.0 - tongue_a[..., None]) + tongue_rgb * tongue_a[..., None]
    return (np.ascontiguousarray(upper, dtype=np.float32), np.ascontiguousarray(rgb, dtype=np.float32))


class MouthCompositor:
    """Per-thread scratch for the mouth: the three sides' maps, claims, the hole and its paint.

    Along a boundary between two sides (the lips' meeting line, a lip edge over the teeth) the
    two sources can be far apart in the picture, so averaging their coordinates would sample
    whatever lies between them. Instead each output pixel takes its strongest claimant's map
    for the main remap, and the runner-up is remapped separately and blended by colour.
    """

    def __init__(self, patch: MouthPatch, image: np.ndarray) -> None:
        self.patch = patch
        self.image = image
        g = patch.grid
        # The lip layers stretch the lips (closing, pouting): more fixed-point steps there.
        self.upper = GridInverter(g, iterations=6)
        self.lower = GridInverter(g, iterations=6)
        self.teeth = GridInverter(g)
        h, w = g.box.h, g.box.w
        self._origin = np.array([g.box.x0, g.box.y0], np.float32)
        self._local = {k: np.empty((h, w, 2), np.float32) for k in ("upper", "lower", "teeth")}
        self._c_up = np.empty((h, w), np.float32)
        self._c_low = np.empty((h, w), np.float32)
        self._c_teeth = np.empty((h, w, 2), np.float32)
        self._c1 = np.empty((h, w), np.float32)
        self._c2 = np.empty((h, w), np.float32)
        self._map2 = np.empty((h, w, 2), np.float32)
        self._mask = np.empty((h, w), bool)
        self._mask2 = np.empty((h, w), bool)
        self._tmp = np.empty((h, w), np.float32)
        self.hole = np.empty((h, w), np.float32)
        self._second = np.empty((h, w, 3), np.uint8)
        self._tex_u = np.empty((h, w, 4), np.float32)
        self._tex_l = np.empty((h, w, 3), np.float32)
        self._paint = np.empty((h, w, 3), np.float32)
        self._pix = np.empty((h, w, 3), np.float32)

    def _claim(self, side: str, field: np.ndarray, labels: np.ndarray, dst: np.ndarray) -> np.ndarray:
        s = getattr(self, side).invert(field)
        np.subtract(s, self._origin, out=self._local[side])
        cv2.remap(labels, self._local[side], None, cv2.INTER_LINEAR, dst=dst,
                  borderMode=cv2.BORDER_REPLICATE)
        return s

    def _rank(self, m1: np.ndarray, c: np.ndarray, s: np.ndarray) -> None:
        """Fold claimant (c, s) into the running best (c1, m1) and runner-up (c2, map2)."""
        np.greater(c, self._c1, out=self._mask)
        np.greater(c, self._c2, out=self._mask2)
        np.logical_and(self._mask2, ~self._mask, out=self._mask2)  # new runner-up only
        # Where c beats the best, the old best becomes the runner-up.
        np.copyto(self._map2, m1, where=self._mask[..., None])
        np.copyto(self._c2, self._c1, where=self._mask)
        np.copyto(m1, s, where=self._mask[..., None])
        np.copyto(self._c1, c, where=self._mask)
        np.copyto(self._map2, s, where=self._mask2[..., None])
        np.copyto(self._c2, c, where=self._mask2)

    def composite_map(self, upper_field: np.ndarray, lower_field: np.ndarray, teeth_field: np.ndarray,
                      map_view: np.ndarray) -> None:
        """Write the strongest claimant's map into `map_view` (the patch's part of the frame map)."""
        p = self.patch
        s_u = self._claim("upper", upper_field, p.labels_upper, self._c_up)
        s_l = self._claim("lower", lower_field, p.labels_lower, self._c_low)
        s_t = self._claim("teeth", teeth_field, p.labels_teeth, self._c_teeth)
        c_up, c_low, c_teeth = self._c_up, self._c_low, self._c_teeth[..., 0]
        # Claims in priority order: upper lip, then lower lip, then teeth, each taking at most
        # what the ones before it left; what is left after all three is the opened mouth.
        np.subtract(1.0, c_up, out=self._tmp)
        np.minimum(c_low, self._tmp, out=c_low)
        np.subtract(self._tmp, c_low, out=self._tmp)
        np.minimum(c_teeth, self._tmp, out=c_teeth)
        np.subtract(self._tmp, c_teeth, out=self.hole)
        np.clip(self.hole, 0.0, 1.0, out=self.hole)
        np.multiply(self.hole, self._c_teeth[..., 1], out=self.hole)
        np.copyto(map_view, s_u)
        np.copyto(self._c1, c_up)
        np.copyto(self._map2, s_u)
        self._c2.fill(0.0)
        self._rank(map_view, c_low, s_l)
        self._rank(map_view, c_teeth, s_t)

    def finish(self, out_view: np.ndarray) -> None:
        """Blend in the runner-up claimant and paint the interior where the lips part.

        `out_view` is the patch of the output frame, already remapped with the main map.
        """
        cv2.remap(self.image, self._map2, None, cv2.INTER_LINEAR, dst=self._second,
                  borderMode=cv2.BORDER_REPLICATE)
        # Runner-up share of the claimed coverage, then the hole's share of the pixel.
        np.add(self._c1, self._c2, out=self._tmp)
        np.maximum(self._tmp, _EPS, out=self._tmp)
        np.divide(self._c2, self._tmp, out=self._c2)
        self._pix[...] = out_view
        self._paint[...] = self._second
        np.subtract(self._paint, self._pix, out=self._paint)
        np.multiply(self._paint, self._c2[..., None], out=self._paint)
        np.add(self._pix, self._paint, out=self._pix)
        if self.hole.max() > 0.5 / 255.0:
            cv2.remap(self.patch.upper_texture, self._local["teeth"], None, cv2.INTER_LINEAR,
                      dst=self._tex_u, borderMode=cv2.BORDER_REPLICATE)
            cv2.remap(self.patch.lower_texture, self._local["lower"], None, cv2.INTER_LINEAR,
                      dst=self._tex_l, borderMode=cv2.BORDER_REPLICATE)
            np.subtract(1.0, self._tex_u[..., 3], out=self._tmp)
            np.multiply(self._tex_l, self._tmp[..., None], out=self._paint)
            np.add(self._paint, self._tex_u[..., :3], out=self._paint)
            # pix += hole·(paint − pix)
            np.subtract(self._paint, self._pix, out=self._paint)
            np.multiply(self._paint, self.hole[..., None], out=self._paint)
            np.add(self._pix, self._paint, out=self._pix)
        np.add(self._pix, 0.5, out=self._pix)
        np.copyto(out_view, self._pix, casting="unsafe")
