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
    # Labels and textures are frame-sized (edge-extended outside the patch), in source space.
    labels_upper: np.ndarray  # (512, 512) float32: upper-side label
    labels_lower: np.ndarray  # (512, 512) float32: jaw-side label
    labels_teeth: np.ndarray  # (512, 512, 2) float32: teeth-side label, where the mouth may open
    upper_texture: np.ndarray  # (512, 512, 4) float32: premultiplied RGB + alpha, upper teeth
    lower_texture: np.ndarray  # (512, 512, 3) float32: tongue and cavity — opaque
    feather: np.ndarray  # (h, w) float32 over the patch: 0 at its border → 1 a few pixels in
    has_interior: bool  # the actor's own lips are parted (its teeth side is not empty)

    @classmethod
    def build(cls, image: np.ndarray, landmarks_px: np.ndarray, frame: an.FaceFrame,
              mouth: an.MouthGeometry, roi: Box, step: int, max_drop_px: float) -> "MouthPatch":
        """Lay the patch out around the lips and paint its labels and textures."""
        face_h, mw = frame.face_h_px, frame.mouth_w_px
        uv_lips = frame.to_face(landmarks_px[list(an.LIPS), :2])
        inner = (uv_lips[:, 0].min() - 0.2 * mw, uv_lips[:, 1].min() - 0.04 * face_h,
                 uv_lips[:, 0].max() + 0.2 * mw, uv_lips[:, 1].max() + 0.06 * face_h)
        ramp = 0.08 * face_h
        # Room for the layers' motion past the window: the jaw drops far, the rest moves little.
        side, top, bottom = ramp + 0.12 * mw + 2.0, ramp + 0.03 * face_h + 2.0, ramp + 1.2 * max_drop_px + 2.0
        outer = (inner[0] - side, inner[1] - top, inner[2] + side, inner[3] + bottom)
        grid = Grid.covering(*face_rect_box(frame, outer, 10**6), step=step, within=roi)
        uv = frame.to_face(grid.box.pixel_centres())
        below = below_coverage(uv, mouth.slit, widen=0.6)
        interior = between_coverage(uv, mouth.inner_upper, mouth.inner_lower)
        # The mouth opens only between its corners; past them a shortfall of claims is just the
        # two sides' fields differing a little, and is renormalised away, never painted dark.
        may_open = 1.0 - smoothstep(-0.08 * mouth.half_w_px, 0.02 * mouth.half_w_px,
                                    mouth.slit.signed_overhang(uv[..., 0]))
        colours = MouthColours.sample(image, landmarks_px)
        upper_tex, lower_tex = _paint_interior(uv, mouth, face_h, colours)
        # The patch's maps and the face map agree at its border only up to their grids'
        # interpolation error; a short feather hides that seam.
        ys, xs = np.mgrid[0:grid.box.h, 0:grid.box.w]
        edge = np.minimum(np.minimum(xs, grid.box.w - 1 - xs), np.minimum(ys, grid.box.h - 1 - ys))
        feather = smoothstep(0.0, 2.0 * step + 4.0, edge.astype(np.float64))

        def frame_sized(a: np.ndarray) -> np.ndarray:
            # Maps hold frame coordinates; labels sized like the frame need no offset per frame.
            b = grid.box
            pad = ((b.y0, image.shape[0] - b.y0 - b.h), (b.x0, image.shape[1] - b.x0 - b.w))
            pad += ((0, 0),) * (a.ndim - 2)
            return np.ascontiguousarray(np.pad(a, pad, mode="edge"), dtype=np.float32)

        return cls(grid, inner, ramp,
                   frame_sized((1.0 - below) * (1.0 - interior)), frame_sized(below * (1.0 - interior)),
                   frame_sized(np.stack([interior, may_open], -1)), frame_sized(upper_tex),
                   frame_sized(lower_tex), np.ascontiguousarray(feather, dtype=np.float32),
                   bool(interior.max() > 0.0))


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
    """Per-thread scratch for the mouth: the three sides' maps and claims, blended by colour.

    Along a boundary between two sides (the lips' meeting line, a lip edge over the teeth) the
    two sources can be far apart in the picture, so the sides are not merged by averaging map
    coordinates (that would sample whatever lies between them): each side is remapped on its
    own and the colours are mixed by the sides' claims, which also anti-aliases every edge.
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
        f32 = lambda *shape: np.empty((h, w) + shape, np.float32)  # noqa: E731
        self._c_up, self._c_low, self._c_teeth = f32(), f32(), f32(2)
        self._free, self._scale, self.hole = f32(), f32(), f32()
        self._rgb = {k: np.empty((h, w, 3), np.uint8) for k in ("upper", "lower", "teeth")}
        self._tex_u, self._tex_l = f32(4), f32(3)
        self._acc, self._term = f32(3), f32(3)

    def render(self, upper_field: np.ndarray, lower_field: np.ndarray, teeth_field: np.ndarray,
               out_view: np.ndarray) -> None:
        """Overwrite `out_view` (the patch of the frame, holding the face layer) with the mouth."""
        p = self.patch
        remap = cv2.remap
        s_u = self.upper.invert(upper_field)
        s_l = self.lower.invert(lower_field)
        remap(p.labels_upper, s_u, None, cv2.INTER_LINEAR, dst=self._c_up, borderMode=cv2.BORDER_REPLICATE)
        remap(p.labels_lower, s_l, None, cv2.INTER_LINEAR, dst=self._c_low, borderMode=cv2.BORDER_REPLICATE)
        c_up, c_low = self._c_up, self._c_low
        # Claims in priority order: upper lip, then lower lip, then teeth, each taking at most
        # what the ones before it left; what is left after all three is the opened mouth.
        np.subtract(1.0, c_up, out=self._free)
        np.minimum(c_low, self._free, out=c_low)
        np.subtract(self._free, c_low, out=self._free)
        s_t = None
        if p.has_interior:
            s_t = self.teeth.invert(teeth_field)
            remap(p.labels_teeth, s_t, None, cv2.INTER_LINEAR, dst=self._c_teeth,
                  borderMode=cv2.BORDER_REPLICATE)
            c_teeth = self._c_teeth[..., 0]
            np.minimum(c_teeth, self._free, out=c_teeth)
            np.subtract(self._free, c_teeth, out=self._free)
        else:
            # No parted lips in the picture: the teeth side is empty, and the opening test
            # only needs the teeth side's "may open" label, read at the lower side's map.
            remap(p.labels_teeth, s_l, None, cv2.INTER_LINEAR, dst=self._c_teeth,
                  borderMode=cv2.BORDER_REPLICATE)
        np.clip(self._free, 0.0, 1.0, out=self._free)
        np.multiply(self._free, self._c_teeth[..., 1], out=self.hole)
        # scale = feather / (claims + hole): renormalises where the opening is not allowed.
        np.subtract(1.0, self._free, out=self._scale)
        np.add(self._scale, self.hole, out=self._scale)
        np.maximum(self._scale, 1e-4, out=self._scale)
        np.divide(p.feather, self._scale, out=self._scale)
        # acc = face·(1 − feather) + Σ side colour · claim · scale
        np.subtract(1.0, p.feather, out=self._free)
        np.multiply(out_view, self._free[..., None], out=self._acc)
        sides = [("upper", s_u, c_up), ("lower", s_l, c_low)]
        if p.has_interior:
            sides.append(("teeth", s_t, self._c_teeth[..., 0]))
        for name, s, c in sides:
            remap(self.image, s, None, cv2.INTER_LINEAR, dst=self._rgb[name], borderMode=cv2.BORDER_REPLICATE)
            np.multiply(c, self._scale, out=self._free)
            np.multiply(self._rgb[name], self._free[..., None], out=self._term)
            np.add(self._acc, self._term, out=self._acc)
        if self.hole.max() > 0.5 / 255.0:
            # Painted upper teeth hang from the skull: they ride on the teeth side's map.
            self._paint(s_t if s_t is not None else self.teeth.invert(teeth_field), s_l)
            np.multiply(self.hole, self._scale, out=self._free)
            np.multiply(self._term, self._free[..., None], out=self._term)
            np.add(self._acc, self._term, out=self._acc)
        np.add(self._acc, 0.5, out=self._acc)
        np.copyto(out_view, self._acc, casting="unsafe")

    def _paint(self, s_teeth: np.ndarray, s_lower: np.ndarray) -> None:
        """The synthesised interior into self._term: upper teeth over tongue and cavity."""
        p = self.patch
        cv2.remap(p.upper_texture, s_teeth, None, cv2.INTER_LINEAR, dst=self._tex_u,
                  borderMode=cv2.BORDER_REPLICATE)
        cv2.remap(p.lower_texture, s_lower, None, cv2.INTER_LINEAR, dst=self._tex_l,
                  borderMode=cv2.BORDER_REPLICATE)
        np.subtract(1.0, self._tex_u[..., 3], out=self._free)
        np.multiply(self._tex_l, self._free[..., None], out=self._term)
        np.add(self._term, self._tex_u[..., :3], out=self._term)
