"""The eyelids: an upper-lid layer that slides down over the eye on a blink.

The eye itself (and everything else) follows the face layer. The upper lid — the skin from the
lash line up toward the brow — is a layer of its own: on a blink every column of it travels
down so that the lash line lands on the lower lid (a hair past it), the lash band moving as
one piece and the skin above stretching less and less up to the brow. Where that layer lands
it covers the eye, so a blink draws the lid down over a still iris instead of squashing it.

As it comes down the lid is repainted the way a shut lid looks: the skin above the lash line,
which an open eye keeps folded in the socket's shade, turns toward the lid's lit skin, and a soft
dark-brown lash line is drawn along the lid's edge wherever it has landed. Left in its shade the
shut lid is a dark band, and MediaPipe reads a dark band between two lash lines as an eye still
open (shut readings 0.15–0.26 of the eye width on the shared portraits, against ≈ 0.04–0.07 for
a real lid). The line is drawn in the frame from a distance field, not carried down with the
lid's stretched texture, which breaks a thin line into dashes (see _lash_profile).

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
_PAINT = 1.0  # how far a shut lid's skin is drawn toward the lid's lit skin colour
_PAINT_FADE = 0.5  # paint = travel share ** this: held up the lid, over its stretched streaks
_CORNER_PAINT = 0.3  # × eye width: the skin paint reaches this far past the corners
_SKIN_PERCENTILE = 67.0  # the lit skin: the median of the lid skin brighter than this percentile
_LASH = 1.0  # how far the lash line's core is drawn toward the lash colour
_LASH_LINE = 0.08  # × eye width: the lash line a shut lid shows (its thickness at mid-eye)
_LASH_CORNER = 0.05  # × eye width: the line runs this far past the eye's corners, fading
_LASH_CENTRE = 0.0  # the line's core: on the lid's edge…
_LASH_SPREAD = 0.6  # …with a Gaussian profile this many thicknesses wide (a soft line, no bar)
_LASH_LUMA = 0.35  # a lash line is at most this bright against the lit lid skin (dark brown, not black)
_LASH_REACH = 6.0  # the profile's argument is clipped here: exp(−36), nil


def _taper(eye: an.EyeGeometry, u: np.ndarray, widen: float = 0.0) -> np.ndarray:
    """1 across the middle of the eye, falling to 0 at its corners (and 0 beyond them); `widen`
    moves the corners outward by that share of the eye's width."""
    lo, hi = eye.u_range
    lo, hi = lo - widen * (hi - lo), hi + widen * (hi - lo)
    across = np.clip((u - 0.5 * (lo + hi)) / (0.5 * (hi - lo)), -1.0, 1.0)
    return np.where((u > lo) & (u < hi), 1.0 - across**4, 0.0)


def _lid_drop_px(eye: an.EyeGeometry, u: np.ndarray) -> np.ndarray:
    """How far the lash line at u travels for a full blink (0 beyond the eye corners)."""
    lo, hi = eye.u_range
    gap = np.maximum(eye.lower(u) - eye.margin(u), 0.0)
    return np.where((u > lo) & (u < hi), gap + _OVERSHOOT * eye.height_px * _taper(eye, u), 0.0)


def _lid_share(eye: an.EyeGeometry, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Share of the lash line's travel at (u, v): 1 at and below it, fading to 0 under the brow."""
    margin = eye.margin(u)
    reach = np.maximum(0.8 * (margin - eye.brow(u)), 0.6 * eye.height_px)
    return 1.0 - smoothstep(0.0, 1.0, (margin - v) / reach)


def _lid_paint(eye: an.EyeGeometry, u: np.ndarray, v: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(h, w) float32, source space: how far each upper-lid pixel is drawn, on a shut lid, toward
    the lid's lit skin — all of it down to the lid's edge (the lash line is drawn over it, in the
    frame: see _lash_profile), fading out under the brow."""
    weight = _PAINT * _lid_share(eye, u, v) ** _PAINT_FADE * _taper(eye, u, _CORNER_PAINT) * label
    return np.ascontiguousarray(weight, np.float32)


def _lash_band(eye: an.EyeGeometry, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(h, w) bool, source space: the open lid's lowest _LASH_LINE eye widths — its own lashes,
    whose darkest pixels give the shut lid's lash colour."""
    edge = eye.margin(u) - _LID_EDGE_LIFT * eye.height_px
    return (edge - v < _LASH_LINE * eye.width_px) & (_taper(eye, u) > 0.5)


def _lash_profile(eye: an.EyeGeometry, u: np.ndarray, v: np.ndarray, drop: np.ndarray,
                  blink: float) -> np.ndarray:
    """(h, w) float32, source space: how far above the lid's lower edge, as it lands at `blink`,
    each face-layer pixel lies — in lash-line thicknesses, offset and scaled into the argument of
    the line's Gaussian profile (a frame's line weight is exp(−profile²)), clipped to ±_LASH_REACH.

    The lash line is drawn in the frame from this distance rather than carried down with the
    lid's texture: the lid lands stretched, and a band one or two source pixels thick, resampled
    that way, breaks into dashes (and a thick one reads on MediaPipe as an eye still ajar). The
    distance is a smooth field, so it can be interpolated; the line fades at the corners by its
    strength (EyePatch.lash_strength) rather than thinning there (a thickness near 0 would jump).
    """
    edge = eye.margin(u) - _LID_EDGE_LIFT * eye.height_px
    landed = edge + blink * drop * _lid_share(eye, u, edge)
    dist = (landed - v) / (_LASH_LINE * eye.width_px)
    profile = (dist - _LASH_CENTRE) / (np.sqrt(2.0) * _LASH_SPREAD)
    return np.ascontiguousarray(np.clip(profile, -_LASH_REACH, _LASH_REACH), np.float32)


def _lid_colours(patch: "EyePatch", image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lit skin, lash) colours of one lid, float32 RGB.

    Lit skin: the median of the brightest third of the upper-lid skin above the lash band. Lash:
    the median of the darkest fifth of the lash band, no brighter than _LASH_LUMA of the skin
    (soft-painted lashes read as no line at all)."""
    rgb = image[patch.box.slices].reshape(-1, 3).astype(np.float32)
    label = patch.lid_label.reshape(-1) > 0.9
    band = patch.lash_band.reshape(-1)
    luma_w = np.array([0.299, 0.587, 0.114], np.float32)
    skin_px = rgb[label & ~band]
    lash_px = rgb[label & band]
    if len(skin_px) < 8:
        skin_px = rgb
    if len(lash_px) < 4:
        lash_px = skin_px
    skin_l, lash_l = skin_px @ luma_w, lash_px @ luma_w
    skin = np.median(skin_px[skin_l >= np.percentile(skin_l, _SKIN_PERCENTILE)], axis=0)
    lash = np.median(lash_px[lash_l <= np.percentile(lash_l, 20)], axis=0)
    lash *= min(1.0, _LASH_LUMA * float(skin @ luma_w) / max(float(lash @ luma_w), 1.0))
    return skin.astype(np.float32), lash.astype(np.float32)


@dataclass(frozen=True)
class EyePatch:
    """One eye's patch of the frame: lid label and precomputed backward lid shifts."""

    box: Box
    centre_px: np.ndarray  # (2,) the eye's centre in the source image (x, y)
    v_axis: np.ndarray  # (2,) float32, the face's downward direction in the image
    lid_label: np.ndarray  # (h, w) float32: 1 on upper-lid skin (source space)
    back_shift: np.ndarray  # (BLINK_LEVELS, h, w) float32: source = pixel − shift·v_axis
    paint: np.ndarray  # (h, w) float32: how far a shut lid turns to its lit skin (source space)
    lash_band: np.ndarray  # (h, w) bool: the open lid's own lash band (source space)
    lash_profile: np.ndarray  # (BLINK_LEVELS, h, w) float32: _lash_profile at each level
    lash_strength: np.ndarray  # (h, w) float32: the line's strength, fading past the eye's corners

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
        profile = np.stack([_lash_profile(eye, u, v, drop, k / (BLINK_LEVELS - 1)) for k in range(BLINK_LEVELS)])
        strength = np.ascontiguousarray(_taper(eye, u, _LASH_CORNER), np.float32)
        return cls(box, centre, frame.v_axis.astype(np.float32), np.ascontiguousarray(label, np.float32),
                   np.ascontiguousarray(shifts, np.float32), _lid_paint(eye, u, v, label),
                   _lash_band(eye, u, v), profile, strength)


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
        self._local_face = np.empty((h, w, 2), np.float32)  # the face layer's map, patch coordinates
        self._local = np.empty((h, w, 2), np.float32)  # the lid layer's
        self._lid_map = np.empty((h, w, 2), np.float32)
        self._claim = np.empty((h, w), np.float32)
        self._lid_rgb = np.empty((h, w, 3), np.uint8)
        self._pix = np.empty((h, w, 3), np.float32)
        self._diff = np.empty((h, w, 3), np.float32)
        # Premultiplied paint, source space: RGB·weight and the weight, remapped in one call.
        skin, self._lash_rgb = _lid_colours(patch, image)
        self._paint_src = np.ascontiguousarray(np.dstack([patch.paint[..., None] * skin, patch.paint]), np.float32)
        self._paint = np.empty((h, w, 4), np.float32)
        self._keep = np.empty((h, w, 1), np.float32)
        self._profile = np.empty((h, w), np.float32)
        self._profile_at = np.empty((h, w), np.float32)
        self._strength_at = np.empty((h, w), np.float32)

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
        np.subtract(face_map, self._origin, out=self._local_face)
        cv2.remap(self._shift, self._local_face, None, cv2.INTER_LINEAR, dst=self._shift_at,
                  borderMode=cv2.BORDER_REPLICATE)
        np.multiply(self._shift_at[..., None], p.v_axis, out=self._lid_map)
        np.subtract(face_map, self._lid_map, out=self._lid_map)
        np.subtract(self._lid_map, self._origin, out=self._local)
        cv2.remap(p.lid_label, self._local, None, cv2.INTER_LINEAR, dst=self._claim,
                  borderMode=cv2.BORDER_REPLICATE)
        cv2.remap(self.image, self._lid_map, None, cv2.INTER_LINEAR, dst=self._lid_rgb,
                  borderMode=cv2.BORDER_REPLICATE)
        # The shut lid: its skin turns to the lit colour and its edge to a lash line as it comes
        # down — lid = lid·(1 − b·weight) + b·(colour·weight).
        cv2.remap(self._paint_src, self._local, None, cv2.INTER_LINEAR, dst=self._paint,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        self._paint *= float(np.clip(blink, 0.0, 1.0))
        self._diff[...] = self._lid_rgb
        np.subtract(1.0, self._paint[..., 3:], out=self._keep)
        np.multiply(self._diff, self._keep, out=self._diff)
        np.add(self._diff, self._paint[..., :3], out=self._diff)
        # out += claim·(lid − out)
        self._pix[...] = out_view
        np.subtract(self._diff, self._pix, out=self._diff)
        np.multiply(self._diff, self._claim[..., None], out=self._diff)
        np.add(self._pix, self._diff, out=self._pix)
        self._draw_lash_line(k, f, float(np.clip(blink, 0.0, 1.0)))
        np.add(self._pix, 0.5, out=self._pix)
        np.copyto(out_view, self._pix, casting="unsafe")

    def _draw_lash_line(self, k: int, f: float, blink: float) -> None:
        """The lash line along the lid's edge where it lands at this blink (levels k, k + 1 mixed
        by f), over self._pix — after the lid is mixed in, so the soft line spans the seam
        between the lid and the lower lid under it. self._local_face holds the face layer's map."""
        p = self.patch
        cv2.addWeighted(p.lash_profile[k], 1.0 - f, p.lash_profile[k + 1], f, 0.0, dst=self._profile)
        cv2.remap(self._profile, self._local_face, None, cv2.INTER_LINEAR, dst=self._profile_at,
                  borderMode=cv2.BORDER_REPLICATE)
        cv2.remap(p.lash_strength, self._local_face, None, cv2.INTER_LINEAR, dst=self._strength_at,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)  # no line outside the patch
        # weight = blink·_LASH·strength·exp(−½((distance − centre)/spread)²) = …·exp(−profile²)
        w = self._profile_at
        cv2.multiply(w, w, dst=w, scale=-1.0)
        cv2.exp(w, w)
        cv2.multiply(w, self._strength_at, dst=w, scale=blink * _LASH)
        np.subtract(self._lash_rgb, self._pix, out=self._diff)
        np.multiply(self._diff, w[..., None], out=self._diff)
        np.add(self._pix, self._diff, out=self._pix)
