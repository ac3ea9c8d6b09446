"""The actor crop: a 512² upper-body frame in which every face sits at the same place and size.

A similarity transform (scale, roll, translation) takes the source picture to the crop so that
the midpoint between the eyes lands on EYE_MIDPOINT_PX, the eyes are level, and the distance
between the eye centres is INTEROCULAR_PX. The warp stage and the motion planner can then
assume one face geometry for every actor.

Derivation of the constants (measured on MediaPipe meshes of the portraits in ../shared/faces
and the scikit-image astronaut):
- the mesh's cheek-to-cheek width (points 234–454) is 2.16–2.40 × the inter-ocular distance
  (mean ≈ 2.28); for a face ≈ 40 % of the 512 px frame (≈ 205 px) that gives ≈ 90 px, and
  92 px leaves the face at 41 % (≈ 210 px);
- eye line to chin (point 152) is 1.6–2.0 × inter-ocular (≈ 160–185 px at 92 px), and the
  hairline sits ≈ 0.8–1.0 × above the eyes. With the eyes at y = 215 the chin falls near
  y ≈ 385, leaving ≈ 125 px of neck and shoulders below it, and ≈ 130 px of hair and headroom
  above the forehead for the head to nod into without leaving the frame.
The inter-ocular distance is measured in 3-D (the mesh's z is scaled like x), so a face turned
three-quarters away is sized like a frontal one instead of being blown up by its foreshortening.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stages.image.face import detect_landmarks
from stages.types import FRAME_SIZE_PX

CROP_SIZE_PX = FRAME_SIZE_PX
"""The crop is the frame the warp animates: square, FRAME_SIZE_PX a side."""

EYE_MIDPOINT_PX = (256.0, 215.0)
"""Where the midpoint between the eye centres lands in the crop (x centred, y above centre)."""

INTEROCULAR_PX = 92.0
"""3-D distance between the eye centres in the crop (see the module docstring for why 92)."""

# Eye corners of the MediaPipe face mesh. An eye's centre is the midpoint of its two corners,
# not the iris, because the iris moves with the gaze and the corners do not.
_IMAGE_LEFT_EYE_CORNERS = (33, 133)  # the subject's right eye: outer, inner corner
_IMAGE_RIGHT_EYE_CORNERS = (362, 263)  # the subject's left eye: inner, outer corner

# Refinement: the crop's own landmarks are re-detected, and when they miss the target by more
# than these tolerances the transform is corrected once and the crop redone from the source.
# Re-detecting the same face on slightly different crops scatters by ≈ 0.5 px, 0.3° and 1–2 %
# (3-D distance), so the tolerances sit above that noise: tighter ones would chase the noise.
_MIDPOINT_TOLERANCE_PX = 1.5
_ROLL_TOLERANCE_DEG = 0.75
_SCALE_TOLERANCE = 0.03
_MAX_REFINEMENTS = 1

# Shrinking by more than this goes through an area-averaging resize first (anti-aliasing);
# warpAffine itself has no area filter.
_AREA_SHRINK_BELOW = 0.999
# Extra source pixels kept around the crop's footprint so the interpolation kernel
# (Lanczos-4: 4 px each side) sees real neighbours rather than the replicated border.
_FOOTPRINT_MARGIN_PX = 8


@dataclass(frozen=True)
class EyeGeometry:
    """Where the eyes are: midpoint (x, y) px, roll in degrees (clockwise in the image), distance px."""

    midpoint_px: tuple[float, float]
    roll_deg: float
    interocular_px: float


@dataclass(frozen=True)
class FaceCrop:
    """A prepared crop: the 512² RGB image, its own landmarks, and the source→crop affine."""

    image: np.ndarray  # (512, 512, 3) uint8 RGB
    landmarks_px: np.ndarray  # (478, 3) float32, detected on `image`
    crop_from_source: np.ndarray  # (2, 3) float64
    refinements: int  # how many corrective re-crops were needed (0 when the first was on target)


def eye_geometry(landmarks_px: np.ndarray) -> EyeGeometry:
    """Eye midpoint, roll and 3-D inter-ocular distance from face-mesh landmarks in pixels."""
    points = np.asarray(landmarks_px, dtype=np.float64)
    left = points[list(_IMAGE_LEFT_EYE_CORNERS)].mean(axis=0)
    right = points[list(_IMAGE_RIGHT_EYE_CORNERS)].mean(axis=0)
    dx, dy = right[:2] - left[:2]
    midpoint = (left[:2] + right[:2]) / 2.0
    return EyeGeometry(
        midpoint_px=(float(midpoint[0]), float(midpoint[1])),
        roll_deg=float(np.degrees(np.arctan2(dy, dx))),
        interocular_px=float(np.linalg.norm(right - left)),
    )


def crop_transform(landmarks_px: np.ndarray) -> np.ndarray:
    """The 2×3 similarity that maps the landmarks' image onto the standard crop geometry."""
    eyes = eye_geometry(landmarks_px)
    if not eyes.interocular_px > 1.0:
        raise ValueError(f"degenerate eye landmarks (inter-ocular distance {eyes.interocular_px:.3f} px)")
    return _similarity(eyes, EYE_MIDPOINT_PX, INTEROCULAR_PX)


def _similarity(eyes: EyeGeometry, target_px: tuple[float, float], target_interocular_px: float) -> np.ndarray:
    # Rotate by −roll about the eye midpoint, scale to the target distance, then move the
    # midpoint onto the target: x' = s·R·(x − m) + t.
    scale = target_interocular_px / eyes.interocular_px
    theta = np.radians(eyes.roll_deg)
    cos_s, sin_s = scale * np.cos(theta), scale * np.sin(theta)
    linear = np.array([[cos_s, sin_s], [-sin_s, cos_s]])
    offset = np.asarray(target_px) - linear @ np.asarray(eyes.midpoint_px)
    return np.hstack([linear, offset[:, None]])


def _homogeneous(affine: np.ndarray) -> np.ndarray:
    return np.vstack([affine, [0.0, 0.0, 1.0]])


def _source_footprint(crop_from_source: np.ndarray, width_px: int, height_px: int, margin_px: float):
    """Integer source box (x0, y0, x1, y1) covering every pixel the crop samples, clipped to the image."""
    source_from_crop = cv2.invertAffineTransform(crop_from_source)
    corners = np.array([[0, 0, 1], [CROP_SIZE_PX, 0, 1], [0, CROP_SIZE_PX, 1], [CROP_SIZE_PX, CROP_SIZE_PX, 1]], float)
    xy = corners @ source_from_crop.T
    x0 = int(np.clip(np.floor(xy[:, 0].min() - margin_px), 0, width_px - 1))
    y0 = int(np.clip(np.floor(xy[:, 1].min() - margin_px), 0, height_px - 1))
    x1 = int(np.clip(np.ceil(xy[:, 0].max() + margin_px), x0 + 1, width_px))
    y1 = int(np.clip(np.ceil(xy[:, 1].max() + margin_px), y0 + 1, height_px))
    return x0, y0, x1, y1


def warp_crop(source: np.ndarray, crop_from_source: np.ndarray) -> np.ndarray:
    """Resample `source` (H, W, 3 uint8) through `crop_from_source` into a 512² crop.

    Shrinking goes through an area-averaging resize of just the crop's footprint (no aliasing,
    and a huge source is not resized whole); the remaining rotation/translation uses Lanczos-4.
    Pixels outside the source replicate its edge, so the crop never shows black bars.
    """
    affine = np.asarray(crop_from_source, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    height_px, width_px = source.shape[:2]
    margin_px = _FOOTPRINT_MARGIN_PX / min(scale, 1.0)
    x0, y0, x1, y1 = _source_footprint(affine, width_px, height_px, margin_px)
    region = source[y0:y1, x0:x1]
    # Source pixel → region pixel.
    region_from_source = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
    if scale < _AREA_SHRINK_BELOW:
        new_w = max(1, round((x1 - x0) * scale))
        new_h = max(1, round((y1 - y0) * scale))
        fx, fy = new_w / (x1 - x0), new_h / (y1 - y0)
        region = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
        # cv2.resize aligns pixel centres: x' = (x + ½)·f − ½.
        resized_from_region = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]])
        region_from_source = (_homogeneous(resized_from_region) @ _homogeneous(region_from_source))[:2]
    crop_from_region = (_homogeneous(affine) @ np.linalg.inv(_homogeneous(region_from_source)))[:2]
    return cv2.warpAffine(
        np.ascontiguousarray(region), crop_from_region, (CROP_SIZE_PX, CROP_SIZE_PX),
        flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE,
    )


def _on_target(eyes: EyeGeometry) -> bool:
    miss_px = np.hypot(eyes.midpoint_px[0] - EYE_MIDPOINT_PX[0], eyes.midpoint_px[1] - EYE_MIDPOINT_PX[1])
    return (
        miss_px <= _MIDPOINT_TOLERANCE_PX
        and abs(eyes.roll_deg) <= _ROLL_TOLERANCE_DEG
        and abs(eyes.interocular_px / INTEROCULAR_PX - 1.0) <= _SCALE_TOLERANCE
    )


def crop_face(source: np.ndarray, field: str = "actor.image", landmarks_px: np.ndarray | None = None) -> FaceCrop:
    """Crop `source` (H, W, 3 uint8 RGB) to the standard 512² actor frame and find its landmarks.

    `landmarks_px` are the source's face landmarks when already known (else detected here).
    The crop's landmarks are re-detected on the crop itself (more exact than mapping the
    source's), and when they miss the target geometry by more than the detector's own scatter
    the transform is corrected and the crop redone from the source, once.
    Raises NoFaceError(field) when the source (or the crop) shows no human face.
    """
    if landmarks_px is None:
        landmarks_px = detect_landmarks(source, field)
    crop_from_source = crop_transform(landmarks_px)
    refinements = 0
    while True:
        image = warp_crop(source, crop_from_source)
        crop_landmarks = detect_landmarks(image, field)
        eyes = eye_geometry(crop_landmarks)
        if _on_target(eyes) or refinements == _MAX_REFINEMENTS:
            break
        # Compose a small correcting similarity, computed in crop pixels, onto the transform.
        correction = _similarity(eyes, EYE_MIDPOINT_PX, INTEROCULAR_PX)
        crop_from_source = (_homogeneous(correction) @ _homogeneous(crop_from_source))[:2]
        refinements += 1
    return FaceCrop(
        image=image,
        landmarks_px=crop_landmarks.astype(np.float32),
        crop_from_source=crop_from_source.astype(np.float64),
        refinements=refinements,
    )
