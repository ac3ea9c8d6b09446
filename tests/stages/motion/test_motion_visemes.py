"""Mouth shapes from a phoneme timeline: visemes, coarticulation, closures and timing."""

from __future__ import annotations

import numpy as np
import pytest
from motion_speech import frame_coverage, is_vowel, mouth_sound_lag

from stages.errors import StageInputError
from stages.motion import plan_motion
from stages.types import Phoneme, Speech

FPS = 24


def _speech(spec: list[tuple[str, float, float]], duration_s: float = 4.0) -> Speech:
    phonemes = tuple(Phoneme(s, a, b) for s, a, b in spec)
    return Speech(np.zeros(int(duration_s * 24_000), np.float32), phonemes, "test", "hand-built")


def _plan(spec, duration_s: float = 4.0):
    return plan_motion(_speech(spec, duration_s), "neutral", seed=0, n_frames=int(duration_s * FPS), fps=FPS)


def _frames_in(start_s: float, end_s: float, n_frames: int) -> np.ndarray:
    """Frames whose display-window centre lies inside [start_s, end_s)."""
    centres = (np.arange(n_frames) + 0.5) / FPS
    return np.flatnonzero((centres >= start_s) & (centres < end_s))


def _vowel_peak(plan, start_s, end_s, curve="jaw_open"):
    return getattr(plan, curve)[_frames_in(start_s, end_s, plan.n_frames)].max()


def test_bilabials_close_the_lips_and_the_jaw(speech_45s):
    """During every p/b/m the lips are pressed (≥0.9) and the jaw nearly shut, on ≥1 frame each."""
    plan = plan_motion(speech_45s, "neutral", seed=0, n_frames=1080)
    bilabials = [p for p in speech_45s.phonemes if p.symbol in ("p", "b", "m")]
    assert len(bilabials) > 30
    for ph in bilabials:
        frames = _frames_in(ph.start_s, ph.end_s, plan.n_frames)
        if frames.size == 0:  # shorter than a frame: the closure still shows on the nearest one
            frames = np.array([int(round((ph.start_s + ph.end_s) / 2 * FPS - 0.5))])
        assert plan.lips_closed[frames].min() >= 0.9, ph
        assert plan.jaw_open[frames].max() <= 0.1, ph


def test_open_vowels_open_the_jaw_more_than_ee():
    """'ɑː', 'æ', 'aɪ' open the jaw clearly more than 'iː' in the same context."""
    peaks = {}
    for vowel in ("ɑː", "æ", "aɪ", "iː", "uː"):
        plan = _plan([("h", 0.5, 0.56), ("ˈ" + vowel, 0.56, 0.76), ("t", 0.76, 0.82)])
        peaks[vowel] = _vowel_peak(plan, 0.56, 0.76)
    for open_vowel in ("ɑː", "æ", "aɪ"):
        assert peaks[open_vowel] > peaks["iː"] + 0.2, peaks
    assert peaks["iː"] > 0.05  # the jaw still moves a little on a close vowel


def test_lip_shape_follows_vowel_quality():
    """'iː' spreads the lips, 'uː' and 'w' round them."""
    ee = _plan([("s", 0.5, 0.56), ("iː", 0.56, 0.76), ("t", 0.76, 0.82)])
    oo = _plan([("s", 0.5, 0.56), ("uː", 0.56, 0.76), ("t", 0.76, 0.82)])
    we = _plan([("w", 0.5, 0.6), ("ə", 0.6, 0.65), ("t", 0.65, 0.7)])
    assert _vowel_peak(ee, 0.56, 0.76, "lip_width") > 0.3
    assert _vowel_peak(oo, 0.56, 0.76, "lip_round") > 0.5
    assert oo.lip_width[_frames_in(0.56, 0.76, oo.n_frames)].min() < -0.2
    assert _vowel_peak(we, 0.5, 0.6, "lip_round") > 0.5


def test_coarticulation_rounds_h_before_oo():
    """In 'who' the lips are already rounded during the 'h' (it borrows the vowel's shape)."""
    who = _plan([("h", 0.5, 0.6), ("uː", 0.6, 0.8)])
    hat = _plan([("h", 0.5, 0.6), ("æ", 0.6, 0.8)])
    h_frames = _frames_in(0.54, 0.6, who.n_frames)
    assert who.lip_round[h_frames].mean() > 0.3
    assert hat.lip_round[h_frames].mean() < 0.05


def test_silence_relaxes_the_mouth_closed():
    """Long before and after speech the jaw is at rest (0) and the lips are neither spread nor round."""
    plan = _plan([("ˈɑː", 1.0, 1.3)])
    for frames in (_frames_in(0.0, 0.7, plan.n_frames), _frames_in(1.7, 4.0, plan.n_frames)):
        assert plan.jaw_open[frames].max() < 0.02
        assert np.abs(plan.lip_width[frames]).max() < 0.02 and plan.lip_round[frames].max() < 0.02
    assert plan.jaw_open.max() > 0.5


def test_mouth_leads_the_sound_by_at_most_one_frame(speech_45s):
    """jaw_open vs the timeline's vowel coverage peaks at lag 0 or −1 frames, sub-frame lead ≤ 1.2."""
    plan = plan_motion(speech_45s, "neutral", seed=0, n_frames=1080)
    vowels = [(p.start_s, p.end_s) for p in speech_45s.phonemes if is_vowel(p.symbol)]
    best, offset, peak = mouth_sound_lag(plan.jaw_open, frame_coverage(vowels, plan.n_frames, FPS))
    assert best in (-1, 0)
    assert -1.2 <= offset <= 0.2, offset  # negative = the mouth moves first; never after
    assert peak > 0.5


def test_unknown_symbols_and_clusters_do_not_fail():
    """Symbols outside the table (ʁ, ɔːɹ, ə̃, əl) still produce a plausible, finite mouth."""
    plan = _plan([("ʁ", 0.5, 0.56), ("ɔːɹ", 0.56, 0.8), ("ə̃", 0.8, 0.9), ("əl", 0.9, 1.0)])
    assert np.all(np.isfinite(plan.jaw_open)) and plan.jaw_open.max() > 0.2


def test_invalid_phoneme_span_names_the_field():
    """A phoneme ending before it starts is rejected as speech.phonemes."""
    with pytest.raises(StageInputError) as err:
        _plan([("a", 1.0, 0.5)])
    assert err.value.field == "speech.phonemes"
