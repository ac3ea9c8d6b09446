"""The mouth: two lip layers that part, and a synthesised interior where they do.

Source pixels of the mouth patch are labelled upper side (upper lip and everything above the
lip line), jaw side (lower lip and below) or teeth side (whatever the actor's own parted lips
show). Each side follows its own smooth field: the upper and jaw sides their lips' motion, the
teeth side only the head's (upper teeth are fixed to the skull — when a lip corner drops it
covers them rather than bending them). For an output pixel q, side k claims q when its inverse
map s_k(q) lands in its own label; the upper side wins overlaps (pressed lips), the teeth side
sits behind both lips, and what nobody claims is the opened mouth — painted from two textures
built once per actor: upper teeth hanging from the rest line of the upper lip (carried by the
teeth side; left out when the actor shows its own teeth), and the tongue and dark cavity
resting on the lower lip (carried by the jaw side); interior.py paints them from the actor's
own colours and light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from stages.warp.mesh import anatomy as an
from stages.warp.mesh.field import Box, Grid, GridInverter, parts_around
from stages.warp.mesh.interior import MouthColours, paint_cavity, paint_upper_teeth
from stages.warp.mesh.regions import below_coverage, between_coverage, face_rect_box, smoothstep

LIP_ITERATIONS = 8
"""Damped fixed-point steps inverting each lip layer."""


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
    feather: np.ndarray  # (h, w) float32 over the patch: 0 at its border → 1 a few px in
    feather_px: float  # how many pixels the feather takes
    support_px: tuple[int, int, int, int]  # (x0, y0, x1, y1) in the patch where the mouth layers
    support_nodes: tuple[slice, slice]  # differ from the face layer (source space), and its nodes
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
        # When the actor's own lips part, its own teeth (or darkness) show and stay in front of
        # the painted interior; painted teeth would hang below or beside them, so only gums.
        own_teeth = bool(mouth.rest_gap_px(np.linspace(mouth.inner_upper.u[0], mouth.inner_upper.u[-1], 32)).max()
                         > max(2.0, 0.012 * face_h))
        teeth_tex = paint_upper_teeth(uv, mouth, face_h, colours, own_teeth)
        lower_tex = paint_cavity(uv, mouth, face_h, colours)
        # The patch's maps and the face map agree at its border only up to their grids'
        # interpolation error; a short feather hides that seam.
        feather_px = 2.0 * step + 4.0
        support, support_nodes = _support(frame, grid, inner, ramp)
        lips_rgb = _paint_out_teeth_specks(image, frame, mouth) if interior.max() > 0 else image
        b = grid.box
        return cls(grid, inner, ramp,
                   upper=_label_rgba(lips_rgb, (1.0 - below) * (1.0 - interior), b),
                   lower=_label_rgba(lips_rgb, below * (1.0 - interior), b),
                   teeth=_label_rgba(image, interior, b),
                   teeth_paint=_patch_to_frame(teeth_tex, b, image.shape),
                   cavity_paint=_patch_to_frame(np.dstack([lower_tex, 255.0 * may_open]), b, image.shape),
                   feather=_border_feather(b, feather_px), feather_px=feather_px, support_px=support,
                   support_nodes=support_nodes, has_interior=bool(interior.max() > 0.0))


def _border_feather(box: Box, feather_px: float) -> np.ndarray:
    """(h, w) float32 over the patch `box`: 0 on its border, rising to 1 `feather_px` in."""
    ys, xs = np.mgrid[0:box.h, 0:box.w]
    edge = np.minimum(np.minimum(xs, box.w - 1 - xs), np.minimum(ys, box.h - 1 - ys))
    return smoothstep(0.0, feather_px, edge.astype(np.float64)).astype(np.float32)


def _support(frame: an.FaceFrame, grid: Grid, inner: tuple[float, float, float, float],
             ramp: float) -> tuple[tuple[int, int, int, int], tuple[slice, slice]]:
    """Where the mouth layers can differ from the face layer (the window `inner` and its `ramp`):
    (x0, y0, x1, y1) in the patch, and the grid nodes (rows, columns) that cover it."""
    b, step = grid.box, grid.step
    sx0, sy0, sx1, sy1 = face_rect_box(frame, (inner[0] - ramp, inner[1] - ramp, inner[2] + ramp,
                                               inner[3] + ramp), 10**6)
    support = (int(max(np.floor(sx0) - b.x0, 0)), int(max(np.floor(sy0) - b.y0, 0)),
               int(min(np.ceil(sx1) - b.x0, b.w)), int(min(np.ceil(sy1) - b.y0, b.h)))
    ox, oy = grid.origin_px

    def nodes(lo: float, hi: float, origin: float) -> slice:
        return slice(max(int(np.floor((lo - origin) / step)), 0), int(np.ceil((hi - origin) / step)) + 1)

    return support, (nodes(support[1] + b.y0, support[3] + b.y0, oy), nodes(support[0] + b.x0, support[2] + b.x0, ox))


def _label_rgba(rgb: np.ndarray, alpha_patch: np.ndarray, box: Box) -> np.ndarray:
    """Frame-sized premultiplied RGBA uint8: `rgb`·label, alpha = the label (`alpha_patch` over
    the patch `box`, edge-extended beyond it).

    Premultiplied, so bilinear sampling at a label's edge never pulls in the colour of the pixels
    beyond it (teeth into a lip edge, lip into the teeth).
    """
    pad = ((box.y0, rgb.shape[0] - box.y0 - box.h), (box.x0, rgb.shape[1] - box.x0 - box.w))
    alpha = np.pad(np.clip(alpha_patch, 0, 1), pad, mode="edge")[..., None]
    rgba = np.dstack([rgb * alpha, 255.0 * alpha])
    return np.ascontiguousarray(np.round(rgba).astype(np.uint8))


def _patch_to_frame(rgba_patch: np.ndarray, box: Box, frame_shape: tuple[int, ...]) -> np.ndarray:
    """A texture painted over the patch `box`, edge-extended to the frame's size, as uint8."""
    pad = ((box.y0, frame_shape[0] - box.y0 - box.h), (box.x0, frame_shape[1] - box.x0 - box.w), (0, 0))
    return np.ascontiguousarray(np.pad(np.clip(np.round(rgba_patch), 0, 255), pad, mode="edge").astype(np.uint8))


def _paint_out_teeth_specks(image: np.ndarray, frame: an.FaceFrame, mouth: an.MouthGeometry) -> np.ndarray:
    """The actor image with white teeth specks on the lips' inner edges painted over with lip.

    A lip line fitted column by column still lets the tips of teeth poke a pixel or two into
    the lip side; carried along with a closing lip they would show as white specks on the
    lips' meeting line. Bright, colourless pixels in a thin band on the lip side of each inner
    edge are inpainted from the lip around them (only the lip layers see this copy; at rest
    the few repainted pixels are tooth tips that the lip then appears to cover).
    """
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    uv = frame.to_face(np.stack([xs, ys], -1).astype(np.float64))
    u, v = uv[..., 0], uv[..., 1]
    band = 0.03 * frame.face_h_px
    lo_u, hi_u = mouth.inner_upper.u[0], mouth.inner_upper.u[-1]
    on_lips = (u > lo_u) & (u < hi_u) & (v > mouth.outer_upper(u)) & (v < mouth.outer_lower(u))
    up_edge, lo_edge = mouth.inner_upper(u), mouth.inner_lower(u)
    near_edge = ((v > up_edge - band) & (v <= up_edge + 0.5)) | ((v >= lo_edge - 0.5) & (v < lo_edge + band))
    lip_lightness = float(np.median(lab[..., 0][on_lips & ~near_edge])) if (on_lips & ~near_edge).any() else 50.0
    teeth_like = (lab[..., 0] > lip_lightness + 8.0) & (chroma < 22.0)
    specks = (on_lips & near_edge & teeth_like).astype(np.uint8)
    if not specks.any():
        return image
    return cv2.inpaint(np.ascontiguousarray(image), specks, 3, cv2.INPAINT_TELEA)


def block_reach(patch: MouthPatch, upper: np.ndarray, lower: np.ndarray, teeth: np.ndarray,
                out: np.ndarray) -> None:
    """How far the mouth layers move their support this block: out[j] = (min dx, min dy, max dx,
    max dy) over the support's nodes of frame j's upper and lower (and, when the actor shows
    its own teeth, teeth) node fields, each (n, rows, cols, 2).

    One reduction per layer for the whole block: per frame the reductions over a few hundred
    nodes cost more in call overhead than in arithmetic.
    """
    sub = (slice(None),) + patch.support_nodes
    fields = (upper, lower) + ((teeth,) if patch.has_interior else ())
    out[:, :2] = np.inf
    out[:, 2:] = -np.inf
    for f in fields:
        # Row by row, then along the row: numpy reduces an outer axis with whole-row vector
        # steps, and a pair of axes of a strided view element by element (10× slower here).
        nodes = f[sub]
        np.minimum(out[:, :2], nodes.min(axis=1).min(axis=1), out=out[:, :2])
        np.maximum(out[:, 2:], nodes.max(axis=1).max(axis=1), out=out[:, 2:])


def _opaque_rim(patch: MouthPatch) -> tuple[tuple[int, int], tuple[int, int], int] | None:
    """Where `MouthCompositor._fade_in` is exactly 1: ((rows), (columns)) of the patch where
    its feather is 1, and how many pixels in from an active area's edge its ramp reaches 1 —
    or None when its float arithmetic does not give exactly 1 there (then nothing is skipped)."""
    f = patch.feather_px
    ramp = math.ceil(f)
    if np.multiply(np.array([min(ramp, f)], np.float32), 1.0 / f)[0] != 1.0:
        return None
    full = patch.feather == 1.0
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    if rows.size == 0:
        return None
    box = ((int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1))
    if not full[box[0][0]:box[0][1], box[1][0]:box[1][1]].all():
        return None
    return box[0], box[1], ramp


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
        # The lip layers stretch the skin by the lips (closing over a gap, pouting): damped
        # fixed-point steps, which converge there instead of oscillating.
        self.upper = GridInverter(g, iterations=LIP_ITERATIONS, relax=0.55)
        self.lower = GridInverter(g, iterations=LIP_ITERATIONS, relax=0.55)
        self.teeth = GridInverter(g)
        h, w = g.box.h, g.box.w
        self._rgba = {k: np.empty((h, w, 4), np.uint8) for k in ("upper", "lower", "teeth", "paint", "cavity")}
        self._claim = {k: np.empty((h, w), np.float32) for k in self._rgba}
        self._kept = {k: np.empty((h, w), np.float32) for k in ("lower", "teeth")}  # claims left them
        self._alpha_u8 = np.empty((h, w), np.uint8)
        self._free = np.empty((h, w), np.float32)
        self._weight = np.empty((h, w), np.float32)
        self._feather = np.empty((h, w), np.float32)
        self.hole = np.zeros((h, w), np.float32)
        self._w3 = np.empty((h, w, 3), np.float32)
        self._rgb = np.empty((h, w, 3), np.uint8)
        self._colour = np.empty((h, w, 3), np.float32)
        self._acc = np.empty((h, w, 3), np.float32)
        self._row_max = np.empty(h, np.float32)
        self._row_open = np.empty(h, bool)
        self._ramp_y = np.empty((h, 1), np.float32)
        self._ramp_x = np.empty((1, w), np.float32)
        self._ys = np.arange(h, dtype=np.float32)[:, None]
        self._xs = np.arange(w, dtype=np.float32)[None, :]
        self._opaque_rim = _opaque_rim(patch)
        # Per side: how many of the source image's rows up to each row hold a nonzero pixel.
        self._nonzero_rows = {k: np.concatenate([[0], np.cumsum(src.reshape(src.shape[0], -1).any(axis=1))])
                              for k, src in (("upper", patch.upper), ("lower", patch.lower), ("teeth", patch.teeth))}
        self._live: dict[str, tuple[slice, slice]] = {}

    def active_area(self, reach: np.ndarray) -> tuple[slice, slice]:
        """Patch rows and columns the mouth layers can reach this frame (plus a feather), from
        the frame's row of `block_reach`: what `render` is to be given."""
        p = self.patch
        x0, y0, x1, y1 = p.support_px
        pad = p.feather_px + 2.0
        h, w = self.hole.shape
        lo_x, lo_y, hi_x, hi_y = (float(v) for v in reach)
        # Python's floor/ceil on floats: numpy's on one number cost more than the arithmetic.
        rows = slice(min(max(math.floor(y0 + lo_y - pad), 0), h), min(max(math.ceil(y1 + hi_y + pad), 0), h))
        cols = slice(min(max(math.floor(x0 + lo_x - pad), 0), w), min(max(math.ceil(x1 + hi_x + pad), 0), w))
        return rows, cols

    def opaque_part(self, area: tuple[slice, slice]) -> tuple[slice, slice] | None:
        """Patch rows and columns inside `area` where `render` fades the face layer out
        entirely (its fade is exactly 1, see `_fade_in`): there the mouth does not read what
        the face layer drew, so the face layer need not draw it. None where there is none."""
        if self._opaque_rim is None:
            return None
        (fr0, fr1), (fc0, fc1), ramp = self._opaque_rim
        rows = slice(max(area[0].start + ramp, fr0), min(area[0].stop - ramp, fr1))
        cols = slice(max(area[1].start + ramp, fc0), min(area[1].stop - ramp, fc1))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return None
        return rows, cols

    def _fade_in(self, area: tuple[slice, slice], opaque: tuple[slice, slice] | None) -> np.ndarray:
        """The patch feather times a ramp in from the edges of this frame's active area (1 on
        its `opaque_part`, what the product gives there, without multiplying it out)."""
        rows, cols = area
        f, fp = self.patch.feather_px, self._feather[area]
        ry, rx = self._ramp_y[rows], self._ramp_x[:, cols]
        # ramp = clip(min(d_first, d_last) / feather, 0, 1), 0 on the area's edge rows/columns
        np.minimum(self._ys[rows] - rows.start, rows.stop - 1 - self._ys[rows], out=ry)
        np.minimum(self._xs[:, cols] - cols.start, cols.stop - 1 - self._xs[:, cols], out=rx)
        np.clip(ry, 0, f, out=ry)
        np.clip(rx, 0, f, out=rx)
        np.multiply(ry, 1.0 / f, out=ry)
        np.multiply(rx, 1.0 / f, out=rx)
        if opaque is not None:
            self._feather[opaque] = 1.0
        for r, c in parts_around(rows, cols, opaque):
            np.multiply(self.patch.feather[r, c], self._ramp_y[r], out=self._feather[r, c])
            np.multiply(self._feather[r, c], self._ramp_x[:, c], out=self._feather[r, c])
        return fp

    def _sample(self, name: str, source: np.ndarray, s: np.ndarray, area: tuple[slice, slice]) -> np.ndarray:
        """Remap a source-space RGBA image with map s over `area`; return its alpha in [0, 1]."""
        if area[0].start < area[0].stop:
            rgba, claim, alpha = self._rgba[name][area], self._claim[name][area], self._alpha_u8[area]
            cv2.remap(source, s[area], None, cv2.INTER_LINEAR, dst=rgba, borderMode=cv2.BORDER_REPLICATE)
            cv2.extractChannel(rgba, 3, dst=alpha)
            np.multiply(alpha, np.float32(1.0 / 255.0), out=claim)
        return self._claim[name][area]

    def _sample_side(self, name: str, source: np.ndarray, inverter: GridInverter, field: np.ndarray,
                     area: tuple[slice, slice]) -> np.ndarray:
        """A lip or teeth side: its `field` inverted over `area`, but upsampled and remapped only on
        the side's live rows (`_live_rows`, kept in self._live); the rest are zero, as the remap
        gives. Returns its alpha in [0, 1] over `area`."""
        inverter.invert(field, area, upsample=False)
        live = (self._live_rows(name, inverter, area), area[1])
        self._live[name] = live
        for dead in (slice(area[0].start, live[0].start), slice(live[0].stop, area[0].stop)):
            self._rgba[name][dead, area[1]] = 0
            self._claim[name][dead, area[1]] = 0.0
        if live[0].start < live[0].stop:
            self._sample(name, source, inverter.upsample(live), live)
        return self._claim[name][area]

    def _live_rows(self, name: str, inverter: GridInverter, area: tuple[slice, slice]) -> slice:
        """The rows of `area` where side `name`'s remap can be nonzero. Outside them every source
        row it could read (its map's rows' bounds, GridInverter.rows_reached, a row more for
        the bilinear and the map's 1/32 px rounding) is all zero in the side's image, and so
        is the remap: the lip sides are empty beyond the lip line, the teeth side but for a
        few rows."""
        lo, hi = inverter.rows_reached(area)
        cum = self._nonzero_rows[name]
        top = len(cum) - 2
        first = np.clip(np.floor(lo).astype(np.intp) - 1, 0, top)
        last = np.clip(np.floor(hi).astype(np.intp) + 2, 0, top)
        live = cum[last + 1] > cum[first]
        k0 = int(np.argmax(live))
        if not live[k0]:
            return slice(area[0].start, area[0].start)
        return slice(area[0].start + k0, area[0].start + len(live) - int(np.argmax(live[::-1])))

    def _accumulate(self, rgba: np.ndarray, weight: np.ndarray, area: tuple[slice, slice]) -> None:
        """acc += rgb · weight over `area` (rgba and weight patch-sized; nothing when empty)."""
        if area[0].start >= area[0].stop:
            return
        rgb, colour, w3 = self._rgb[area], self._colour[area], self._w3[area]
        cv2.cvtColor(rgba[area], cv2.COLOR_RGBA2RGB, dst=rgb)
        np.copyto(colour, rgb, casting="unsafe")
        w = weight[area]
        cv2.merge([w, w, w], dst=w3)
        cv2.accumulateProduct(colour, w3, self._acc[area])

    def _open_rows(self, area: tuple[slice, slice]) -> tuple[slice, slice] | None:
        """The part of `area` whose rows hold the mouth opening, or None when it is shut."""
        rows, cols = area
        row_max, row_open = self._row_max[rows], self._row_open[rows]
        np.max(self.hole[area], axis=1, out=row_max)
        np.greater(row_max, 0.5 / 255.0, out=row_open)
        first = int(np.argmax(row_open))
        if not row_open[first]:
            return None
        last = len(row_open) - int(np.argmax(row_open[::-1]))
        return slice(rows.start + first, rows.start + last), cols

    def render(self, upper_field: np.ndarray, lower_field: np.ndarray, teeth_field: np.ndarray,
               area: tuple[slice, slice], out_view: np.ndarray) -> None:
        """Draw the mouth into `out_view` (the patch of the frame, holding the face layer but
        for `opaque_part(area)`, which it need not hold).

        Only `area` (this frame's `active_area`) is touched; elsewhere in the patch the mouth
        layers coincide with the face layer.
        """
        if area[0].start >= area[0].stop or area[1].start >= area[1].stop:
            return
        self._claim_sides(area, upper_field, lower_field, teeth_field)
        with_teeth = self.patch.has_interior
        opening = self._open_rows(area)
        if opening is not None:
            # Only between the mouth corners may nobody's claim become an opening; elsewhere the
            # shortfall is renormalised away below. (The sides' maps were made on their live
            # rows only: the opening's are made here.)
            may_open = self._sample("cavity", self.patch.cavity_paint, self._side_map("lower", opening), opening)
            np.multiply(self.hole[opening], may_open, out=self.hole[opening])
        scale = self._blend_sides(area, out_view, with_teeth)
        if opening is not None:
            s_t = self._side_map("teeth", opening) if with_teeth else self.teeth.invert(teeth_field, opening)
            self._paint_opening(opening, scale, s_t)
        cv2.convertScaleAbs(self._acc[area], dst=out_view[area])

    def _side_map(self, name: str, part: tuple[slice, slice]) -> np.ndarray:
        """Side `name`'s map (its inverter's fine), made over `part` too if its live rows, the
        only ones `_sample` made, leave some of `part`'s out."""
        inverter, live = getattr(self, name), self._live[name][0]
        if live.start <= part[0].start and part[0].stop <= live.stop:
            return inverter.fine
        return inverter.upsample(part)

    def _claim_sides(self, area: tuple[slice, slice], upper_field: np.ndarray, lower_field: np.ndarray,
                     teeth_field: np.ndarray) -> None:
        """Each side's claim over `area`, in priority order: upper lip, then lower lip, then teeth,
        each taking at most what the ones before it left; what is left after all three (in
        `self.hole`, and in `self._free`) is the opened mouth. The kept claims of the jaw and teeth
        sides go to self._kept; the teeth side only when the actor shows teeth of its own."""
        p = self.patch
        c_up = self._sample_side("upper", p.upper, self.upper, upper_field, area)
        label_low = self._sample_side("lower", p.lower, self.lower, lower_field, area)
        free, hole, c_low = self._free[area], self.hole[area], self._kept["lower"][area]
        np.subtract(1.0, c_up, out=free)
        np.minimum(label_low, free, out=c_low)
        np.subtract(free, c_low, out=free)
        if p.has_interior:
            c_teeth = self._kept["teeth"][area]
            np.minimum(self._sample_side("teeth", p.teeth, self.teeth, teeth_field, area), free, out=c_teeth)
            np.subtract(free, c_teeth, out=free)
        # Each claim takes at most what is left (and labels lie in [0, 1]), so `free` stays in
        # [0, 1]: the hole is `free` as it is.
        np.copyto(hole, free)

    def _blend_sides(self, area: tuple[slice, slice], out_view: np.ndarray, with_teeth: bool) -> np.ndarray:
        """Start `self._acc` over `area` as the face layer times (1 − feather) and add each side's
        colour by its claim; returns the patch-sized scale, feather / (claims + opening)."""
        free, hole, weight = self._free[area], self.hole[area], self._weight[area]
        np.subtract(1.0, free, out=weight)
        np.add(weight, hole, out=weight)
        np.maximum(weight, 1e-4, out=weight)
        opaque = self.opaque_part(area)
        fade = self._fade_in(area, opaque)
        np.divide(fade, weight, out=free)  # free is now the scale
        scale = self._free
        # The face layer, by 1 − fade: nothing on the opaque part (colour · 0 is 0 there).
        if opaque is not None:
            self._acc[opaque] = 0.0
        for part in parts_around(area[0], area[1], opaque):
            colour, weight, w3 = self._colour[part], self._weight[part], self._w3[part]
            np.copyto(colour, out_view[part], casting="unsafe")
            np.subtract(1.0, self._feather[part], out=weight)
            cv2.merge([weight, weight, weight], dst=w3)
            cv2.multiply(colour, w3, dst=self._acc[part])
        # Sides are premultiplied by their labels: a side's colour weight is the share of its
        # label it kept after the priorities (1 for the upper side), times the scale. Only on
        # its live rows: elsewhere its colour is zero and would add nothing.
        self._accumulate(self._rgba["upper"], scale, self._live["upper"])
        for name in ("lower", "teeth") if with_teeth else ("lower",):
            live = self._live[name]
            weight = self._weight[live]
            np.maximum(self._claim[name][live], 1e-3, out=weight)
            np.divide(self._kept[name][live], weight, out=weight)
            np.multiply(weight, scale[live], out=weight)
            self._accumulate(self._rgba[name], self._weight, live)
        return scale

    def _paint_opening(self, opening: tuple[slice, slice], scale: np.ndarray, s_t: np.ndarray) -> None:
        """Add the opening to `self._acc`, only on its rows: painted upper teeth (riding on the
        teeth side's map `s_t`: they hang from the skull) over the tongue and cavity (riding on
        the jaw side, sampled by `render`)."""
        alpha = self._sample("paint", self.patch.teeth_paint, s_t, opening)
        weight = self._weight[opening]
        np.multiply(self.hole[opening], scale[opening], out=weight)
        np.multiply(alpha, weight, out=alpha)
        np.subtract(weight, alpha, out=weight)
        self._accumulate(self._rgba["cavity"], self._weight, opening)
        self._accumulate(self._rgba["paint"], self._claim["paint"], opening)
