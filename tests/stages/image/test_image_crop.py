"""The crop geometry: the similarity transform and the resampling it drives, on synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest

from stages.image.crop import (
    CROP_SIZE_PX,
    EYE_MIDPOINT_PX,
    INTEROCULAR_PX,
    crop_transform,
    eye_geometry,
    warp_crop,
)

_LEFT_CORNERS, _RIGHT_CORNERS = (33, 133), (362, 263)


def _landmarks_with_eyes(left_xy, right_xy, half_width_px=12.0):
    """478 landmarks whose eye-corner pairs are centred on `left_xy` and `right_xy`."""
    points = np.zeros((478, 3), np.float32)
    for corners, centre in ((_LEFT_CORNERS, left_xy), (_RIGHT_CORNERS, right_xy)):
        direction = np.subtract(right_xy, left_xy) / np.linalg.norm(np.subtract(right_xy, left_xy))
        points[corners[0], :2] = np.asarray(centre) - half_width_px * direction
        points[corners[1], :2] = np.asarray(centre) + half_width_px * direction
    return points


def _apply(affine, xy):
    return affine[:, :2] @ np.asarray(xy, float) + affine[:, 2]


@pytest.mark.parametrize("roll_deg", [-35.0, 0.0, 12.5])
@pytest.mark.parametrize("interocular_px", [20.0, 92.0, 400.0])
def test_transform_puts_eyes_level_at_the_fixed_point(roll_deg, interocular_px):
    """Whatever the roll and size of the face, the eyes land level, centred on the target, 92 px apart."""
    theta = np.radians(roll_deg)
    middle = np.array([700.0, 333.0])
    half = 0.5 * interocular_px * np.array([np.cos(theta), np.sin(theta)])
    landmarks = _landmarks_with_eyes(middle - half, middle + half)
    assert eye_geometry(landmarks).roll_deg == pytest.approx(roll_deg, abs=1e-3)

    affine = crop_transform(landmarks)
    left, right = _apply(affine, middle - half), _apply(affine, middle + half)
    np.testing.assert_allclose((left + right) / 2, EYE_MIDPOINT_PX, atol=1e-3)
    assert abs(right[1] - left[1]) < 1e-3 and right[0] > left[0]
    assert np.linalg.norm(right - left) == pytest.approx(INTEROCULAR_PX, rel=1e-4)


def test_transform_refuses_collapsed_eyes():
    """Landmarks with both eyes on one spot are rejected instead of giving an infinite scale."""
    with pytest.raises(ValueError, match="degenerate"):
        crop_transform(np.zeros((478, 3), np.float32))


def _blob_image(height_px, width_px, centre_xy, sigma_px):
    y, x = np.mgrid[0:height_px, 0:width_px].astype(np.float32)
    blob = np.exp(-((x - centre_xy[0]) ** 2 + (y - centre_xy[1]) ** 2) / (2 * sigma_px**2))
    return np.repeat((40 + 200 * blob)[..., None], 3, axis=2).round().astype(np.uint8)


def _centroid(image):
    weight = image[..., 1].astype(np.float64) - 40
    weight[weight < 0] = 0
    y, x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return np.array([(weight * x).sum(), (weight * y).sum()]) / weight.sum()


@pytest.mark.parametrize(("scale", "angle_deg"), [(0.25, 20.0), (0.8, -7.0), (1.0, 0.0), (2.5, 33.0)])
def test_resampling_follows_the_affine_exactly(scale, angle_deg):
    """A feature at source point p appears at crop_from_source·p (to 0.1 px) when shrinking or enlarging."""
    source_xy = np.array([1030.0, 610.0])
    source = _blob_image(1400, 1800, source_xy, sigma_px=6.0 / scale)
    theta = np.radians(angle_deg)
    linear = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    target_xy = np.array([231.3, 280.7])
    affine = np.hstack([linear, (target_xy - linear @ source_xy)[:, None]])

    crop = warp_crop(source, affine)
    assert crop.shape == (CROP_SIZE_PX, CROP_SIZE_PX, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(_centroid(crop), target_xy, atol=0.1)


def test_crop_beyond_the_picture_has_no_black_bars():
    """Where the crop reaches past the source's edge, it repeats the edge instead of showing black."""
    source = np.empty((300, 200, 3), np.uint8)
    source[:] = (180, 120, 60)
    # Source (100, 20) → crop centre at 1.5× scale: most of the crop lies outside the picture.
    affine = np.array([[1.5, 0.0, 256 - 150.0], [0.0, 1.5, 256 - 30.0]])
    crop = warp_crop(source, affine)
    assert (crop == (180, 120, 60)).all()
