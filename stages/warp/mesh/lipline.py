"""Snap the inner lip lines to the picture when the actor's mouth is open.

The mesh's inner-lip points can sit a pixel or two off the real lip edge. With a closed mouth
that does not matter; with parted lips (a smile showing teeth) it does: a sliver of teeth
labelled "lip" would ride along with the lip as a white line. So, column by column along the
mouth, fit a one-step model (lip colour on the lip side, anything else on the other) to the
pixels near each landmark line and move the line to the best step, smoothly and only a little.
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.warp.mesh import anatomy as an

_MIN_GAP_PX = 2.0  # below this the mouth counts as closed and nothing is refined
_SEARCH = 0.022  # × face height, how far either way a line may move
_SAMPLES_PER_PX = 2
_LIP_BIAS_PX = 0.7


def _lab(image_rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image_rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _lip_colour_lab(lab: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
    lm = landmarks_px[:, :2]
    mask = np.zeros(lab.shape[:2], np.uint8)
    outer = np.concatenate([lm[list(an.LIP_OUTER_UPPER)], lm[list(an.LIP_OUTER_LOWER)][::-1]])
    inner = np.concatenate([lm[list(an.LIP_INNER_UPPER)], lm[list(an.LIP_INNER_LOWER)][::-1]])
    cv2.fillPoly(mask, [np.round(outer).astype(np.int32)], 1)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 0)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))  # keep clear of the uncertain edges
    px = lab[mask.astype(bool)]
    return np.median(px, axis=0) if len(px) >= 8 else None


def _lipness(lab: np.ndarray, lip_lab: np.ndarray) -> np.ndarray:
    # Lightness counts half: lips in shadow are still lips, teeth and mouth darkness are not.
    dist = np.linalg.norm((lab - lip_lab) * np.array([0.5, 1.0, 1.0]), axis=-1)
    return 1.0 / (1.0 + (dist / 12.0) ** 4)


def _best_steps(lipness: np.ndarray, lip_first: bool) -> np.ndarray:
    """Per column of (n_samples, n_cols) lip-likeness in [0, 1], the row index of the best step.

    lip_first: lip above the step (upper lip), else lip below it (lower lip).
    """
    lip = lipness if lip_first else lipness[::-1]
    other = 1.0 - lip
    n = lip.shape[0]
    # cost(b) = lip-coloured samples after b + other samples before b, for b in 0..n.
    before_other = np.concatenate([np.zeros((1, lip.shape[1])), np.cumsum(other, axis=0)])
    after_lip = lip.sum(0) - np.concatenate([np.zeros((1, lip.shape[1])), np.cumsum(lip, axis=0)])
    b = np.argmin(before_other + after_lip, axis=0).astype(np.float64)
    return b if lip_first else n - b


def refine_inner_lips(image: np.ndarray, landmarks_px: np.ndarray, frame: an.FaceFrame,
                      mouth: an.MouthGeometry) -> an.MouthGeometry:
    """The mouth geometry with its inner lip lines moved onto the picture's lip edges."""
    u_lo, u_hi = mouth.inner_upper.u[0], mouth.inner_upper.u[-1]
    if u_hi - u_lo < 6.0:
        return mouth
    us = np.arange(np.ceil(u_lo) + 1.0, u_hi - 1.0, 1.0)
    gap = mouth.rest_gap_px(us)
    if gap.max() < _MIN_GAP_PX:
        return mouth
    lab = _lab(image)
    lip_lab = _lip_colour_lab(lab, landmarks_px)
    if lip_lab is None:
        return mouth
    reach = _SEARCH * frame.face_h_px
    offsets = np.arange(-reach, reach + 1e-6, 1.0 / _SAMPLES_PER_PX)
    refined = {}
    for name, line, lip_first in (("upper", mouth.inner_upper, True), ("lower", mouth.inner_lower, False)):
        v = line(us)[None, :] + offsets[:, None]  # (samples, cols)
        uv = np.stack([np.broadcast_to(us, v.shape), v], -1)
        xy = (frame.origin_px + frame.to_image_vectors(uv)).astype(np.float32)
        samples = cv2.remap(lab, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        lipness = _lipness(samples, lip_lab)
        step = _best_steps(lipness, lip_first)
        # A step is a pixel boundary between samples; turn its index into a v offset.
        shift = offsets[0] + (step - 0.5) / _SAMPLES_PER_PX
        shift = cv2.medianBlur(shift.astype(np.float32)[None, :], 5)[0].astype(np.float64)
        shift = cv2.GaussianBlur(shift[None, :], (0, 0), 5.0, borderType=cv2.BORDER_REPLICATE)[0]
        # Err toward the lip: a sliver of lip left on the teeth reads as shadow, a sliver of
        # teeth carried by the lip reads as a white seam.
        shift += -_LIP_BIAS_PX if lip_first else _LIP_BIAS_PX
        # Only where the lips really part, fading out toward the corners.
        across = (us - 0.5 * (u_lo + u_hi)) / (0.5 * (u_hi - u_lo))
        trust = np.clip((gap - 1.0) / 3.0, 0.0, 1.0) * (1.0 - np.clip(np.abs(across), 0, 1) ** 4)
        refined[name] = line(us) + np.clip(shift, -reach, reach) * trust
    up = refined["upper"]
    lo = np.maximum(refined["lower"], up)
    ends_up = np.array([[mouth.inner_upper.u[0], mouth.inner_upper.v[0]],
                        [mouth.inner_upper.u[-1], mouth.inner_upper.v[-1]]])
    ends_lo = np.array([[mouth.inner_lower.u[0], mouth.inner_lower.v[0]],
                        [mouth.inner_lower.u[-1], mouth.inner_lower.v[-1]]])
    up_pts = np.concatenate([ends_up[:1], np.stack([us, up], -1), ends_up[1:]])
    lo_pts = np.concatenate([ends_lo[:1], np.stack([us, lo], -1), ends_lo[1:]])
    mid = np.concatenate([np.stack([mouth.slit.u[:1], mouth.slit.v[:1]], -1), 0.5 * (up_pts + lo_pts),
                          np.stack([mouth.slit.u[-1:], mouth.slit.v[-1:]], -1)])
    return an.MouthGeometry(an.Polyline(up_pts), an.Polyline(lo_pts), an.Polyline(mid),
                            mouth.outer_upper, mouth.outer_lower, mouth.half_w_px)
