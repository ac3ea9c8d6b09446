"""Mouth curves from the audio alone, for speech that comes without a phoneme timeline.

Loudness drives the jaw, the formants (LPC spectral envelope peaks) drive the lips, and brief
murmur-only dips between voiced stretches (the sound of shut lips: m, b, p) close the lips. Every
feature is centred on its analysis window, so the curves neither lead nor lag the sound; the
planner adds the lead.
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
"""Lip-closure candidates must last this long (a stop closure or a short nasal)."""
CLOSURE_CONTEXT_S = 0.08
"""A closure is a dip relative to the loudest hop within this distance."""
DIP_DEPTH = 0.6
"""…below this fraction of that local peak…"""
VOICED_NEIGHBOUR_LOUDNESS = 0.3
"""…which must itself be voiced speech (so pauses and breaths do not count)…"""
MURMUR_BAND_HZ, HIGH_BAND_HZ = (50.0, 400.0), (3000.0, 8000.0)
MURMUR_SHARE_MIN, HIGH_SHARE_MAX = 0.6, 0.005
"""…with most energy in the murmur band and almost none in the high band. On espeak-ng speech
this finds ≈45 % of bilabial time at ≈42 % precision (energy dips alone: 8 % at 5 %)."""
SHARE_FFT_SIZE = 512
DIP_CLOSED = 0.9
"""Lips-closed value for a detected closure (not 1: the detector is a guess, not a timeline)."""
FORMANT_RATE_HZ = 12_000
"""Formants are estimated on audio decimated to about this rate."""
FORMANT_WINDOW_S = 0.03
LPC_ORDER = 14
LPC_LAG_WINDOW_HZ = 60.0
"""Gaussian lag window: smooths the LPC envelope over about this bandwidth."""
LPC_NOISE_FLOOR = 1e-3
"""White-noise correction (−30 dB) added to the zero-lag autocorrelation."""
FORMANT_FFT_SIZE = 1024
FORMANT_BAND_HZ = (200.0, 3200.0)
"""Envelope peaks in this band are F1, F2 candidates."""
MERGED_FORMANT_MAX_HZ = 1100.0
"""A lone envelope peak below this is F1 and F2 merged (a back rounded vowel)."""
FORMANT_HOP_STRIDE = 2
"""Formants every 2 hops (10 ms)."""
LIP_WIDTH_GAIN, LIP_ROUND_GAIN = 0.65, 0.9
"""Lip excursion at a strongly front / back vowel (viseme-table scale)."""
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


def _decimate(audio: np.ndarray, sample_rate_hz: int) -> tuple[np.ndarray, int]:
    """Audio brought down to about FORMANT_RATE_HZ by block averaging (formants live below 3.5 kHz)."""
    factor = max(1, int(sample_rate_hz // FORMANT_RATE_HZ))
    usable = (audio.size // factor) * factor
    return audio[:usable].reshape(-1, factor).mean(axis=1), sample_rate_hz // factor


def lpc_envelopes(frames: np.ndarray, order: int, n_fft: int, rate_hz: float) -> np.ndarray:
    """LPC spectral envelopes (power, n_fft//2 + 1 bins) of windowed `frames`, one per row.

    Autocorrelation method with Levinson–Durbin, vectorised across frames (the loop runs over
    the model order only). A lag window and a white-noise floor (as in speech coders) keep the
    model from locking onto single harmonics of a steady voice, which would make F2 jump.
    """
    spectrum = np.fft.rfft(frames, 2 * frames.shape[1], axis=1)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, : order + 1]
    lags = np.arange(order + 1)
    autocorr = autocorr * np.exp(-0.5 * (2.0 * np.pi * LPC_LAG_WINDOW_HZ * lags / rate_hz) ** 2)
    autocorr[:, 0] = autocorr[:, 0] * (1.0 + LPC_NOISE_FLOOR) + 1e-12
    coeffs = np.zeros((frames.shape[0], order + 1))
    coeffs[:, 0] = 1.0
    error = autocorr[:, 0].copy()
    for i in range(1, order + 1):
        reflection = -np.einsum("fj,fj->f", coeffs[:, :i], autocorr[:, i:0:-1]) / error
        coeffs[:, 1:i + 1] = coeffs[:, 1:i + 1] + reflection[:, None] * coeffs[:, i - 1::-1][:, :i]
        error = error * (1.0 - reflection**2)
    return 1.0 / np.maximum(np.abs(np.fft.rfft(coeffs, n_fft, axis=1)) ** 2, 1e-12)


def formant_tracks(audio: np.ndarray, sample_rate_hz: int, n_hops: int) -> tuple[np.ndarray, np.ndarray]:
    """First two formants (Hz) at each hop, NaN where the envelope shows fewer than two peaks.

    F2 is the cue for the lips: high in spread vowels ("ee"), low in rounded ones ("oo").
    Estimated every FORMANT_HOP_STRIDE hops and interpolated, since lip shape moves slowly.
    """
    low_rate, rate_hz = _decimate(audio, sample_rate_hz)
    emphasised = np.append(low_rate[:1], low_rate[1:] - 0.95 * low_rate[:-1])  # flatten the tilt
    size = int(round(FORMANT_WINDOW_S * rate_hz))
    hops = np.arange(0, n_hops, FORMANT_HOP_STRIDE)
    centres = np.round(hops * HOP_S * rate_hz).astype(np.int64)
    freqs_hz = np.fft.rfftfreq(FORMANT_FFT_SIZE, 1.0 / rate_hz)[1:-1]
    in_band = (freqs_hz >= FORMANT_BAND_HZ[0]) & (freqs_hz <= FORMANT_BAND_HZ[1])
    window = np.hamming(size)
    f1_hz = np.full(hops.size, np.nan)
    f2_hz = np.full(hops.size, np.nan)
    for lo in range(0, hops.size, _ANALYSIS_CHUNK):  # batches of frames, not a loop per frame
        envelope = lpc_envelopes(_frames(emphasised, centres[lo:lo + _ANALYSIS_CHUNK], size) * window,
                                 LPC_ORDER, FORMANT_FFT_SIZE, rate_hz)
        is_peak = (envelope[:, 1:-1] > envelope[:, :-2]) & (envelope[:, 1:-1] >= envelope[:, 2:]) & in_band
        peaks_hz = np.sort(np.where(is_peak, freqs_hz, np.inf), axis=1)
        first, second = peaks_hz[:, 0], peaks_hz[:, 1]
        # Back rounded vowels (u, o) bring F1 and F2 so close that they merge into one low peak.
        merged = ~np.isfinite(second) & (first < MERGED_FORMANT_MAX_HZ)
        f1_hz[lo:lo + _ANALYSIS_CHUNK] = np.where(np.isfinite(first), first, np.nan)
        f2_hz[lo:lo + _ANALYSIS_CHUNK] = np.where(np.isfinite(second), second,
                                                  np.where(merged, first, np.nan))
    grid = np.arange(n_hops)
    return _interp_nan(grid, hops, f1_hz), _interp_nan(grid, hops, f2_hz)


def _interp_nan(grid: np.ndarray, at: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of `values` (sampled at `at`) onto `grid`, NaN where a neighbour is NaN."""
    filled = np.interp(grid, at, np.nan_to_num(values))
    missing = np.interp(grid, at, np.isnan(values).astype(np.float64)) > 0.0
    return np.where(missing, np.nan, filled)


def _robust_z(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(values − median) / robust σ over `mask`, clipped to ±3; 0 outside the mask."""
    med = np.median(values[mask])
    sigma = 1.4826 * np.median(np.abs(values[mask] - med)) + 1e-3  # MAD → σ
    return np.where(mask, np.clip((values - med) / sigma, -3.0, 3.0), 0.0)


def _lip_shape(f1_hz: np.ndarray, f2_hz: np.ndarray, voiced: np.ndarray,
               loudness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lip width and round from the formants, relative to this speaker's voiced median.

    A high F2 (as in "ee") spreads the lips; a low F2 with a low F1 (as in "oo") rounds them.
    Relative to the speaker, so a high or low voice is not read as permanently spread or rounded.
    Unvoiced hops get the rest shape.
    """
    usable = voiced & np.isfinite(f1_hz) & np.isfinite(f2_hz)
    if usable.sum() < 5:
        return np.zeros_like(loudness), np.zeros_like(loudness)
    front = _robust_z(np.log(np.nan_to_num(f2_hz, nan=1.0)), usable)
    openness = _robust_z(np.log(np.nan_to_num(f1_hz, nan=1.0)), usable)
    presence = np.where(usable, np.sqrt(loudness), 0.0)  # fade the shape with the voice
    width = LIP_WIDTH_GAIN * np.tanh(front) * presence
    round_ = LIP_ROUND_GAIN * np.clip(np.tanh(-(front + 0.3 * openness)), 0.0, None) * presence
    return width, round_


def band_shares(audio: np.ndarray, sample_rate_hz: int, n_hops: int) -> tuple[np.ndarray, np.ndarray]:
    """Per hop: the share of energy in the murmur band and in the high band (see *_BAND_HZ)."""
    centres = np.round(np.arange(n_hops) * HOP_S * sample_rate_hz).astype(np.int64)
    freqs_hz = np.fft.rfftfreq(SHARE_FFT_SIZE, 1.0 / sample_rate_hz)
    total_band = (freqs_hz >= MURMUR_BAND_HZ[0]) & (freqs_hz < HIGH_BAND_HZ[1])
    murmur_band = (freqs_hz >= MURMUR_BAND_HZ[0]) & (freqs_hz < MURMUR_BAND_HZ[1])
    high_band = (freqs_hz >= HIGH_BAND_HZ[0]) & (freqs_hz < HIGH_BAND_HZ[1])
    window = np.hanning(SHARE_FFT_SIZE)
    murmur = np.zeros(n_hops)
    high = np.zeros(n_hops)
    for lo in range(0, n_hops, _ANALYSIS_CHUNK):  # batches of frames, not a loop per frame
        power = np.abs(np.fft.rfft(_frames(audio, centres[lo:lo + _ANALYSIS_CHUNK], SHARE_FFT_SIZE)
                                   * window, axis=1)) ** 2
        total = power[:, total_band].sum(axis=1) + 1e-12
        murmur[lo:lo + _ANALYSIS_CHUNK] = power[:, murmur_band].sum(axis=1) / total
        high[lo:lo + _ANALYSIS_CHUNK] = power[:, high_band].sum(axis=1) / total
    return murmur, high


def _running_max(values: np.ndarray, radius: int) -> np.ndarray:
    padded = np.pad(values, radius, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1).max(axis=1)


def _closure_runs(loudness: np.ndarray, murmur_share: np.ndarray, high_share: np.ndarray) -> np.ndarray:
    """1 where the lips are probably pressed together, else 0.

    With the lips shut, sound escapes only through the nose or the throat wall: what is left is
    a quieter, low-frequency murmur (m) or a voice bar (b, p) with almost nothing above 3 kHz.
    So: a brief dip below the local loudness peak, murmur-dominated, no hiss (unlike s, f, sh),
    next to voiced speech, lasting DIP_MIN_S…DIP_MAX_S.
    """
    local_peak = _running_max(loudness, int(round(CLOSURE_CONTEXT_S / HOP_S)))
    candidate = ((loudness < DIP_DEPTH * local_peak) & (local_peak > VOICED_NEIGHBOUR_LOUDNESS)
                 & (murmur_share > MURMUR_SHARE_MIN) & (high_share < HIGH_SHARE_MAX))
    change = np.flatnonzero(np.diff(candidate.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [candidate.size]])
    closures = np.zeros(candidate.size)
    for start, end in zip(bounds[:-1], bounds[1:]):  # one iteration per run, not per hop
        if candidate[start] and DIP_MIN_S <= (end - start) * HOP_S <= DIP_MAX_S:
            closures[start:end] = 1.0
    return closures


def audio_mouth_tracks(audio: np.ndarray, sample_rate_hz: int, duration_s: float) -> MouthTracks:
    """Mouth curves and speech cues from audio alone, on a 1/HOP_S grid covering duration_s."""
    samples = _check_audio(audio, sample_rate_hz)
    rate_hz = 1.0 / HOP_S
    n_hops = int(math.ceil(duration_s * rate_hz)) + 1
    loudness = perceived_loudness(short_time_rms(samples, sample_rate_hz, n_hops))
    voiced = loudness > VOICED_LOUDNESS
    f1_hz, f2_hz = formant_tracks(samples, sample_rate_hz, n_hops)
    width, round_ = _lip_shape(f1_hz, f2_hz, voiced, loudness)
    dips = _closure_runs(loudness, *band_shares(samples, sample_rate_hz, n_hops))
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
    """Emphasis times: the strongest rises of loudness (syllable onsets), in time order."""
    smooth = gaussian_smooth(loudness, 0.03 * rate_hz)
    rise = np.clip(np.gradient(smooth) * rate_hz, 0.0, None)  # loudness per second
    if rise.max() <= 0.0:
        return np.zeros(0), np.zeros(0)
    is_peak = (rise[1:-1] > rise[:-2]) & (rise[1:-1] >= rise[2:]) & (rise[1:-1] > 0.3 * rise.max())
    peaks = np.flatnonzero(is_peak) + 1
    return select_emphasis(peaks / rate_hz, rise[peaks] / rise.max())
