"""Turning espeak's event stream into phoneme spans: pauses are gaps, spans never overlap."""

from __future__ import annotations

import numpy as np

from stages.tts._espeak_ffi import EVENT_END, EVENT_MSG_TERMINATED, EVENT_PHONEME, EVENT_WORD
from stages.tts._timeline import phonemes_from_events

RATE_HZ = 1000  # one sample per millisecond keeps the expected times readable


def _spans(events, n_samples):
    types, samples, names = zip(*events)
    phonemes = phonemes_from_events(np.array(types), np.array(samples), tuple(names), n_samples, RATE_HZ)
    return [(p.symbol, p.start_s, p.end_s) for p in phonemes]


def test_phoneme_lasts_until_the_next_event_and_pauses_are_gaps():
    """Each phoneme ends at the next phoneme or pause; the pause itself leaves a gap."""
    events = [
        (EVENT_WORD, 0, ""),
        (EVENT_PHONEME, 10, "h"),
        (EVENT_PHONEME, 60, "ˈaɪ"),
        (EVENT_PHONEME, 200, ""),  # word pause
        (EVENT_PHONEME, 300, "j"),
        (EVENT_PHONEME, 350, "uː"),
        (EVENT_END, 450, ""),
        (EVENT_MSG_TERMINATED, 500, ""),
    ]
    assert _spans(events, 500) == [
        ("h", 0.010, 0.060),
        ("ˈaɪ", 0.060, 0.200),
        ("j", 0.300, 0.350),
        ("uː", 0.350, 0.450),
    ]


def test_last_phoneme_ends_at_the_audio_end_without_end_event():
    """With no closing event, the final phoneme runs to the end of the audio."""
    assert _spans([(EVENT_PHONEME, 0, "a"), (EVENT_PHONEME, 40, "b")], 90) == [("a", 0.0, 0.04), ("b", 0.04, 0.09)]


def test_events_at_one_sample_do_not_overlap():
    """Two phonemes reported at the same sample keep only the one that has duration."""
    events = [(EVENT_PHONEME, 0, "t"), (EVENT_PHONEME, 0, "s"), (EVENT_PHONEME, 30, "a")]
    assert _spans(events, 100) == [("s", 0.0, 0.03), ("a", 0.03, 0.1)]


def test_events_past_the_audio_are_clipped():
    """An event stamped beyond the audio is clipped to its end, so no span leaves the audio."""
    spans = _spans([(EVENT_PHONEME, 0, "a"), (EVENT_PHONEME, 80, "b"), (EVENT_END, 130, "")], 100)
    assert spans == [("a", 0.0, 0.08), ("b", 0.08, 0.1)]


def test_underscore_pause_names_are_not_phonemes():
    """Pause phonemes named with underscores ('_', '_:') are dropped like empty names."""
    events = [(EVENT_PHONEME, 0, "a"), (EVENT_PHONEME, 50, "_:"), (EVENT_PHONEME, 90, "b")]
    assert _spans(events, 120) == [("a", 0.0, 0.05), ("b", 0.09, 0.12)]
