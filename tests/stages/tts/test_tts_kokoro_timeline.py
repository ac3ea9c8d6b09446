"""Kokoro timeline arithmetic: token durations → phoneme spans, phrase-end tightening, trimming, assembly."""

from __future__ import annotations

import numpy as np

from stages.tts.kokoro.timeline import (
    SAMPLES_PER_FRAME,
    TAIL_MARGIN_S,
    Span,
    advance_spans,
    assemble,
    clip_spans,
    speech_bounds,
    tighten_phrase_ends,
    unit_spans,
)
from stages.tts.kokoro.tokens import SPACE, Unit

RATE_HZ = 24_000


def _tone(duration_s: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(duration_s * RATE_HZ)) / RATE_HZ
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_unit_spans_sum_token_frames_and_skip_pads_spaces_and_punctuation() -> None:
    """Each phoneme spans its tokens' frames × 600 samples after the leading pad; spaces and marks are gaps."""
    units = [Unit("h", "h"), Unit("ˈoʊ", "ˈO"), SPACE, Unit("aɪ", "I"), Unit("", ".")]
    durations = np.array([5, 2, 1, 3, 1, 4, 6, 2])  # pad, h, ˈ, O, space, I, ., pad
    spans = unit_spans(units, durations, int(durations.sum()) * SAMPLES_PER_FRAME)
    frames = [(s.symbol, s.start // SAMPLES_PER_FRAME, s.end // SAMPLES_PER_FRAME) for s in spans]
    assert frames == [("h", 5, 7), ("ˈoʊ", 7, 11), ("aɪ", 12, 16)]
    assert [s.before_pause for s in spans] == [False, False, True]


def test_unit_spans_scale_to_the_audio_when_frames_do_not_explain_it() -> None:
    """An export with another frame size still gets spans that end at the audio's end, not past it."""
    units = [Unit("a", "a"), Unit("b", "b")]
    spans = unit_spans(units, np.array([1, 2, 2, 1]), n_samples=3000)  # 6 frames in 3000 samples
    assert spans[-1].end == 2500 and spans[0].start == 500


def test_phrase_final_phoneme_ends_where_its_sound_ends() -> None:
    """A sentence-final vowel that the model stretched over 0.3 s of silence is cut just after the sound."""
    audio = np.concatenate([_tone(0.5), np.zeros(int(0.4 * RATE_HZ), np.float32)])
    spans = [Span("t", 0, 4800), Span("ˈɑː", 4800, 19200, before_pause=True)]  # 0.2–0.8 s
    tight = tighten_phrase_ends(audio, spans, RATE_HZ)
    assert tight[0] == spans[0]
    end_s = tight[1].end / RATE_HZ
    assert 0.5 <= end_s <= 0.5 + TAIL_MARGIN_S + 0.011


def test_speech_bounds_trim_silence_but_never_cut_a_phoneme() -> None:
    """Leading/trailing silence goes (small margins stay); a span reaching into the silence is kept whole."""
    audio = np.concatenate([np.zeros(RATE_HZ // 2, np.float32), _tone(1.0), np.zeros(RATE_HZ // 2, np.float32)])
    start, stop = speech_bounds(audio, [Span("a", 12000, 36000)], RATE_HZ)
    assert 0.47 * RATE_HZ <= start <= 0.5 * RATE_HZ and 1.5 * RATE_HZ <= stop <= 1.56 * RATE_HZ
    start, stop = speech_bounds(audio, [Span("a", 6000, 42000)], RATE_HZ)
    assert (start, stop) == (6000, 42000)


def test_clip_and_advance_keep_spans_inside_their_window() -> None:
    """Clipping shifts spans to the kept window and drops those outside; advancing never goes below 0."""
    spans = [Span("a", 100, 300), Span("b", 300, 900), Span("c", 900, 1000)]
    assert clip_spans(spans, 200, 950) == [Span("a", 0, 100), Span("b", 100, 700), Span("c", 700, 750)]
    assert advance_spans(spans, 150) == [Span("a", 0, 150), Span("b", 150, 750), Span("c", 750, 850)]


def test_assemble_places_pieces_with_pauses_and_offsets_their_spans() -> None:
    """Pieces follow the lead-in, each followed by its pause; spans move with their piece."""
    first, second = _tone(0.1), _tone(0.2)
    track = assemble([(first, [Span("a", 0, 2400)], 1200), (second, [Span("b", 100, 4800)], 0)], lead_in=600)
    assert len(track.audio) == 600 + 2400 + 1200 + 4800
    assert np.array_equal(track.audio[600:3000], first) and not track.audio[3000:4200].any()
    assert track.symbols == ("a", "b")
    assert track.starts.tolist() == [600, 4300] and track.ends.tolist() == [3000, 9000]
