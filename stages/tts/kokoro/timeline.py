"""From a model call's per-token durations to phoneme spans, silence trimming, and the
assembled speech track.

Kokoro's decoder emits SAMPLES_PER_FRAME samples for every duration frame, so token k of a
call covers samples [600·c[k], 600·c[k+1]) where c is the cumulative sum of the durations
(pads included): the timeline is exact at the model's own 25 ms resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stages.tts.kokoro.tokens import Unit

SAMPLES_PER_FRAME = 600
"""Audio samples per duration frame at 24 kHz (25 ms)."""

TRIM_FLOOR_DB = -45.0
"""A 10 ms window quieter than this (re the call's loudest window) counts as silence."""
TRIM_WINDOW_S = 0.010
LEAD_MARGIN_S = 0.02
"""Kept before the first loud window (a plosive's closure, a soft onset)."""
TAIL_MARGIN_S = 0.05
"""Kept after the last loud window (a fading vowel, a final fricative)."""


@dataclass(frozen=True)
class Span:
    """A phoneme's symbol and sample range within a call's audio.

    `before_pause` marks the last phoneme of a phrase (punctuation or the call's end follows).
    """

    symbol: str
    start: int
    end: int
    before_pause: bool = False


def unit_spans(units: Sequence[Unit], durations: np.ndarray, n_samples: int) -> list[Span]:
    """Sample spans of the spoken units of one call.

    `durations` has one count per token with the pads (len = tokens + 2). When the counts do
    not explain the audio length exactly (an export with another frame size), the spans are
    scaled to fit rather than drift.
    """
    lengths = np.array([len(u.tokens) for u in units], dtype=np.int64)
    if durations.shape != (lengths.sum() + 2,):
        raise ValueError(f"{len(durations)} durations for {lengths.sum()} tokens + 2 pads")
    edges = np.concatenate([[0], np.cumsum(durations)]).astype(np.float64)
    total = edges[-1] * SAMPLES_PER_FRAME
    scale = SAMPLES_PER_FRAME if total == n_samples or total == 0 else n_samples / edges[-1]
    # Token index (within the padded call) where each unit starts and ends: pad 0 comes first.
    first = 1 + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    last = first + lengths
    starts = np.round(edges[first] * scale).astype(np.int64)
    ends = np.round(edges[last] * scale).astype(np.int64)
    spans = []
    for i, (unit, s, e) in enumerate(zip(units, starts, ends)):
        if unit.spoken and e > s:
            follower = units[i + 1] if i + 1 < len(units) else None
            phrase_end = follower is None or (not follower.spoken and follower.tokens.strip() != "")
            spans.append(Span(unit.symbol, int(s), int(e), phrase_end))
    return spans


def advance_spans(spans: Sequence[Span], advance_samples: int) -> list[Span]:
    """Spans moved `advance_samples` earlier (not before sample 0), e.g. to calibrate timing."""
    moved = []
    for span in spans:
        start, end = max(0, span.start - advance_samples), max(0, span.end - advance_samples)
        if end > start:
            moved.append(Span(span.symbol, start, end, span.before_pause))
    return moved


def _window_energy(audio: np.ndarray, window: int) -> np.ndarray:
    n_windows = len(audio) // window
    return np.square(audio[: n_windows * window].astype(np.float64)).reshape(n_windows, window).mean(axis=1)


def tighten_phrase_ends(audio: np.ndarray, spans: Sequence[Span], sample_rate_hz: int) -> list[Span]:
    """End each phrase-final phoneme where its sound ends.

    Kokoro gives the phoneme before a pause the pause's length as well (a sentence's last
    vowel may "last" half a second of silence), which would hold the mouth open in silence.
    Such a span is cut after its last window above TRIM_FLOOR_DB, plus TAIL_MARGIN_S; it
    keeps at least one duration frame.
    """
    window = max(1, int(round(TRIM_WINDOW_S * sample_rate_hz)))
    energy = _window_energy(audio, window)
    if energy.size == 0 or energy.max() <= 0:
        return list(spans)
    loud = energy >= energy.max() * 10 ** (TRIM_FLOOR_DB / 10)
    margin = int(TAIL_MARGIN_S * sample_rate_hz)
    tightened = []
    for span in spans:
        if span.before_pause:
            first_w, last_w = span.start // window, min(len(loud), -(-span.end // window))
            inside = np.flatnonzero(loud[first_w:last_w])
            sound_end = (first_w + int(inside[-1]) + 1) * window + margin if inside.size else span.start
            end = int(np.clip(sound_end, span.start + SAMPLES_PER_FRAME, span.end))
            span = Span(span.symbol, span.start, max(span.start + 1, min(end, span.end)), True)
        tightened.append(span)
    return tightened


def speech_bounds(audio: np.ndarray, spans: Sequence[Span], sample_rate_hz: int) -> tuple[int, int]:
    """[start, stop) of `audio` to keep: the loud part plus margins, never cutting a phoneme span."""
    window = max(1, int(round(TRIM_WINDOW_S * sample_rate_hz)))
    energy = _window_energy(audio, window)
    if energy.size == 0:
        return 0, len(audio)
    peak = energy.max()
    if peak <= 0:
        loud_start, loud_stop = 0, len(audio)
    else:
        loud = np.flatnonzero(energy >= peak * 10 ** (TRIM_FLOOR_DB / 10))
        loud_start = int(loud[0]) * window - int(LEAD_MARGIN_S * sample_rate_hz)
        loud_stop = (int(loud[-1]) + 1) * window + int(TAIL_MARGIN_S * sample_rate_hz)
    if spans:
        loud_start = min(loud_start, spans[0].start)
        loud_stop = max(loud_stop, spans[-1].end)
    return max(0, loud_start), min(len(audio), loud_stop)


@dataclass(frozen=True)
class Assembled:
    """The speech track and its phoneme timeline in samples (parallel arrays)."""

    audio: np.ndarray
    symbols: tuple[str, ...]
    starts: np.ndarray
    ends: np.ndarray


def assemble(pieces: Sequence[tuple[np.ndarray, Sequence[Span], int]], lead_in: int) -> Assembled:
    """Concatenate (trimmed audio, spans in its samples, silence after it) pieces into one track.

    `lead_in` samples of silence come first, so the first sound does not start on sample 0.
    """
    total = lead_in + sum(len(audio) + pause for audio, _, pause in pieces)
    out = np.zeros(total, dtype=np.float32)
    symbols: list[str] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    offset = lead_in
    for audio, spans, pause in pieces:
        out[offset : offset + len(audio)] = audio
        symbols.extend(s.symbol for s in spans)
        starts.append(offset + np.array([s.start for s in spans], dtype=np.int64))
        ends.append(offset + np.array([s.end for s in spans], dtype=np.int64))
        offset += len(audio) + pause
    empty = np.zeros(0, dtype=np.int64)
    return Assembled(out, tuple(symbols), np.concatenate(starts) if starts else empty,
                     np.concatenate(ends) if ends else empty)


def clip_spans(spans: Sequence[Span], start: int, stop: int) -> list[Span]:
    """Spans shifted to a trimmed call that keeps samples [start, stop), clipped to it."""
    clipped = []
    for span in spans:
        s, e = max(span.start, start) - start, min(span.end, stop) - start
        if e > s:
            clipped.append(Span(span.symbol, s, e, span.before_pause))
    return clipped
