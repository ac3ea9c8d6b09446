"""Mouth curves from the audio alone, for speech that comes without a phoneme timeline.

Loudness drives the jaw, spectral shape drives the lips, and short energy dips between voiced
stretches close the lips (most such dips in speech are stop closures). Every feature is centred on
its analysis window, so the curves neither lead nor lag the sound; the planner adds the lead.
"""

from __future__ import annotations

import math

import numpy as np

from stages.errors import StageInputError
from stages.motion.curves import gaussian_smooth
from stages.motion.visemes import (ACTIVITY_SIGMA_S, CLOSED_SIGMA_S, JAW_SIGMA_S, LIP_SIGMA_S,
                                   REST, MouthTracks, select_emphasis)

HOP_S = 0.005
"""Analysis hop: features on a 200 Hz grid."""
RMS_WINDOW_S = 0.025
"""Window of the short-time RMS envelope."""
FFT_SIZE = 512
"""Spectral window (21 ms at 24 kHz)."""
GATE_BELOW_PEAK_DB = 36.0
"""The noise gate sits at most this far below the robust peak level."""
GATE_ABOVE_FLOOR_DB = 8.0
"""…and at least this far above the noise floor (the quiet 10th percentile)."""
SILENT_PEAK_RMS = 1e-4
"""Audio whose robust peak RMS is below this (−80 dBFS) is treated as silence throughout."""
JAW_AT_FULL_LOUDNESS = 0.85
"""Raw jaw opening at the loudest sounds (same scale as the viseme table's open vowels)."""
VOICED_LOUDNESS = 0.12
"""Loudness above which a hop counts as voiced."""
DIP_MIN_S, DIP_MAX_S = 0.02, 0.22
"""Energy dips of this length between voiced stretches are read as lip closures."""
DIP_CLOSED = 0.9
"""Lips-closed value for such a dip (not 1: some dips are tongue stops, not bilabials)."""
CENTROID_BAND_HZ = (100.0, 6000.0)
LOW_BAND_HZ = 900.0
_FIELD = "speech.audio"
_ANALYSIS_CHUNK = 2048  # STFT frames per batch, to keep peak memory small on a 45 s track


def _check_audio(audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    arr = np.asarray(audio)
    if arr.ndim != 1:
        raise StageInputError(_FIELD, f"audio must be mono (1-D), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise StageInputError(_FIELD, f"audio must be float samples in [-1, 1], got {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise StageInputError(_FIELD, "audio contains NaN or infinite samples")
    if sample_rate_hz <= 0:
        raise StageInputError("speech.sample_rate_hz", f"must be positive, got {sample_rate_hz}")
    return arr.astype(np.float64, copy=False)


def _frames(audio: np.ndarray, centres: np.ndarray, size: int) -> np.ndarray:
    """(len(centres), size) windows of zero-padded audio centred on sample indices `centres`."""
    half = size // 2
    # Pad past the end too: the video may run longer than the audio (that part is silence).
    tail = max(size, int(centres.max(initial=0)) + size - audio.size)
    padded = np.pad(audio, (half, tail))
    windows = np.lib.stride_tricks.sliding_window_view(padded, size)
    return windows[centres]


def short_time_rms(audio: np.ndarray, sample_rate_hz: int, n_hops: int) -> np.ndarray:
    """RMS over RMS_WINDOW_S centred on each hop time (i · HOP_S), via a running sum of squares."""
    window = max(1, int(round(RMS_WINDOW_S * sample_rate_hz)))
    centres = np.round(np.arange(n_hops) * HOP_S * sample_rate_hz).astype(np.int64)
    csum = np.concatenate([[0.0], np.cumsum(audio * audio)])
    lo = np.clip(centres - window // 2, 0, audio.size)
    hi = np.clip(centres + window - window // 2, 0, audio.size)
    return np.sqrt(np.maximum(csum[hi] - csum[lo], 0.0) / window)


def perceived_loudness(rms: np.ndarray) -> np.ndarray:
    """0 … 1 loudness: sone-like (halves every 10 dB below the robust peak), zero at the noise gate.

    The gate adapts to the recording: between GATE_ABOVE_FLOOR_DB over the floor and
    GATE_BELOW_PEAK_DB under the peak, so breath and hiss do not move the jaw.
    """
    peak_rms = float(np.percentile(rms, 98)) if rms.size else 0.0
    if peak_rms < SILENT_PEAK_RMS:
        return np.zeros_like(rms)
    level_db = 20.0 * np.log10(np.maximum(rms, 1e-12))
    peak_db = 20.0 * np.log10(peak_rms)
    floor_db = float(np.percentile(level_db, 10))
    gate_db = min(max(floor_db + GATE_ABOVE_FLOOR_DB, peak_db - GATE_BELOW_PEAK_DB), peak_db - 12.0)
    sone = 2.0 ** ((level_db - peak_db) / 10.0)
    sone_gate = 2.0 ** ((gate_db - peak_db) / 10.0)
    return np.clip((sone - sone_gate) / (1.0 - sone_gate), 0.0, 1.0)


def spectral_shape(audio: np.ndarray, sample_rate_hz: int, n_hops: int) -> tuple[np.ndarray, np.ndarray]:
    """Per hop: spectral centroid (Hz, within CENTROID_BAND_HZ) and the share of energy below LOW_BAND_HZ."""
    centres = np.round(np.arange(n_hops) * HOP_S * sample_rate_hz).astype(np.int64)
    freqs_hz = np.fft.rfftfreq(FFT_SIZE, 1.0 / sample_rate_hz)
    band = (freqs_hz >= CENTROID_BAND_HZ[0]) & (freqs_hz <= CENTROID_BAND_HZ[1])
    low = band & (freqs_hz < LOW_BAND_HZ)
    window = np.hanning(FFT_SIZE)
    centroid_hz = np.zeros(n_hops)
    low_ratio = np.zeros(n_hops)
    for lo in range(0, n_hops, _ANALYSIS_CHUNK):  # batches of frames, not a loop per frame
        frames = _frames(audio, centres[lo:lo + _ANALYSIS_CHUNK], FFT_SIZE) * window
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        band_power = power[:, band]
        total = band_power.sum(axis=1) + 1e-12
        centroid_hz[lo:lo + _ANALYSIS_CHUNK] = band_power @ freqs_hz[band] / total
        low_ratio[lo:lo + _ANALYSIS_CHUNK] = power[:, low].sum(axis=1) / total
    return centroid_hz, low_ratio


def _lip_shape(centroid_hz: np.ndarray, low_ratio: np.ndarray, voiced: np.ndarray,
               loudness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lip width and round from spectral shape, relative to this speaker's voiced median.

    A bright spectrum (high centroid: high F2, as in "ee") spreads the lips; a dark one with most
    energy low (low F2, as in "oo") rounds them. Unvoiced hops get the rest shape.
    """
    if voiced.sum() < 5:
        return np.zeros_like(centroid_hz), np.zeros_like(centroid_hz)
    log_c = np.log(np.maximum(centroid_hz, 1.0))
    med = np.median(log_c[voiced])
    spread = 1.4826 * np.median(np.abs(log_c[voiced] - med)) + 1e-3  # robust σ (MAD)
    brightness = np.clip((log_c - med) / spread, -3.0, 3.0)
    low_med = np.median(low_ratio[voiced])
    low_spread = 1.4826 * np.median(np.abs(low_ratio[voiced] - low_med)) + 1e-3
    darkness = np.clip((low_ratio - low_med) / low_spread, -3.0, 3.0)
    presence = np.where(voiced, np.sqrt(loudness), 0.0)  # fade the shape with the voice
    width = 0.35 * np.tanh(brightness) * presence
    round_ = np.clip(0.35 * np.tanh(0.5 * (darkness - brightness)), 0.0, None) * presence
    return width, round_


def _dip_closures(voiced: np.ndarray) -> np.ndarray:
    """1 on unvoiced runs of DIP_MIN_S…DIP_MAX_S with voice on both sides, else 0."""
    change = np.flatnonzero(np.diff(voiced.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [voiced.size]])
    closures = np.zeros(voiced.size)
    for start, end in zip(bounds[:-1], bounds[1:]):  # one iteration per voiced/unvoiced run
        length_s = (end - start) * HOP_S
        between_voice = start > 0 and end < voiced.size and not voiced[start]
        if between_voice and DIP_MIN_S <= length_s <= DIP_MAX_S:
            closures[start:end] = 1.0
    return closures


def audio_mouth_tracks(audio: np.ndarray, sample_rate_hz: int, duration_s: float) -> MouthTracks:
    """Mouth curves and speech cues from audio alone, on a 1/HOP_S grid covering duration_s."""
    samples = _check_audio(audio, sample_rate_hz)
    rate_hz = 1.0 / HOP_S
    n_hops = int(math.ceil(duration_s * rate_hz)) + 1
    loudness = perceived_loudness(short_time_rms(samples, sample_rate_hz, n_hops))
    voiced = loudness > VOICED_LOUDNESS
    centroid_hz, low_ratio = spectral_shape(samples, sample_rate_hz, n_hops)
    width, round_ = _lip_shape(centroid_hz, low_ratio, voiced, loudness)
    dips = _dip_closures(voiced)
    # Long silences relax to the rest shape; short dips press the lips.
    silence = gaussian_smooth((~voiced).astype(np.float64), 0.05 * rate_hz)
    closed_target = np.maximum(DIP_CLOSED * dips, REST.closed * silence * (1.0 - dips))

    jaw = gaussian_smooth(JAW_AT_FULL_LOUDNESS * loudness * (1.0 - dips), JAW_SIGMA_S * rate_hz)
    width = gaussian_smooth(width, LIP_SIGMA_S * rate_hz)
    round_ = gaussian_smooth(round_, LIP_SIGMA_S * rate_hz)
    closed = gaussian_smooth(closed_target, CLOSED_SIGMA_S * rate_hz)
    activity = np.clip(gaussian_smooth(voiced.astype(np.float64), ACTIVITY_SIGMA_S * rate_hz), 0.0, 1.0)
    emphasis_s, strength = _onsets(loudness, rate_hz)
    return MouthTracks(rate_hz, jaw, width, round_, closed, activity, emphasis_s, strength)


def _onsets(loudness: np.ndarray, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Emphasis candidates: strong rises of loudness (syllable onsets), strongest first."""
    smooth = gaussian_smooth(loudness, 0.03 * rate_hz)
    rise = np.clip(np.gradient(smooth) * rate_hz, 0.0, None)  # loudness per second
    if rise.max() <= 0.0:
        return np.zeros(0), np.zeros(0)
    is_peak = (rise[1:-1] > rise[:-2]) & (rise[1:-1] >= rise[2:]) & (rise[1:-1] > 0.3 * rise.max())
    peaks = np.flatnonzero(is_peak) + 1
    return select_emphasis(peaks / rate_hz, rise[peaks] / rise.max())
