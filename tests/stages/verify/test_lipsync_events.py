"""The event judge: sound onsets found where speech starts, and the lips' opening timed against
them with the right sign and to a few milliseconds."""

from __future__ import annotations

import numpy as np

from stages.verify.lipsync import event_offsets, speech_onsets

RATE = 24_000
FPS = 25.0
BURSTS_S = np.array([0.5, 1.3, 2.1, 2.9, 3.7, 4.5, 5.3])
BURST_LEN_S = 0.3


def _speech() -> np.ndarray:
    """Bursts of a 1 kHz tone (10 ms fade-in) over faint noise: words after pauses."""
    t = np.arange(int(6.0 * RATE)) / RATE
    audio = np.random.default_rng(0).normal(0.0, 1e-4, t.size)
    for start in BURSTS_S:
        inside = (t >= start) & (t < start + BURST_LEN_S)
        fade = np.clip((t[inside] - start) / 0.01, 0.0, 1.0)
        audio[inside] += 0.3 * fade * np.sin(2 * np.pi * 1000.0 * t[inside])
    return audio


def _lip_gap(lead_s: float) -> np.ndarray:
    """A lip gap per frame (frame i at i/FPS) opening over 120 ms from `lead_s` after each burst
    starts (negative: before), held open through it, closing over 80 ms after."""
    t = np.arange(int(6.0 * FPS)) / FPS
    gap = np.zeros(t.size)
    for start in BURSTS_S:
        opening = np.clip((t - (start + lead_s)) / 0.12, 0.0, 1.0)
        closing = np.clip(1.0 - (t - (start + BURST_LEN_S)) / 0.08, 0.0, 1.0)
        gap = np.maximum(gap, np.minimum(opening, closing))
    return 0.02 + 0.3 * gap


def test_speech_onsets_are_found_where_each_word_starts_after_a_pause():
    """Every burst gives one onset within 12 ms of its start, marked as following a pause."""
    onsets, after_pause = speech_onsets(_speech(), RATE)
    assert len(onsets) == len(BURSTS_S)
    assert np.abs(onsets - BURSTS_S).max() < 0.012, onsets - BURSTS_S
    assert after_pause.all()


def test_lips_opening_first_read_negative_and_a_later_mouth_reads_that_much_later():
    """A mouth opening 60 ms before the sound reads Δ < 0 on every event; moved 40 ms later,
    the median Δ moves by 40 ms (± 6 ms: frames are 40 ms apart, the judge interpolates)."""
    audio = _speech()
    early = event_offsets(_lip_gap(-0.06), FPS, audio, RATE)
    later = event_offsets(_lip_gap(-0.02), FPS, audio, RATE)
    assert len(early.open_ms) == len(later.open_ms) == len(BURSTS_S)
    assert early.onsets == len(BURSTS_S)
    assert (early.open_ms < 0).all(), early.open_ms
    shift = np.median(later.open_ms) - np.median(early.open_ms)
    assert abs(shift - 40.0) < 6.0, shift
    assert (early.half_ms > early.open_ms).all()  # half-open comes after the lips part


def test_a_video_without_a_face_gives_no_events():
    """No lip gap on any frame: every onset is counted, none is paired."""
    result = event_offsets(np.full(int(6.0 * FPS), np.nan), FPS, _speech(), RATE)
    assert result.onsets == len(BURSTS_S)
    assert len(result.open_ms) == 0
