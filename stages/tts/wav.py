"""Recorded speech from a recipe's wav file, brought to the pipeline's 24 kHz mono float32."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from stages.errors import StageInputError
from stages.tts.resample import resample_to_rate
from stages.types import Speech

_FIELD = "speech.audio"


def _to_unit_float(data: np.ndarray, path: Path) -> np.ndarray:
    """PCM of any wav sample format as float64 with full scale at ±1."""
    if data.dtype == np.uint8:
        # 8-bit wav is unsigned with its zero at 128.
        return (data.astype(np.float64) - 128.0) / 128.0
    if data.dtype == np.int16:
        return data.astype(np.float64) / 32768.0
    if data.dtype == np.int32:
        # scipy returns 24-bit wavs left-aligned in int32, so one scale fits both.
        return data.astype(np.float64) / 2147483648.0
    if data.dtype == np.int64:
        return data.astype(np.float64) / 9223372036854775808.0
    if np.issubdtype(data.dtype, np.floating):
        samples = data.astype(np.float64)
        if not np.all(np.isfinite(samples)):
            raise StageInputError(_FIELD, f"{path} holds NaN or infinite samples", path=str(path))
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        # Float wavs may exceed ±1; scaling keeps the waveform where clipping would distort it.
        return samples / peak if peak > 1.0 else samples
    raise StageInputError(_FIELD, f"{path} uses unsupported sample type {data.dtype}", path=str(path))


def load_wav(path: Path) -> Speech:
    """Read a wav (8/16/24/32-bit PCM or float, mono or multichannel) as 24 kHz mono Speech.

    Channels are averaged to mono. The Speech has no phoneme timeline (`phonemes=()`), so the
    motion planner works from the audio alone. Missing, unreadable or non-wav files, and files
    with no samples, raise StageInputError("speech.audio").
    """
    # Imported here: scipy.io costs ~0.2 s of CPU per process, and most slots speak from text.
    from scipy.io import wavfile

    path = Path(path)
    if not path.is_file():
        raise StageInputError(_FIELD, f"no such file: {path}", path=str(path))
    try:
        with warnings.catch_warnings():
            # scipy warns about chunks it skips (LIST metadata etc.); those files are fine.
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate_hz, data = wavfile.read(path)
    except Exception as exc:  # scipy's parser meets untrusted bytes: a truncated header once gave UnboundLocalError
        raise StageInputError(_FIELD, f"{path} is not a readable wav file ({type(exc).__name__}: {exc})",
                              path=str(path)) from exc
    if rate_hz <= 0:
        raise StageInputError(_FIELD, f"{path} declares a sample rate of {rate_hz} Hz", path=str(path))
    samples = _to_unit_float(np.asarray(data), path)
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if mono.size == 0:
        raise StageInputError(_FIELD, f"{path} contains no audio samples", path=str(path))
    audio = resample_to_rate(mono, int(rate_hz))
    return Speech(audio=audio, phonemes=(), voice=f"file:{path.name}", backend="wav")
