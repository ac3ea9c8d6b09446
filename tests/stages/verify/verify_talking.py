"""A hand-made talking face for the verify tests: a real portrait whose jaw drops on cue.

The speech is syllable-like bursts (vowel "a" in the timeline) separated by closures ("m")
and pauses; the mouth opening of each frame follows the burst loudness, optionally shifted by
a known number of frames. The mouth is opened by moving everything below the lip line down and
filling the gap with a dark mouth interior — crude, but MediaPipe measures it as an open mouth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.types import Phoneme, Speech

FPS = 24
SAMPLE_RATE_HZ = 24_000
SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
PORTRAIT = SHARED / "faces" / "s10.jpg"  # lips visible and slightly parted
MAX_OPENING_PX = 24.0  # below ~8 px MediaPipe reads the crude gap as closed lips
_MOUTH_INTERIOR_RGB = (45, 18, 22)


@dataclass(frozen=True)
class Portrait:
    """A 512² face crop and its face-mesh landmarks."""

    image: np.ndarray
    landmarks_px: np.ndarray


def load_portrait(path: Path = PORTRAIT) -> Portrait:
    """The photo cropped square around the face (face ~half the frame), 512², with landmarks."""
    import cv2

    from stages.image.face import detect_landmarks

    photo = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    points = detect_landmarks(photo)
    (x0, y0), (x1, y1) = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    side = 1.9 * max(x1 - x0, y1 - y0)
    scale = 512.0 / side
    matrix = np.array([[scale, 0, 256 - scale * (x0 + x1) / 2], [0, scale, 256 - scale * (y0 + y1) / 2]])
    image = cv2.warpAffine(photo, matrix, (512, 512), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    return Portrait(image=image, landmarks_px=detect_landmarks(image))


def syllable_speech(n_frames: int, seed: int = 0) -> tuple[Speech, np.ndarray]:
    """Speech of syllable bursts filling n_frames, and its per-frame loudness in [0, 1].

    Bursts last 3–7 frames with loudness 0.5–1.0, closures 2–4 frames, and a pause of 8–12
    frames every few syllables. Burst edges sit on frame boundaries.
    """
    rng = np.random.default_rng(seed)
    loudness = np.zeros(n_frames)
    phonemes = []
    frame = 6
    while frame < n_frames - 8:
        length = int(rng.integers(3, 8))
        loudness[frame : frame + length] = rng.uniform(0.5, 1.0)
        phonemes.append(Phoneme("a", frame / FPS, (frame + length) / FPS))
        frame += length
        gap = int(rng.integers(8, 13)) if rng.random() < 0.25 else int(rng.integers(2, 5))
        phonemes.append(Phoneme("m", frame / FPS, min(frame + 2, n_frames) / FPS))
        frame += gap
    per_sample = np.repeat(loudness, SAMPLE_RATE_HZ // FPS)
    t_s = np.arange(len(per_sample)) / SAMPLE_RATE_HZ
    voice = np.sin(2 * np.pi * 140 * t_s) + 0.5 * np.sin(2 * np.pi * 280 * t_s) + 0.1 * rng.standard_normal(len(t_s))
    audio = (0.25 * per_sample * voice).astype(np.float32)
    return Speech(audio=audio, phonemes=tuple(phonemes), voice="test", backend="hand-built"), loudness


def open_mouth_frames(portrait: Portrait, opening: np.ndarray) -> np.ndarray:
    """(T, 512, 512, 3) frames with the jaw dropped by opening[t] · MAX_OPENING_PX pixels."""
    import cv2

    points = portrait.landmarks_px
    lip_y = (points[13, 1] + points[14, 1]) / 2
    centre_x = (points[61, 0] + points[291, 0]) / 2
    half_width = (points[291, 0] - points[61, 0]) / 2 * 1.15
    chin_y = points[152, 1]
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    across = np.abs(np.cos(np.clip((xx - centre_x) / half_width, -1, 1) * np.pi / 2)) ** 1.5
    down = np.clip(1 - (yy - chin_y) / (0.25 * (chin_y - lip_y)), 0, 1) * (yy >= lip_y)
    profile = (across * down).astype(np.float32)
    frames = np.empty((len(opening), 512, 512, 3), dtype=np.uint8)
    for t, amount in enumerate(np.asarray(opening, dtype=np.float32) * MAX_OPENING_PX):
        source_y = yy - amount * profile
        cv2.remap(portrait.image, xx, source_y, cv2.INTER_LINEAR, dst=frames[t], borderMode=cv2.BORDER_REFLECT)
        frames[t][(yy >= lip_y) & (source_y < lip_y)] = _MOUTH_INTERIOR_RGB
    return frames


def shifted(values: np.ndarray, frames: int) -> np.ndarray:
    """`values` delayed by `frames` (advanced when negative), edges filled with the edge value."""
    if frames == 0:
        return values.copy()
    if frames > 0:
        return np.concatenate([np.full(frames, values[0]), values[:-frames]])
    return np.concatenate([values[-frames:], np.full(-frames, values[-1])])
