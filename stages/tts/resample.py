"""Sample-rate conversion to the pipeline's 24 kHz, with a proper anti-aliasing filter."""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly

from stages.types import SAMPLE_RATE_HZ


def resample_to_rate(audio: np.ndarray, from_rate_hz: int, to_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """`audio` (1-D, floats in [-1, 1]) resampled from `from_rate_hz` to `to_rate_hz`, float32.

    Polyphase filtering by the reduced ratio (22050 → 24000 is ×160/147) keeps it exact in
    length (ceil(n·up/down) samples) and fast. The filter can overshoot a full-scale input by a
    fraction of a percent, so the result is clipped back to [-1, 1].
    """
    if from_rate_hz <= 0 or to_rate_hz <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate_hz} → {to_rate_hz}")
    samples = np.asarray(audio, dtype=np.float64)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio of shape (n,), got {samples.shape}")
    divisor = gcd(int(from_rate_hz), int(to_rate_hz))
    up, down = int(to_rate_hz) // divisor, int(from_rate_hz) // divisor
    if up == down or samples.size == 0:
        converted = samples
    else:
        converted = resample_poly(samples, up, down)
    return np.clip(converted, -1.0, 1.0).astype(np.float32)
