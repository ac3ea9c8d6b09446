"""Frames → CLIP pixels: open_clip's eval transform (shortest side → S bicubic, centre crop, OpenAI normalisation)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="CLIP pixels are torch tensors")

from stages.verify.clip.config import OPENAI_MEAN, OPENAI_STD  # noqa: E402
from stages.verify.clip.preprocess import (  # noqa: E402
    crop_origin_px,
    resized_size_px,
    to_clip_pixels,
)

MEAN = torch.tensor(OPENAI_MEAN).view(3, 1, 1)
STD = torch.tensor(OPENAI_STD).view(3, 1, 1)


def normalised(frame: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) with ToTensor + Normalize(OpenAI) applied by hand."""
    return (torch.from_numpy(frame).permute(2, 0, 1).float() / 255 - MEAN) / STD


def test_output_shape_and_dtype() -> None:
    """N frames of any size become (N, 3, S, S) float32."""
    frames = np.random.default_rng(0).integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    pixels = to_clip_pixels(frames, 64)
    assert pixels.shape == (3, 3, 64, 64) and pixels.dtype == torch.float32


def test_mid_grey_maps_to_normalised_grey() -> None:
    """A uniform grey 128 frame maps to (128/255 − mean) / std in every channel."""
    pixels = to_clip_pixels(np.full((1, 100, 70, 3), 128, np.uint8), 32)
    expected = ((128 / 255 - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)).view(1, 3, 1, 1)
    torch.testing.assert_close(pixels, expected.expand(1, 3, 32, 32), rtol=0, atol=1e-6)


def test_wide_frame_is_centre_cropped() -> None:
    """A frame already S tall keeps its middle S columns, untouched, and nothing else."""
    frame = np.random.default_rng(1).integers(0, 256, (8, 20, 3), dtype=np.uint8)
    pixels = to_clip_pixels(frame[None], 8)
    torch.testing.assert_close(pixels[0], normalised(frame[:, 6:14]), rtol=0, atol=0)


def test_tall_frame_crop_rounds_half_to_even_like_torchvision() -> None:
    """A 9-row excess of 5 rows starts the crop at row 2 (round(2.5) = 2), as torchvision's CenterCrop."""
    frame = np.random.default_rng(2).integers(0, 256, (9, 4, 3), dtype=np.uint8)
    assert crop_origin_px(9, 4, 4) == (2, 0)
    torch.testing.assert_close(to_clip_pixels(frame[None], 4)[0], normalised(frame[2:6]), rtol=0, atol=0)


def test_shortest_side_goes_to_image_size() -> None:
    """The shorter side becomes S and the longer one keeps the aspect ratio, truncated."""
    assert resized_size_px(480, 640, 224) == (224, 298)  # 224·640/480 = 298.67
    assert resized_size_px(640, 480, 224) == (298, 224)
    assert resized_size_px(512, 512, 224) == (224, 224)


def test_centre_of_a_banded_frame_survives() -> None:
    """Of a frame in three vertical colour bands, the crop shows the middle band."""
    frame = np.zeros((60, 180, 3), np.uint8)
    frame[:, :60, 0] = 255    # red left
    frame[:, 60:120, 1] = 255  # green middle
    frame[:, 120:, 2] = 255   # blue right
    pixels = to_clip_pixels(frame[None], 30)[0] * STD + MEAN
    torch.testing.assert_close(pixels[:, :, 2:-2], torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(3, 30, 26),
                               rtol=0, atol=0.02)


def test_shrinking_is_antialiased() -> None:
    """One-pixel stripes shrunk 512 → 224 average to an even grey, as PIL's bicubic does (no aliasing)."""
    stripes = np.zeros((1, 512, 512, 3), np.uint8)
    stripes[:, :, ::2] = 255
    pixels = to_clip_pixels(stripes, 224) * STD + MEAN
    assert abs(pixels.mean().item() - 0.5) < 0.01
    assert pixels.std().item() < 0.02  # an unfiltered bicubic (cv2 INTER_CUBIC) gives ≈ 0.35


def test_bad_frames_are_refused() -> None:
    """Frames that are not (N, H, W, 3) uint8 raise a ValueError."""
    with pytest.raises(ValueError, match="uint8"):
        to_clip_pixels(np.zeros((1, 8, 8, 3), np.float32), 8)
    with pytest.raises(ValueError, match="uint8"):
        to_clip_pixels(np.zeros((8, 8, 3), np.uint8), 8)
