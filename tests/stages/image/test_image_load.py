"""Image file decoding: what read_image accepts, how it normalises pixels, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stages.errors import StageInputError
from stages.image import read_image


def _write_bgr(path: Path, bgr: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), bgr)
    return path


def test_colour_png_comes_back_rgb(tmp_path):
    """A pure-red picture decodes to R=255, G=0, B=0 (RGB order, not OpenCV's BGR)."""
    bgr = np.zeros((80, 96, 3), np.uint8)
    bgr[..., 2] = 255
    rgb = read_image(_write_bgr(tmp_path / "red.png", bgr))
    assert rgb.shape == (80, 96, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == 255).all() and (rgb[..., 1:] == 0).all()


def test_grayscale_becomes_three_equal_channels(tmp_path):
    """A grayscale file decodes to H×W×3 with the grey value in every channel."""
    grey = np.tile(np.arange(0, 250, 2, dtype=np.uint8), (70, 1))
    rgb = read_image(_write_bgr(tmp_path / "grey.png", grey))
    assert rgb.shape == (70, 125, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], grey)


def test_alpha_is_composited_over_white(tmp_path):
    """Transparent pixels become white, opaque ones keep their colour."""
    rgba = np.zeros((64, 128, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[:, 64:, 3] = 255  # left half fully transparent, right half opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    rgb = read_image(tmp_path / "cutout.png")
    assert rgb.shape == (64, 128, 3)
    assert (rgb[:, :64] == 255).all()
    assert (rgb[:, 64:] == (10, 200, 30)).all()


def test_exif_orientation_is_applied(tmp_path):
    """A JPEG tagged 'rotate 90° clockwise' comes back upright (sides swapped, left stripe on top)."""
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, :50] = 255  # a white stripe down the stored image's left edge
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: the stored image must be rotated 90° clockwise for display
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    rgb = read_image(tmp_path / "phone.jpg")
    assert rgb.shape == (200, 100, 3)
    assert rgb[:40].mean() > 240 and rgb[60:].mean() < 15


def test_sixteen_bit_samples_are_scaled_to_eight(tmp_path):
    """A 16-bit PNG is scaled to 8 bits (full scale stays full scale, mid-grey stays mid-grey)."""
    deep = np.full((64, 64), 65535, np.uint16)
    deep[32:] = 32896
    rgb = read_image(_write_bgr(tmp_path / "deep.png", deep))
    assert rgb.dtype == np.uint8
    assert (rgb[:32] == 255).all() and (rgb[32:] == 128).all()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("notes.jpg", b"this is a text file, not a JPEG\n" * 20, "not a readable image"),
        ("empty.jpg", b"", "empty"),
    ],
)
def test_non_images_are_refused_naming_the_field(tmp_path, name, content, reason):
    """A text file named .jpg, or an empty file, raises StageInputError for actor.image."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(StageInputError) as caught:
        read_image(path)
    assert caught.value.field == "actor.image" and reason in caught.value.message


def test_missing_file_and_directory_are_refused(tmp_path):
    """A path that does not exist, or is a folder, raises StageInputError for actor.image."""
    with pytest.raises(StageInputError, match="does not exist") as caught:
        read_image(tmp_path / "nobody.jpg")
    assert caught.value.field == "actor.image"
    with pytest.raises(StageInputError, match="not a regular file"):
        read_image(tmp_path)


@pytest.mark.parametrize(("height_px", "width_px", "reason"), [(10, 10, "too small"), (64, 9000, "too large")])
def test_absurd_sizes_are_refused(tmp_path, height_px, width_px, reason):
    """Images under 64 px or over 8192 px on a side raise StageInputError naming the size."""
    path = _write_bgr(tmp_path / "odd.png", np.full((height_px, width_px, 3), 128, np.uint8))
    with pytest.raises(StageInputError, match=reason) as caught:
        read_image(path)
    assert caught.value.field == "actor.image"
    assert (caught.value.details["width_px"], caught.value.details["height_px"]) == (width_px, height_px)


def test_truncated_jpeg_header_is_refused(tmp_path):
    """A JPEG cut off inside its header cannot be decoded and raises StageInputError."""
    ok = tmp_path / "ok.jpg"
    _write_bgr(ok, np.full((100, 100, 3), 90, np.uint8))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(ok.read_bytes()[:40])
    with pytest.raises(StageInputError) as caught:
        read_image(cut)
    assert caught.value.field == "actor.image"
