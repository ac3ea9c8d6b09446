"""Fit a speech track to the slot length: truncate (with a warning) or pad with silence."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from stages.types import Phoneme, Speech


class AudioTruncatedWarning(UserWarning):
    """The speech was longer than the slot and was cut."""


def fit_speech(speech: Speech, duration_s: float) -> Speech:
    """`speech` trimmed or zero-padded to exactly `duration_s`.

    Longer audio is truncated and an AudioTruncatedWarning names both lengths; phonemes past the
    end are dropped and the one spanning it is clipped, so the timeline still covers the audio.
    """
    n_samples = int(round(duration_s * speech.sample_rate_hz))
    audio = speech.audio
    if len(audio) > n_samples:
        warnings.warn(AudioTruncatedWarning(
            f"speech is {speech.duration_s:.2f} s but the slot is {duration_s:.2f} s; "
            f"truncated to {duration_s:.2f} s"), stacklevel=2)
        fitted = audio[:n_samples]
    else:
        fitted = np.zeros(n_samples, dtype=np.float32)
        fitted[: len(audio)] = audio
    phonemes = tuple(
        Phoneme(p.symbol, p.start_s, min(p.end_s, duration_s))
        for p in speech.phonemes if p.start_s < duration_s
    )
    return replace(speech, audio=np.ascontiguousarray(fitted, dtype=np.float32), phonemes=phonemes)
