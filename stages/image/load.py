"""Image file decoding for actor portraits: bytes in, RGB uint8 H×W×3 out, bad files refused.

Pillow only *probes* the header (format, size, alpha) so a non-image or a decompression bomb is
refused before any pixel is allocated; OpenCV then decodes, because its IMREAD_COLOR applies the
EXIF orientation, expands grayscale and scales 16-bit samples to 8 bits in one call. Images with
an alpha channel go through Pillow instead, which can hand us the alpha to composite.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stages.errors import StageInputError

MIN_SIDE_PX = 64
"""Smaller than this, the face mesh has nothing to fit and the 512² crop would be pure blur."""

MAX_SIDE_PX = 8192
"""Larger than this is not a portrait but a mistake (or an attack): ~200 MB of RGB to decode."""

MAX_FILE_BYTES = 128 * 1024 * 1024
"""An 8192² PNG at its worst is ~200 MB raw; real portraits are far below this cap."""

_ALPHA_BACKGROUND_RGB = (255, 255, 255)
# Transparent pixels often hold garbage (or black); a plain white backdrop is what a cut-out
# portrait is usually meant to sit on.


def read_image_bytes(path: Path, field: str = "actor.image") -> bytes:
    """The raw bytes of the file at `path`; StageInputError(field) when it is missing or unreadable."""
    path = Path(path)
    try:
        size_bytes = path.stat().st_size
    except FileNotFoundError:
        raise StageInputError(field, "the image file does not exist", path=str(path)) from None
    except OSError as exc:
        raise StageInputError(field, f"the image file cannot be read: {exc.strerror}", path=str(path)) from None
    if not path.is_file():
        raise StageInputError(field, "the path is not a regular file", path=str(path))
    if size_bytes == 0:
        raise StageInputError(field, "the image file is empty", path=str(path))
    if size_bytes > MAX_FILE_BYTES:
        raise StageInputError(
            field, "the image file is too large", path=str(path), size_bytes=size_bytes, max_bytes=MAX_FILE_BYTES
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StageInputError(field, f"the image file cannot be read: {exc.strerror}", path=str(path)) from None


def _check_size(width_px: int, height_px: int, field: str, source: str) -> None:
    if min(width_px, height_px) < MIN_SIDE_PX:
        raise StageInputError(
            field, f"the image is too small ({width_px}×{height_px} px; each side needs at least {MIN_SIDE_PX} px)",
            path=source, width_px=width_px, height_px=height_px,
        )
    if max(width_px, height_px) > MAX_SIDE_PX:
        raise StageInputError(
            field, f"the image is too large ({width_px}×{height_px} px; each side must be at most {MAX_SIDE_PX} px)",
            path=source, width_px=width_px, height_px=height_px,
        )


def _has_alpha(probe: Image.Image) -> bool:
    # Palette and grey images carry transparency in `info` rather than as a band.
    return probe.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in probe.info


def _decode_with_alpha(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        rgba = np.asarray(ImageOps.exif_transpose(img).convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3:4] / 255.0
    background = np.array(_ALPHA_BACKGROUND_RGB, dtype=np.float32)
    composite = rgba[..., :3] * alpha + background * (1.0 - alpha)
    return np.clip(np.rint(composite), 0, 255).astype(np.uint8)


def _decode_opaque(data: bytes) -> np.ndarray | None:
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is not None:
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    # A format Pillow knows but this OpenCV build does not (e.g. GIF): let Pillow decode it.
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError):
        return None


def decode_image(data: bytes, field: str = "actor.image", source: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 (H, W, 3), EXIF orientation applied.

    Grayscale becomes three equal channels, 16-bit samples are scaled to 8 bits, and alpha is
    composited over white. Raises StageInputError(field) for data that is not a decodable image
    or whose sides fall outside [MIN_SIDE_PX, MAX_SIDE_PX].
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raises) between 89 M and 179 M pixels; our own limit is lower.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width_px, height_px = probe.size
                image_format = probe.format
                alpha = _has_alpha(probe)
    except Image.DecompressionBombError:
        raise StageInputError(field, "the image has far too many pixels", path=source) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise StageInputError(field, "the file is not a readable image", path=source) from None
    # Checked on the header, before decoding, so a bomb never gets its pixels allocated.
    _check_size(width_px, height_px, field, source)

    try:
        rgb = _decode_with_alpha(data) if alpha else _decode_opaque(data)
    except (OSError, ValueError):
        rgb = None
    if rgb is None:
        raise StageInputError(field, f"the {image_format or 'image'} data cannot be decoded", path=source)
    _check_size(rgb.shape[1], rgb.shape[0], field, source)
    return np.ascontiguousarray(rgb)


def read_image(path: Path, field: str = "actor.image") -> np.ndarray:
    """Read the image file at `path` as RGB uint8 (H, W, 3); StageInputError(field) if it cannot be used."""
    return decode_image(read_image_bytes(path, field), field, str(path))
