"""The lip-sync judge: lag recovery and sign, references from phonemes and audio, mouth measured on frames."""

from __future__ import annotations

import numpy as np
import pytest
from verify_talking import FPS, SAMPLE_RATE_HZ, open_mouth_frames, shifted

from stages.errors import StageInputError
from stages.types import Phoneme
from stages.verify.lipsync import (
    best_lag,
    envelope_reference,
    measure_av_offset,
    mouth_aperture,
    phoneme_reference,
    symbol_openness,
)


def _test_signal(n: int = 240, seed: int = 1) -> np.ndarray:
    """A smooth random syllable-rate curve."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal(n + 20)
    kernel = np.hanning(7)
    return np.convolve(raw, kernel / kernel.sum(), mode="same")[10 : 10 + n]


@pytest.mark.parametrize("shift", [-3, -2, -1, 0, 1, 2, 3])
def test_best_lag_recovers_known_shifts_with_the_documented_sign(shift: int) -> None:
    """A signal delayed by k frames against its reference gives lag +k (video late); advanced gives −k."""
    reference = _test_signal()
    result = best_lag(shifted(reference, shift), reference)
    assert result.lag_frames == shift
    assert result.correlation > 0.95 and abs(result.lag_refined_frames - shift) < 0.25
    assert len(result.curve) == 17 and result.lags[np.nanargmax(result.curve)] == shift


def test_best_lag_ignores_frames_without_a_face() -> None:
    """With a quarter of the signal NaN (face lost) the shift is still found exactly."""
    reference = _test_signal(seed=4)
    signal = shifted(reference, 2)
    signal[np.random.default_rng(0).random(len(signal)) < 0.25] = np.nan
    assert best_lag(signal, reference).lag_frames == 2


def test_best_lag_refuses_when_nothing_can_be_correlated() -> None:
    """An all-NaN signal, a constant signal, or mismatched lengths raise StageInputError."""
    reference = _test_signal()
    for signal in (np.full(240, np.nan), np.ones(240)):
        with pytest.raises(StageInputError, match="cannot correlate"):
            best_lag(signal, reference)
    with pytest.raises(StageInputError):
        best_lag(reference[:100], reference)


def test_symbol_openness_ranks_open_vowels_over_vowels_over_approximants_over_consonants() -> None:
    """ɑː > diphthong aɪ > ə > i > l > t > f > p = m = pause = 0, stress and length marks ignored."""
    values = [symbol_openness(s) for s in ("ˈɑː", "ˈaɪ", "ə", "i", "l", "t", "f", "p")]
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)
    assert symbol_openness("m") == symbol_openness("b") == symbol_openness("") == symbol_openness("_") == 0.0
    assert symbol_openness("ˈæ") == symbol_openness("æ") and 0.9 <= symbol_openness("ˈaɪ") <= 1.1


def test_phoneme_reference_is_sampled_at_frame_centres() -> None:
    """A vowel covering frames 10–19 reads open there, a bilabial and the silence around it read ~0."""
    phonemes = [Phoneme("m", 8 / FPS, 10 / FPS), Phoneme("ˈɑː", 10 / FPS, 20 / FPS), Phoneme("p", 20 / FPS, 22 / FPS)]
    reference = phoneme_reference(phonemes, FPS, 40)
    assert reference.shape == (40,)
    assert np.all(reference[12:18] > 1.1) and np.all(reference[:6] == 0) and np.all(reference[24:] < 0.01)
    assert reference[9] < 0.5 < reference[10] and reference[19] > 0.5 > reference[20]
    # start_frame selects a later stretch of the same timeline
    assert np.allclose(phoneme_reference(phonemes, FPS, 20, start_frame=10), reference[10:30], atol=1e-6)


def test_phoneme_reference_rejects_reversed_times() -> None:
    """A phoneme ending before it starts raises StageInputError naming speech.phonemes."""
    with pytest.raises(StageInputError) as caught:
        phoneme_reference([Phoneme("a", 1.0, 0.5)], FPS, 30)
    assert caught.value.field == "speech.phonemes"


def test_envelope_reference_follows_loudness_per_frame() -> None:
    """A tone over frames 10–19 gives a high level exactly there and 0 (the floor) in the silence."""
    audio = np.zeros(SAMPLE_RATE_HZ * 2, np.float32)
    t_s = np.arange(SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ
    audio[10 * 1000 : 20 * 1000] = 0.5 * np.sin(2 * np.pi * 200 * t_s[:10_000])
    audio[30 * 1000 : 35 * 1000] = 0.05 * np.sin(2 * np.pi * 200 * t_s[:5000])
    level = envelope_reference(audio, SAMPLE_RATE_HZ, FPS, 48)
    assert np.all(level[10:20] == pytest.approx(50.0, abs=0.5))
    assert np.all(level[30:35] == pytest.approx(30.0, abs=0.5))  # 20 dB quieter
    assert np.all(level[:10] == 0) and np.all(level[20:30] == 0) and np.all(level[40:] == 0)


def test_mouth_aperture_tracks_a_real_face_and_is_nan_without_one(portrait, talk, in_sync_frames) -> None:
    """On a real portrait the measured aperture follows the jaw drop (r > 0.7); a faceless frame gives NaN."""
    frames = np.concatenate([in_sync_frames[:96], np.full((4, 512, 512, 3), 128, np.uint8)])
    aperture = mouth_aperture(frames)
    assert aperture.shape == (100,) and np.all(np.isfinite(aperture[:96])) and np.all(np.isnan(aperture[96:]))
    assert np.corrcoef(aperture[:96], talk[1][:96])[0, 1] > 0.7
    assert aperture[:96].min() >= 0 and aperture[:96].max() < 0.5  # a ratio to the eye span, not pixels


@pytest.mark.parametrize("video_late_frames", [2, -3])  # 0 is covered by the passing-slot test
def test_measure_av_offset_finds_the_planted_offset(portrait, talk, video_late_frames: int) -> None:
    """A mouth driven k frames after (or before) the sound is measured as lag k against both references."""
    speech, loudness = talk
    frames = open_mouth_frames(portrait, shifted(loudness, video_late_frames))
    offset = measure_av_offset(frames, speech.audio, speech.phonemes, fps=FPS, sample_rate_hz=SAMPLE_RATE_HZ)
    assert offset.envelope.lag_frames == video_late_frames, offset.envelope
    assert offset.phoneme.lag_frames == video_late_frames, offset.phoneme
    assert offset.lag_frames == video_late_frames and offset.reference == "envelope"
    assert offset.lag_ms == pytest.approx(video_late_frames * 1000 / FPS, abs=0.5 * 1000 / FPS)
    assert offset.face_ratio == 1.0 and offset.correlation > 0.5


def test_measure_av_offset_on_a_window_uses_the_whole_track_timeline(talk, in_sync_frames) -> None:
    """Frames 48–191 with start_frame=48 against the full audio and phonemes still measure lag 0."""
    speech, _ = talk
    offset = measure_av_offset(in_sync_frames[48:], speech.audio, speech.phonemes, start_frame=48)
    assert offset.n_frames == 144 and offset.lag_frames == 0 and offset.envelope.lag_frames == 0


def test_measure_av_offset_explains_a_faceless_video(talk) -> None:
    """Without any face the offset is None, with a note saying why, instead of a made-up number."""
    speech, _ = talk
    blank = np.full((48, 128, 128, 3), 90, np.uint8)
    offset = measure_av_offset(blank, speech.audio, speech.phonemes)
    assert offset.lag_frames is None and offset.face_ratio == 0.0
    assert offset.envelope is None and any("cannot correlate" in note for note in offset.notes)


@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.5])
def test_the_phoneme_reference_smooths_as_scipy_gaussian_filter1d(sigma: float) -> None:
    from scipy.ndimage import gaussian_filter1d

    from stages.verify.lipsync import smooth_gaussian

    steps = np.repeat(np.random.default_rng(3).uniform(0.0, 1.0, 40), 7)  # phoneme-like plateaus
    for values in (steps, steps[:3], np.array([0.2, 0.9])):
        np.testing.assert_allclose(smooth_gaussian(values, sigma), gaussian_filter1d(values, sigma, mode="nearest"),
                                   rtol=0, atol=1e-12)
