"""The audio-only path: mouth curves from a recording that comes without a phoneme timeline."""

from __future__ import annotations

import numpy as np
import pytest
from motion_speech import mouth_sound_lag, vowel_buzz

from stages.errors import StageInputError
from stages.motion import plan_motion
from stages.types import SAMPLE_RATE_HZ, Speech

FPS = 24
SR = SAMPLE_RATE_HZ


def _audio_plan(audio: np.ndarray, n_frames: int, preset: str = "neutral"):
    speech = Speech(np.asarray(audio, dtype=np.float32), (), voice="test", backend="wav")
    return plan_motion(speech, preset, seed=0, n_frames=n_frames, fps=FPS)


def _frame_rms(audio: np.ndarray, n_frames: int) -> np.ndarray:
    per_frame = SR // FPS
    return np.sqrt(np.mean(audio[: n_frames * per_frame].reshape(n_frames, per_frame) ** 2, axis=1))


def _am_tone(duration_s: float, seed: int = 0) -> np.ndarray:
    """A voice-like buzz, amplitude-modulated like syllables (2.5–5 Hz, irregular, with pauses)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * SR)) / SR
    rate_hz = 3.5 + 1.2 * np.sin(2 * np.pi * 0.13 * t + rng.uniform(0, 6))
    syllables = np.sin(np.pi * np.cumsum(rate_hz) / SR) ** 2
    phrases = (np.sin(2 * np.pi * 0.2 * t) > -0.6).astype(float)  # a pause every 5 s
    phrases = np.convolve(phrases, np.ones(1200) / 1200, mode="same")
    return 0.4 * vowel_buzz(t.size, 700.0, 1300.0) * syllables * phrases


def test_jaw_follows_amplitude_modulated_tone():
    """jaw_open tracks a syllable-rate AM envelope (r > 0.85), leading it by at most one frame."""
    audio = _am_tone(20.0)
    plan = _audio_plan(audio, 20 * FPS)
    envelope = _frame_rms(audio, plan.n_frames)
    best, offset, peak = mouth_sound_lag(plan.jaw_open, envelope)
    assert peak > 0.85
    assert best in (-1, 0) and -1.2 <= offset <= 0.2, offset
    assert plan.meta["source"] == "audio"


def test_silence_keeps_the_mouth_at_rest():
    """Digital silence, and the pauses of a track, leave the jaw shut and the lips neutral."""
    silent = _audio_plan(np.zeros(5 * SR), 5 * FPS)
    assert silent.jaw_open.max() == 0.0 and np.abs(silent.lip_width).max() == 0.0
    audio = np.r_[np.zeros(2 * SR), 0.3 * vowel_buzz(SR, 700.0, 1300.0), np.zeros(2 * SR)]
    plan = _audio_plan(audio, 5 * FPS)
    assert plan.jaw_open[: int(1.6 * FPS)].max() < 0.02 and plan.jaw_open[int(3.4 * FPS):].max() < 0.02
    assert plan.jaw_open[int(2.2 * FPS):int(2.8 * FPS)].min() > 0.4


def test_jaw_is_level_independent():
    """A quiet recording of the same speech moves the mouth almost the same (gain-normalised)."""
    audio = _am_tone(10.0, seed=1)
    loud = _audio_plan(audio, 10 * FPS)
    quiet = _audio_plan(0.05 * audio, 10 * FPS)
    np.testing.assert_allclose(quiet.jaw_open, loud.jaw_open, atol=0.02)


def _bursts_with_gaps(gap: np.ndarray, n_bursts: int = 8) -> tuple[np.ndarray, list[float]]:
    burst = 0.4 * vowel_buzz(int(0.25 * SR), 700.0, 1300.0)
    pieces, gap_centres_s, t = [np.zeros(SR // 2)], [], 0.5
    for _ in range(n_bursts):
        pieces += [burst, gap]
        t += burst.size / SR
        gap_centres_s.append(t + gap.size / SR / 2)
        t += gap.size / SR
    return np.concatenate(pieces + [np.zeros(SR // 2)]), gap_centres_s[:-1]


def test_murmur_dips_close_the_lips_but_hiss_does_not():
    """A brief low murmur between vowels (m, b) closes the lips; a hiss gap (s, f) does not."""
    n = int(0.08 * SR)
    murmur = 0.04 * np.sin(2 * np.pi * 120 * np.arange(n) / SR)
    hiss = 0.04 * np.random.default_rng(0).standard_normal(n)
    for gap, should_close in ((murmur, True), (hiss, False)):
        audio, centres_s = _bursts_with_gaps(gap)
        plan = _audio_plan(audio, int(np.ceil(audio.size / SR * FPS)))
        at_gaps = plan.lips_closed[np.round(np.array(centres_s) * FPS - 0.5).astype(int)]
        if should_close:
            assert at_gaps.min() > 0.6, at_gaps
        else:
            assert at_gaps.max() < 0.3, at_gaps


def test_formants_shape_the_lips():
    """An 'ee'-like vowel (high F2) spreads the lips; an 'oo'-like one (low F2) rounds them."""
    ee = 0.3 * vowel_buzz(int(0.4 * SR), 300.0, 2300.0)
    oo = 0.3 * vowel_buzz(int(0.4 * SR), 320.0, 800.0)
    mid = 0.3 * vowel_buzz(int(0.4 * SR), 600.0, 1500.0)
    gap = np.zeros(int(0.3 * SR))
    audio = np.concatenate([gap] + [ee, gap, oo, gap, mid, gap] * 3)
    plan = _audio_plan(audio, int(np.ceil(audio.size / SR * FPS)))
    cycle_s = 3 * (0.4 + 0.3)
    ee_frames = [int((0.5 + k * cycle_s) * FPS) for k in range(3)]
    oo_frames = [int((1.2 + k * cycle_s) * FPS) for k in range(3)]
    assert plan.lip_width[ee_frames].min() > 0.15 and plan.lip_width[oo_frames].max() < -0.1
    assert plan.lip_round[oo_frames].min() > 0.15 and plan.lip_round[ee_frames].max() < 0.05


def test_audio_path_agrees_with_phoneme_path(speech_45s, audio_only_45s):
    """On speech with a known timeline, the audio-only jaw and lips correlate with the timeline's."""
    from_phonemes = plan_motion(speech_45s, "neutral", seed=0, n_frames=1080)
    from_audio = plan_motion(audio_only_45s, "neutral", seed=0, n_frames=1080)
    for curve, floor in (("jaw_open", 0.5), ("lip_width", 0.35), ("lip_round", 0.35)):
        r = np.corrcoef(getattr(from_phonemes, curve), getattr(from_audio, curve))[0, 1]
        assert r > floor, (curve, r)


@pytest.mark.parametrize("audio", [np.zeros((2, 100), np.float32), np.array([0.0, np.nan], np.float32),
                                   np.zeros(100, np.int16)])
def test_bad_audio_names_the_field(audio):
    """Stereo, non-finite or integer audio is rejected as speech.audio."""
    with pytest.raises(StageInputError) as err:
        plan_motion(Speech(audio, (), "test", "wav"), "neutral", seed=0, n_frames=24)
    assert err.value.field == "speech.audio"
