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
        cavity = lip * 0.2 + np.array([6.0, 1.0, 1.0])
        tongue = np.clip(lip * 0.55 + np.array([16.0, 0.0, 2.0]), 0, 255)
        # Ivory a little brighter than the skin, warmed by it, so painted teeth sit in the
        # picture's own lighting instead of glowing white in a dim or tinted one.
        target = float(np.clip(1.2 * luma, 90.0, 235.0))
        ivory = np.array([236.0, 228.0, 206.0])
        teeth = 0.6 * ivory * target / (ivory @ np.array([0.299, 0.587, 0.114])) + 0.4 * skin * target / max(luma, 1.0)
        teeth = np.clip(teeth, 0, 255)
        gum = np.clip(lip * 0.85 + np.array([12.0, 0.0, 0.0]), 0, 255)
        return cls(lip, cavity, teeth, tongue, gum)


@dataclass(frozen=True)
class MouthPatch:
    """The mouth patch's grid, window rectangle, labels and interior textures (source space)."""

    grid: Grid
    inner_rect_uv: tuple[float, float, float, float]
    ramp_px: float
    # Source-space images, frame-sized (edge-extended outside the patch) so the layers' maps,
    # which hold frame coordinates, sample them directly. Each side's image is the actor's RGB
    # with that side's label as alpha, so one remap gives a side's colour and its claim.
    upper: np.ndarray  # (512, 512, 4) uint8: RGB·label + upper-side label (premultiplied)
    lower: np.ndarray  # (512, 512, 4) uint8: RGB·label + jaw-side label
    teeth: np.ndarray  # (512, 512, 4) uint8: RGB·label + teeth-side label (actor's parted lips)
    teeth_paint: np.ndarray  # (512, 512, 4) uint8: painted upper teeth RGB + their alpha
    cavity_paint: np.ndarray  # (512, 512, 4) uint8: tongue/cavity RGB + where the mouth may open
    feather: np.ndarray  # (h, w, 3) float32 over the patch: 0 at its border → 1 a few px in
    keep: np.ndarray  # (h, w, 3) float32: 1 − feather
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
        teeth_tex, lower_tex = _paint_interior(uv, mouth, face_h, colours)
        # The patch's maps and the face map agree at its border only up to their grids'
        # interpolation error; a short feather hides that seam.
        ys, xs = np.mgrid[0:grid.box.h, 0:grid.box.w]
        edge = np.minimum(np.minimum(xs, grid.box.w - 1 - xs), np.minimum(ys, grid.box.h - 1 - ys))
        feather = smoothstep(0.0, 2.0 * step + 4.0, edge.astype(np.float64)).astype(np.float32)
        b = grid.box

        def with_alpha(rgb: np.ndarray, alpha_patch: np.ndarray) -> np.ndarray:
            """Frame-sized premultiplied RGBA uint8: `rgb`·label, alpha = the label.

            Premultiplied, so bilinear sampling at a label's edge never pulls in the colour of
            the pixels beyond it (teeth into a lip edge, lip into the teeth).
            """
            pad = ((b.y0, rgb.shape[0] - b.y0 - b.h), (b.x0, rgb.shape[1] - b.x0 - b.w))
            alpha = np.pad(np.clip(alpha_patch, 0, 1), pad, mode="edge")[..., None]
            rgba = np.dstack([rgb * alpha, 255.0 * alpha])
            return np.ascontiguousarray(np.round(rgba).astype(np.uint8))

        def patch_to_frame(rgba_patch: np.ndarray) -> np.ndarray:
            """A patch-sized painted texture, edge-extended to frame size, as uint8."""
            pad = ((b.y0, image.shape[0] - b.y0 - b.h), (b.x0, image.shape[1] - b.x0 - b.w), (0, 0))
            return np.ascontiguousarray(np.pad(np.clip(np.round(rgba_patch), 0, 255), pad, mode="edge")
                                        .astype(np.uint8))

        return cls(grid, inner, ramp,
                   upper=with_alpha(image, (1.0 - below) * (1.0 - interior)),
                   lower=with_alpha(image, below * (1.0 - interior)),
                   teeth=with_alpha(image, interior),
                   teeth_paint=patch_to_frame(teeth_tex),
                   cavity_paint=patch_to_frame(np.dstack([lower_tex, 255.0 * may_open])),
                   feather=np.ascontiguousarray(np.repeat(feather[..., None], 3, axis=-1)),
                   keep=np.ascontiguousarray(np.repeat(1.0 - feather[..., None], 3, axis=-1)),
                   has_interior=bool(interior.max() > 0.0))


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
    teeth_h = 0.044 * face_h * (1.0 - 0.3 * np.clip(across, -1, 1) ** 2)
    below_lip = v - mouth.inner_upper(u)
    # When the actor's own lips part, its own teeth (or darkness) show and stay in front of the
    # painted interior; painted teeth would hang below them or beside them, so only gums remain.
    own_teeth = float(mouth.rest_gap_px(np.linspace(mouth.inner_upper.u[0], mouth.inner_upper.u[-1], 32)).max()
                      > max(2.0, 0.012 * face_h))
    gum = smoothstep(0.5, -1.0, below_lip)
    alpha = (np.clip(0.85 * inner_half_w - off_centre_px + 0.5, 0.0, 1.0)
             * np.clip(teeth_h - below_lip + 0.5, 0.0, 1.0) * np.maximum(1.0 - own_teeth, gum))
    shade = 1.0 - 0.5 * smoothstep(0.3, 0.85, np.abs(across))  # the mouth's sides are in shadow
    shade *= 0.72 + 0.28 * smoothstep(-0.01 * face_h, 0.3 * teeth_h, below_lip)  # under the lip
    shade *= 1.0 - 0.08 * smoothstep(0.75, 1.0, below_lip / teeth_h)  # translucent biting edge
    gaps = np.array([0.0, 0.22, -0.22, 0.4, -0.4, 0.56, -0.56, 0.7, -0.7])
    gap_dist_px = np.min(np.abs(across[..., None] - gaps), axis=-1) * inner_half_w
    shade *= 1.0 - 0.07 * np.exp(-(gap_dist_px / 0.7) ** 2) * smoothstep(0.2, 0.8, below_lip / teeth_h)
    teeth_rgb = colours.teeth * shade[..., None]
    # Above the rest line of the lip the teeth meet the gums, seen when the upper lip lifts.
    gum = gum[..., None]
    teeth_rgb = teeth_rgb * (1.0 - gum) + colours.gum * (0.85 + 0.15 * shade[..., None]) * gum
    upper = np.concatenate([teeth_rgb, 255.0 * alpha[..., None]], -1)

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
    return upper, rgb


class MouthCompositor:
    """Per-thread scratch for the mouth: the three sides' maps and claims, blended by colour.

    Along a boundary between two sides (the lips' meeting line, a lip edge over the teeth) the
    two sources can be far apart in the picture, so the sides are not merged by averaging map
    coordinates (that would sample whatever lies between them): each side is remapped on its
    own and the colours are mixed by the sides' claims, which also anti-aliases every edge.
    """

    def __init__(self, patch: MouthPatch, image: np.ndarray) -> None:
        self.patch = patch
        g = patch.grid
        # The lip layers stretch the lips (closing, pouting): more fixed-point steps there.
        self.upper = GridInverter(g, iterations=6)
        self.lower = GridInverter(g, iterations=6)
        self.teeth = GridInverter(g)
        h, w = g.box.h, g.box.w
        self._rgba = {k: np.empty((h, w, 4), np.uint8) for k in ("upper", "lower", "teeth", "paint", "cavity")}
        self._claim = {k: np.empty((h, w), np.float32) for k in self._rgba}
        self._label = {k: np.empty((h, w), np.float32) for k in ("lower", "teeth")}
        self._alpha_u8 = np.empty((h, w), np.uint8)
        self._free = np.empty((h, w), np.float32)
        self._weight = np.empty((h, w), np.float32)
        self.hole = np.empty((h, w), np.float32)
        self._w3 = np.empty((h, w, 3), np.float32)
        self._rgb = np.empty((h, w, 3), np.uint8)
        self._colour = np.empty((h, w, 3), np.float32)
        self._acc = np.empty((h, w, 3), np.float32)

    def _sample(self, name: str, source: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Remap a source-space RGBA image with map s; return its alpha as float in [0, 1]."""
        cv2.remap(source, s, None, cv2.INTER_LINEAR, dst=self._rgba[name], borderMode=cv2.BORDER_REPLICATE)
        claim = self._claim[name]
        cv2.extractChannel(self._rgba[name], 3, dst=self._alpha_u8)
        np.multiply(self._alpha_u8, np.float32(1.0 / 255.0), out=claim)
        return claim

    def _accumulate(self, rgba: np.ndarray, weight: np.ndarray) -> None:
        """acc += rgb(rgba) · weight (weight 1-channel float)."""
        cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB, dst=self._rgb)
        np.copyto(self._colour, self._rgb, casting="unsafe")
        cv2.merge([weight, weight, weight], dst=self._w3)
        cv2.accumulateProduct(self._colour, self._w3, self._acc)

    def render(self, upper_field: np.ndarray, lower_field: np.ndarray, teeth_field: np.ndarray,
               out_view: np.ndarray) -> None:
        """Overwrite `out_view` (the patch of the frame, holding the face layer) with the mouth."""
        p = self.patch
        s_u = self.upper.invert(upper_field)
        s_l = self.lower.invert(lower_field)
        c_up = self._sample("upper", p.upper, s_u)
        c_low = self._sample("lower", p.lower, s_l)
        np.copyto(self._label["lower"], c_low)
        # Claims in priority order: upper lip, then lower lip, then teeth, each taking at most
        # what the ones before it left; what is left after all three is the opened mouth.
        free = self._free
        np.subtract(1.0, c_up, out=free)
        np.minimum(c_low, free, out=c_low)
        np.subtract(free, c_low, out=free)
        s_t = None
        if p.has_interior:
            s_t = self.teeth.invert(teeth_field)
            c_teeth = self._sample("teeth", p.teeth, s_t)
            np.copyto(self._label["teeth"], c_teeth)
            np.minimum(c_teeth, free, out=c_teeth)
            np.subtract(free, c_teeth, out=free)
        np.clip(free, 0.0, 1.0, out=self.hole)
        opening = bool(self.hole.max() > 0.5 / 255.0)
        if opening:
            # Only between the mouth corners may nobody's claim become an opening; elsewhere the
            # shortfall is renormalised away below.
            np.multiply(self.hole, self._sample("cavity", p.cavity_paint, s_l), out=self.hole)
        # scale = feather / (claims + opening); out = face·(1 − feather) + Σ colour·claim·scale.
        np.subtract(1.0, free, out=self._weight)
        np.add(self._weight, self.hole, out=self._weight)
        np.maximum(self._weight, 1e-4, out=self._weight)
        np.divide(p.feather[..., 0], self._weight, out=self._free)  # free is now the scale
        scale = self._free
        np.copyto(self._colour, out_view, casting="unsafe")
        cv2.multiply(self._colour, p.keep, dst=self._acc)
        # Sides are premultiplied by their labels: a side's colour weight is the share of its
        # label it kept after the priorities (1 for the upper side), times the scale.
        self._accumulate(self._rgba["upper"], scale)
        sides = [("lower", c_low)] + ([("teeth", self._claim["teeth"])] if s_t is not None else [])
        for name, claim in sides:
            np.maximum(self._label[name], 1e-3, out=self._weight)
            np.divide(claim, self._weight, out=self._weight)
            np.multiply(self._weight, scale, out=self._weight)
            self._accumulate(self._rgba[name], self._weight)
        if opening:
            # The opening: painted upper teeth (riding on the teeth side: they hang from the
            # skull) over the tongue and cavity (riding on the jaw side).
            if s_t is None:
                s_t = self.teeth.invert(teeth_field)
            alpha = self._sample("paint", p.teeth_paint, s_t)
            np.multiply(self.hole, scale, out=self._weight)
            np.multiply(alpha, self._weight, out=alpha)
            np.subtract(self._weight, alpha, out=self._weight)
            self._accumulate(self._rgba["cavity"], self._weight)
            self._accumulate(self._rgba["paint"], alpha)
        cv2.convertScaleAbs(self._acc, dst=out_view)
