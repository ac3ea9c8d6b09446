"""What a parted mouth shows: a dark oral cavity, teeth with edges, a hint of tongue.

Painted once per actor, in the source coordinates of the mouth patch, as two textures:

- the upper teeth (carried by the skull): a row of incisors, canines and premolars hanging from
  the rest line of the upper inner lip, each its own rounded shape — so their biting edges
  scallop and the cavity shows in the notches between them — with a thin dark seam between
  neighbours, darker toward the corners (they recede into the mouth) and in the lip's shadow;
  gums above the lip line, seen when the upper lip lifts;
- the cavity (carried by the jaw): a dark, lip-tinted space, darkest under the teeth and at
  the corners; the front of the tongue as a low dome resting behind the lower lip, lit on its
  upper surface, with a faint groove; the tips of the lower incisors along the lower lip,
  shaded, behind which the tongue sits. With the jaw side under the teeth, a mouth opening a
  little shows teeth over darkness; opening wide it shows the tongue and lower teeth too.

Colours come from the actor: the cavity from its lips, far darker; teeth from its skin's
lightness, an ivory tinted by the skin; and everything is shaded across the mouth by the
portrait's own light (the face's brighter side lights that side of the mouth more).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stages.warp.mesh import anatomy as an
from stages.warp.mesh.regions import smoothstep

_LUMA = np.array([0.299, 0.587, 0.114])
# Upper teeth from the middle outwards: (right edge in units of the inner half width, visible
# length below the lip line × face height). Central incisors, laterals, canines, premolars.
UPPER_TEETH = ((0.34, 0.029), (0.60, 0.025), (0.80, 0.027), (0.93, 0.021), (1.05, 0.018))
LOWER_TEETH = ((0.22, 0.014), (0.42, 0.013), (0.60, 0.012))
"""Lower incisors and canines: (edge, how far their tips rise above the lower lip × face height)."""
TONGUE_RISE = 0.05
"""How far the tongue's dome rises above the lower inner lip at its middle (× face height)."""


@dataclass(frozen=True)
class MouthColours:
    """Colours sampled from the actor (RGB, 0–255 floats), and its light across the mouth."""

    lip: np.ndarray
    cavity: np.ndarray
    teeth: np.ndarray
    tongue: np.ndarray
    gum: np.ndarray
    light_slope: float  # relative brightening per unit of `across` (+: the image-right side is lit)

    @classmethod
    def sample(cls, image: np.ndarray, landmarks_px: np.ndarray) -> "MouthColours":
        """Median lip and skin colours → cavity, teeth, tongue and gum colours; the light's side."""
        lm = landmarks_px[:, :2]
        lips = _polygon_mask(image.shape, lm, an.LIP_OUTER_UPPER + an.LIP_OUTER_LOWER[::-1])
        lips &= ~_polygon_mask(image.shape, lm, an.LIP_INNER_UPPER + an.LIP_INNER_LOWER[::-1])
        face = _polygon_mask(image.shape, lm, an.FACE_OVAL)
        face_px = image[face].astype(np.float64)
        lip_px = image[lips].astype(np.float64)
        skin = np.median(face_px, axis=0) if len(face_px) else np.array([180.0, 150, 130])
        lip = np.median(lip_px, axis=0) if len(lip_px) >= 4 else skin * np.array([0.95, 0.7, 0.7])
        luma = max(float(skin @ _LUMA), 1.0)
        # A cavity takes almost no light: a little of the lips' hue, very dark.
        cavity = lip * 0.13 + np.array([5.0, 1.0, 1.0])
        tongue = np.clip(lip * np.array([0.9, 0.62, 0.66]) + np.array([12.0, 0.0, 0.0]), 0, 255)
        # Ivory about as light as the skin, warmed by it: teeth in the mouth's shade never glow
        # whiter than the picture's lit skin.
        target = float(np.clip(1.02 * luma, 70.0, 215.0))
        ivory = np.array([236.0, 228.0, 206.0])
        teeth = np.clip(0.55 * ivory * target / float(ivory @ _LUMA) + 0.45 * skin * target / luma, 0, 255)
        gum = np.clip(lip * 0.85 + np.array([12.0, 0.0, 0.0]), 0, 255)
        return cls(lip, cavity, teeth, tongue, gum, _light_slope(image, lm, face))


def _polygon_mask(shape: tuple[int, ...], points: np.ndarray, ids: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(points[list(ids)]).astype(np.int32)], 1)
    return mask.astype(bool)


def _light_slope(image: np.ndarray, lm: np.ndarray, face: np.ndarray) -> float:
    """How much brighter the face's image-right cheek is than its left, relative, clipped to ±0.35:
    the side the light comes from, which the mouth's inside follows."""
    luma = image.astype(np.float64) @ _LUMA
    mid_x = 0.5 * (lm[an.CHEEK_RIGHT, 0] + lm[an.CHEEK_LEFT, 0])
    ys, xs = np.nonzero(face)
    left, right = luma[ys[xs < mid_x], xs[xs < mid_x]], luma[ys[xs >= mid_x], xs[xs >= mid_x]]
    if len(left) < 16 or len(right) < 16:
        return 0.0
    l, r = float(np.median(left)), float(np.median(right))
    return float(np.clip((r - l) / max(l + r, 1.0), -0.35, 0.35))


def _row_of_teeth(across: np.ndarray, depth: np.ndarray, teeth: tuple[tuple[float, float], ...],
                  face_h: float, half_w: float) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and seam darkness of a row of teeth, mirrored about the middle.

    `depth` is how far (px) a point lies from the gum line toward the biting edges. Each tooth
    spans [previous edge, its edge] in |across| and reaches `length × face_h`, its biting
    corners rounded (radius a third of its width), so neighbours meet in small notches.
    Returns (alpha, seam) with seam 1 on the thin line between two neighbours.
    """
    a = np.abs(across)
    alpha = np.zeros_like(a)
    seam = np.zeros_like(a)
    lo = 0.0
    for hi, length in teeth:
        width_px = (hi - lo) * half_w
        centre = 0.5 * (lo + hi)
        x_px = np.abs(a - centre) * half_w  # from the tooth's middle
        radius = max(width_px / 3.0, 0.8)
        over = np.maximum(x_px - (0.5 * width_px - radius), 0.0) / radius  # into a rounded corner
        edge = length * face_h - radius * (1.0 - np.sqrt(np.clip(1.0 - over**2, 0.0, 1.0)))
        inside = np.clip(edge - depth + 0.5, 0.0, 1.0) * np.clip(0.5 * width_px - x_px + 0.5, 0.0, 1.0)
        alpha = np.maximum(alpha, inside)
        seam = np.maximum(seam, np.exp(-((a - lo) * half_w / 0.45) ** 2) * (lo > 0))
        lo = hi
    return alpha * (a < lo), seam


def paint_upper_teeth(uv: np.ndarray, mouth: an.MouthGeometry, face_h: float, colours: MouthColours,
                      own_teeth: bool) -> np.ndarray:
    """(h, w, 4) RGBA over the patch: the upper teeth and gums (alpha 0 elsewhere). With
    `own_teeth` (the actor's lips are parted at rest) only the gums: its own teeth stay."""
    u, v = uv[..., 0], uv[..., 1]
    half_w = max(0.5 * (mouth.inner_upper.u[-1] - mouth.inner_upper.u[0]), 2.0)
    across = (u - 0.5 * (mouth.inner_upper.u[-1] + mouth.inner_upper.u[0])) / half_w
    below_lip = v - mouth.inner_upper(u)
    alpha, seam = _row_of_teeth(across, below_lip, UPPER_TEETH, face_h, half_w)
    gum = smoothstep(0.5, -1.0, below_lip) * (np.abs(across) < 1.0)
    # Shade: teeth recede into the dark toward the corners, sit in the upper lip's shadow at the
    # top, go a little translucent at the biting edge; the portrait's light falls across them.
    shade = 1.0 - 0.62 * smoothstep(0.25, 1.0, np.abs(across))
    shade *= 0.62 + 0.38 * smoothstep(-0.004 * face_h, 0.018 * face_h, below_lip)
    shade *= 1.0 - 0.12 * smoothstep(0.019 * face_h, 0.029 * face_h, below_lip)
    shade *= 1.0 - 0.3 * seam
    shade *= np.clip(1.0 + colours.light_slope * across, 0.5, 1.5)
    rgb = colours.teeth * shade[..., None]
    rgb = rgb * (1.0 - gum[..., None]) + colours.gum * (0.6 + 0.4 * shade[..., None]) * gum[..., None]
    alpha = np.maximum(alpha * (0.0 if own_teeth else 1.0), gum)
    return np.concatenate([rgb, 255.0 * alpha[..., None]], -1)


def paint_cavity(uv: np.ndarray, mouth: an.MouthGeometry, face_h: float, colours: MouthColours) -> np.ndarray:
    """(h, w, 3) RGB over the patch: the dark cavity, the tongue's front and the lower teeth tips."""
    u, v = uv[..., 0], uv[..., 1]
    half_w = max(0.5 * (mouth.inner_lower.u[-1] - mouth.inner_lower.u[0]), 2.0)
    across = (u - 0.5 * (mouth.inner_lower.u[-1] + mouth.inner_lower.u[0])) / half_w
    above_lip = mouth.inner_lower(u) - v  # px above the lower inner lip's rest line
    light = np.clip(1.0 + colours.light_slope * across, 0.5, 1.5)[..., None]
    # Darkest deep in the mouth (up under the teeth) and toward the corners.
    depth = (1.0 - 0.45 * smoothstep(0.4, 1.0, np.abs(across))) * (
        1.0 - 0.4 * smoothstep(0.02 * face_h, 0.09 * face_h, above_lip))
    rgb = colours.cavity * depth[..., None] * light
    # The tongue: a dome over the middle of the jaw, lit on top, a groove down its middle.
    dome = TONGUE_RISE * face_h * np.sqrt(np.clip(1.0 - (across / 0.68) ** 2, 0.0, 1.0))
    tongue_a = np.clip(dome - above_lip + 0.5, 0.0, 1.0) * (dome > 0.5)
    top = smoothstep(-0.3 * TONGUE_RISE * face_h, 0.0, above_lip - dome)  # 1 near its upper surface
    t_shade = (0.68 + 0.32 * top) * (1.0 - 0.5 * smoothstep(0.2, 0.68, np.abs(across)))
    t_shade *= 1.0 - 0.18 * np.exp(-(across * half_w / 1.2) ** 2) * top
    tongue_rgb = colours.tongue * t_shade[..., None] * light
    rgb = rgb * (1.0 - tongue_a[..., None]) + tongue_rgb * tongue_a[..., None]
    # Lower incisors' tips just above the lower lip, in the shade of the upper teeth and lip.
    lower_a, seam = _row_of_teeth(across, above_lip, LOWER_TEETH, face_h, half_w)
    lower_a *= above_lip > -1.0
    l_shade = 0.62 * (1.0 - 0.5 * smoothstep(0.2, 0.6, np.abs(across))) * (1.0 - 0.45 * seam)
    teeth_rgb = colours.teeth * l_shade[..., None] * light
    return rgb * (1.0 - lower_a[..., None]) + teeth_rgb * lower_a[..., None]
