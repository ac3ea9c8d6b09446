"""Frames → CLIP pixels, exactly as open_clip's eval transform prepares an image.

open_clip (resize_mode "shortest", interpolation "bicubic") runs torchvision's
Resize(S) → CenterCrop(S) → ToTensor → Normalize(OpenAI mean, std) on a PIL image, and
torchvision resizes a PIL image with PIL's own `Image.resize(..., BICUBIC)`. So we call PIL too,
and the pixels match open_clip's bit for bit.

Why not OpenCV: PIL's bicubic widens its kernel when it shrinks (antialiasing) and cv2's
INTER_CUBIC does not, and their cubic coefficients differ (−0.5 vs −0.75). Measured on the
512² sample portrait shrunk to 224², cv2 INTER_CUBIC differs from PIL by up to 0.37 (mean 0.012)
in [0, 1] pixel values; enlarging a 160×120 frame, by up to 0.06. A stripe pattern shows the
aliasing outright (`tests/stages/verify/test_clip_preprocess.py`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from stages.verify.clip.config import OPENAI_MEAN, OPENAI_STD


def resized_size_px(height_px: int, width_px: int, image_size: int) -> tuple[int, int]:
    """(height, width) after scaling the shorter side to `image_size` (the longer one truncated, as torchvision)."""
    if height_px <= width_px:
        return image_size, int(image_size * width_px / height_px)
    return int(image_size * height_px / width_px), image_size


def crop_origin_px(height_px: int, width_px: int, image_size: int) -> tuple[int, int]:
    """(top, left) of torchvision's centre crop: Python's round, so a .5 offset goes to the even pixel."""
    return round((height_px - image_size) / 2.0), round((width_px - image_size) / 2.0)


def to_clip_pixels(frames_uint8: np.ndarray, image_size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB frames → (N, 3, S, S) float32 normalised pixels for `encode_image`."""
    frames = np.asarray(frames_uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    if image_size < 1 or min(frames.shape[1:3]) < 1:
        raise ValueError(f"cannot make {image_size}² pixels from {frames.shape[1]}×{frames.shape[2]} frames")
    height_px, width_px = frames.shape[1:3]
    new_h, new_w = resized_size_px(height_px, width_px, image_size)
    top, left = crop_origin_px(new_h, new_w, image_size)
    out = np.empty((len(frames), image_size, image_size, 3), np.uint8)
    for i, frame in enumerate(frames):
        # PIL works on one image at a time; CLIP scores a few dozen sampled frames per slot.
        resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BICUBIC))
        out[i] = resized[top:top + image_size, left:left + image_size]
    pixels = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(OPENAI_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((pixels - mean) / std).contiguous()
