"""Turn espeak's event stream into a phoneme timeline.

espeak emits a PHONEME event at the sample where each phoneme starts; pauses (between words,
at commas, at sentence ends) arrive as PHONEME events with an empty name. A phoneme therefore
lasts until the next PHONEME event of any kind, or the next end-of-clause event, or the end of
the audio. Pause events end the phoneme before them but are not phonemes themselves, so word
and sentence gaps stay gaps in the timeline.
"""

from __future__ import annotations

import numpy as np

from stages.tts._espeak_ffi import EVENT_END, EVENT_MSG_TERMINATED, EVENT_PHONEME
from stages.types import Phoneme

def _is_pause(symbol: str) -> bool:
    # Empty in IPA mode; espeak's own pause phonemes are named "_", "_:", "_!" ..., and no IPA
    # symbol starts with an underscore.
    stripped = symbol.strip()
    return not stripped or stripped.startswith("_")


def phonemes_from_events(
    event_types: np.ndarray,
    event_samples: np.ndarray,
    event_phonemes: tuple[str, ...],
    n_samples: int,
    sample_rate_hz: int,
) -> tuple[Phoneme, ...]:
    """Phonemes with start/end in seconds, monotonic, gap-preserving, clipped to the audio."""
    types = np.asarray(event_types)
    samples = np.clip(np.asarray(event_samples, dtype=np.int64), 0, n_samples)
    # Sort by time (stably, so same-sample events keep espeak's order) in case a buffer boundary
    # ever reorders them; espeak itself emits them in time order.
    order = np.argsort(samples, kind="stable")
    types, samples = types[order], samples[order]
    symbols = [event_phonemes[i] for i in order]

    is_boundary = (types == EVENT_PHONEME) | (types == EVENT_END) | (types == EVENT_MSG_TERMINATED)
    boundary_samples = samples[is_boundary]
    boundary_symbols = [s for s, b in zip(symbols, is_boundary) if b]
    # Each boundary ends where the next one (in emission order) begins, the last at the audio's
    # end. Two events at one sample give the first a zero-length span, dropped below, so spans
    # never overlap.
    ends_all = np.append(boundary_samples[1:], n_samples)
    is_phoneme = np.array([not _is_pause(s) for s in boundary_symbols], dtype=bool)
    is_phoneme &= types[is_boundary] == EVENT_PHONEME
    starts, ends = boundary_samples[is_phoneme], ends_all[is_phoneme]
    kept = ends > starts
    names = [s for s, phone in zip(boundary_symbols, is_phoneme) if phone]
    return tuple(
        Phoneme(symbol=name, start_s=float(start) / sample_rate_hz, end_s=float(end) / sample_rate_hz)
        for name, start, end, keep in zip(names, starts, ends, kept)
        if keep
    )
