"""The face crop LivePortrait sees, and pasting its 512² output back into the actor's frame.

LivePortrait works on a 256² crop in which the face is centred and fills about 1/2.3 of the side
(the official cropper: scale 2.3, centre moved up by 0.125 face sizes so the crop holds more hair
than neck). Here the crop is a similarity transform (rotation levels the eyes) computed from the
actor's MediaPipe landmarks:
- face size = the larger side of the landmark box from the brows' upper edge to the chin and from
  cheek to cheek, measured with the eyes levelled. This is what the official 203-point landmarks
  span (they have no forehead points, MediaPipe's mesh does, hence the brow cut-off);
- crop side = 2.3 × face size, centred on that box and moved up by 0.125 × face size.
On the actor frames of stages.image.crop (92 px between the eyes) the face measures ≈ 200 px, so
the crop spans ≈ 460 px of the 512² frame.

G renders the crop at 512² (2× the crop). Pasting back samples that image for every frame pixel
through the inverse transform and blends it over the untouched actor frame with a feathered
rounded-square mask, so pixels outside the mask keep their exact original values.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as nnf

from stages.errors import StageInputError
from stages.types import FRAME_SIZE_PX

CROP_SIZE_PX = 256
"""F and M take a 256² crop."""
OUTPUT_SIZE_PX = 512
"""G renders the crop at twice its size."""
CROP_SCALE = 2.3
"""Crop side / face size: the official cropper's default scale."""
CROP_SHIFT_UP = 0.125
"""The crop centre sits this many face sizes above the face box centre (official vy_ratio −0.125)."""

N_MESH = 468
"""Face-mesh points proper; the 10 iris points after them do not bound the face."""
_EYE_CORNERS = ((33, 133), (362, 263))  # image-left eye (outer, inner), image-right eye (inner, outer)
_BROW_UPPER = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
"""MediaPipe's upper eyebrow contours: the face box starts at their highest point."""

MASK_INNER = 0.80
MASK_OUTER = 0.96
"""Mask = 1 inside the rounded square of 'radius' MASK_INNER (crop half-sides), 0 beyond
MASK_OUTER, smoothstep between: the regenerated crop border (blurred background, cut-off
shoulders) never shows, and the seam spreads over ≈ 7 % of the crop side."""
MASK_ROUNDNESS = 4.0
"""Superellipse exponent of the mask outline: 2 is a disc, ∞ a square; 4 keeps the corners
(where G sees only background) outside the mask."""
_AA_SIGMA_PER_SHRINK = 0.4
"""Gaussian σ (output px) per unit of shrink before resampling the frame into the crop."""


@dataclass(frozen=True)
class FaceCrop:
    """A similarity transform between the actor frame and LivePortrait's 256² crop."""

    matrix: np.ndarray  # (2, 3) float64: frame px → crop px (pixel centres at integers)
    face_size_px: float  # face size in frame pixels
    roll_deg: float  # rotation that levelled the eyes (image clockwise positive)

    @property
    def side_px(self) -> float:
        """Side of the crop in frame pixels."""
        return CROP_SCALE * self.face_size_px

    def inverse(self) -> np.ndarray:
        """(2, 3): crop px → frame px."""
        return cv2.invertAffineTransform(self.matrix)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The (256, 256, 3) uint8 crop of a frame (edges replicated where the crop leaves it)."""
        shrink = self.side_px / CROP_SIZE_PX
        src = image
        if shrink > 1.0:
            # warpAffine has no area filter: low-pass first so the shrink does not alias.
            src = cv2.GaussianBlur(image, (0, 0), _AA_SIGMA_PER_SHRINK * shrink)
        return cv2.warpAffine(src, self.matrix, (CROP_SIZE_PX, CROP_SIZE_PX), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def shift_to_keypoints(self) -> np.ndarray:
        """(2, 2) matrix: a frame-pixel shift (dx, dy) → keypoint units (the crop spans [−1, 1])."""
        return self.matrix[:, :2] * (2.0 / CROP_SIZE_PX)


def _eye_centres(landmarks_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lm = landmarks_px[:, :2]
    return tuple(0.5 * (lm[a] + lm[b]) for a, b in _EYE_CORNERS)  # type: ignore[return-value]


def face_crop(landmarks_px: np.ndarray, field: str = "actor.landmarks_px") -> FaceCrop:
    """The LivePortrait crop of a face from its (478, 3) MediaPipe landmarks in frame pixels."""
    lm = np.asarray(landmarks_px, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < N_MESH or lm.shape[1] < 2 or not np.isfinite(lm[:N_MESH, :2]).all():
        raise StageInputError(field, "expected (478, 3) finite face-mesh landmarks", shape=tuple(lm.shape))
    left, right = _eye_centres(lm)
    dx, dy = right - left
    roll = np.arctan2(dy, dx)
    if np.hypot(dx, dy) < 1.0:
        raise StageInputError(field, "the eyes coincide: the landmarks do not describe a face")
    # Level the eyes: rotate the points by −roll about the origin and measure the box there.
    c, s = np.cos(roll), np.sin(roll)
    to_level = np.array([[c, s], [-s, c]])
    pts = lm[:N_MESH, :2] @ to_level.T
    top = pts[list(_BROW_UPPER), 1].min()
    face = pts[pts[:, 1] >= top]
    lo, hi = face.min(axis=0), face.max(axis=0)
    size = float(max(hi - lo))
    centre_level = 0.5 * (lo + hi) - np.array([0.0, CROP_SHIFT_UP * size])
    centre = centre_level @ to_level  # back to frame axes (to_level is orthonormal)
    scale = CROP_SIZE_PX / (CROP_SCALE * size)
    # crop = scale · to_level · (p − centre) + half-size, with pixel centres at integer coordinates.
    linear = scale * to_level
    offset = (CROP_SIZE_PX - 1) / 2.0 - linear @ centre
    return FaceCrop(np.hstack([linear, offset[:, None]]), size, float(np.degrees(roll)))


def feather_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Blend weight at crop-normalised coordinates (u, v ∈ [−1, 1] across the crop), float32."""
    r = (np.abs(u) ** MASK_ROUNDNESS + np.abs(v) ** MASK_ROUNDNESS) ** (1.0 / MASK_ROUNDNESS)
    x = np.clip((MASK_OUTER - r) / (MASK_OUTER - MASK_INNER), 0.0, 1.0)
    return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


@dataclass(frozen=True)
class PasteMaps:
    """Everything paste-back needs for one actor, per frame pixel (host arrays, made once)."""

    grid: np.ndarray  # (H, W, 2) float32: where each frame pixel samples G's output (grid_sample units)
    mask: np.ndarray  # (H, W) float32 in [0, 1]: 0 keeps the actor frame exactly
    background: np.ndarray  # (H, W, 3) uint8: the actor frame


def paste_maps(crop: FaceCrop, frame: np.ndarray) -> PasteMaps:
    """Sampling grid and feathered mask that put G's 512² crop render back into `frame`."""
    h, w = frame.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    # Frame pixel centre → crop px (256) → crop-normalised [−1, 1] with align_corners=False,
    # which is the same for G's 512² render: its pixels tile the same square twice as finely.
    cx = crop.matrix[0, 0] * xs + crop.matrix[0, 1] * ys + crop.matrix[0, 2]
    cy = crop.matrix[1, 0] * xs + crop.matrix[1, 1] * ys + crop.matrix[1, 2]
    u = (2.0 * cx + 1.0) / CROP_SIZE_PX - 1.0
    v = (2.0 * cy + 1.0) / CROP_SIZE_PX - 1.0
    grid = np.stack([u, v], axis=-1).astype(np.float32)
    # A private copy: the background must not change under us if the caller reuses its frame.
    return PasteMaps(grid, feather_mask(u, v), np.array(frame, dtype=np.uint8, copy=True))


def paste(images: torch.Tensor, grid: torch.Tensor, mask: torch.Tensor, background: torch.Tensor,
          out: torch.Tensor) -> None:
    """Blend G's renders (B, 3, 512, 512) in [0, 1] over the frame into `out` (B, H, W, 3) uint8.

    grid (1, H, W, 2), mask (1, 1, H, W) and background (1, 3, H, W, values 0…255) are static
    buffers; where mask is 0 the result is the background exactly (lerp with weight 0).
    """
    b = images.shape[0]
    sampled = nnf.grid_sample(images.float(), grid.expand(b, -1, -1, -1), mode="bilinear",
                              padding_mode="border", align_corners=False)
    blended = torch.lerp(background.expand(b, -1, -1, -1), sampled.mul_(255.0), mask.expand(b, -1, -1, -1))
    out.copy_(blended.round_().clamp_(0.0, 255.0).permute(0, 2, 3, 1))


def check_frame(image: np.ndarray, field: str = "actor.image") -> np.ndarray:
    """The actor frame as a C-contiguous (512, 512, 3) uint8 array, or StageInputError."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != (FRAME_SIZE_PX, FRAME_SIZE_PX, 3):
        raise StageInputError(field, f"expected a {FRAME_SIZE_PX}×{FRAME_SIZE_PX}×3 uint8 RGB image",
                              dtype=str(image.dtype), shape=tuple(image.shape))
    return np.ascontiguousarray(image)
