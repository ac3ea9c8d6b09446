"""Mouth shapes from an IPA phoneme timeline, with coarticulation.

Each phoneme maps to a viseme target (jaw open, lip width, lip round, lips closed) and a dominance
per articulator. Targets are laid on a 1 kHz grid and blended by normalised Gaussian convolution
(dominance blending): a strongly articulated sound (a vowel's jaw, a "w"'s rounding) spreads into
weak neighbours ("h", "k"), which is what makes "who" rounded before the vowel starts. Bilabials
then override everything: lips pressed together over their whole span.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from stages.errors import StageInputError
from stages.motion.curves import gaussian_smooth, normalized_convolution
from stages.types import Phoneme

GRID_RATE_HZ = 1000.0
"""Time resolution of the viseme tracks before they are sampled at frame times."""

JAW_SIGMA_S = 0.028
"""Coarticulation kernel for the jaw (FWHM ≈ 66 ms)."""
LIP_SIGMA_S = 0.032
"""Coarticulation kernel for lip width/round (lips anticipate a little further than the jaw)."""
CLOSED_SIGMA_S = 0.020
"""Kernel for the blended lips-closed channel."""
CLOSURE_EDGE_SIGMA_S = 0.008
"""Edge softness of a bilabial closure: lips close within about one frame."""
CLOSURE_MARGIN_S = 0.015
"""A bilabial closure plateau extends this far past its phoneme span, so the span itself is ≈1."""
ANTICIPATION_S = 0.02
"""Articulators reach a sound's shape slightly before it is heard. Measured on espeak-ng speech,
the blended jaw otherwise trails the loudness envelope by 17–20 ms (its peaks sit late in the
vowel spans), while the audio-only path, built from that envelope, does not; shifting targets this
much earlier puts both paths in line with the sound."""
ACTIVITY_SIGMA_S = 0.4
"""Smoothing of the 'is speaking' indicator that scales head motion."""
EMPHASIS_MIN_GAP_S = 1.6
"""Emphasis nods are at least this far apart."""

_FIELD = "speech.phonemes"


@dataclass(frozen=True)
class Viseme:
    """Articulation target of one sound and how strongly it imposes itself on neighbours.

    jaw 0 … 1, width −1 (pursed) … +1 (spread), round 0 … 1, closed 0 … 1 (lips pressed).
    A dominance is a relative weight in the blend (1 = a typical vowel's jaw).
    """

    jaw: float
    width: float
    round: float
    closed: float
    jaw_dominance: float
    lip_dominance: float
    closed_dominance: float
    vowel: bool
    bilabial: bool = False


def _vowel(jaw: float, width: float, round_: float) -> Viseme:
    return Viseme(jaw, width, round_, 0.0, 1.0, 0.8, 0.6, vowel=True)


def _consonant(jaw: float, width: float, round_: float, jaw_dom: float, lip_dom: float,
               closed: float = 0.0, closed_dom: float = 0.5, bilabial: bool = False) -> Viseme:
    return Viseme(jaw, width, round_, closed, jaw_dom, lip_dom, closed_dom, vowel=False,
                  bilabial=bilabial)


_BILABIAL = _consonant(0.04, 0.0, 0.0, jaw_dom=1.5, lip_dom=0.2, closed=1.0, closed_dom=3.0,
                       bilabial=True)
_LABIODENTAL = _consonant(0.08, 0.05, 0.0, jaw_dom=1.0, lip_dom=0.4, closed=0.6, closed_dom=2.0)
_POSTALVEOLAR = _consonant(0.12, -0.3, 0.65, jaw_dom=0.6, lip_dom=1.2)
_ALVEOLAR = _consonant(0.15, 0.15, 0.0, jaw_dom=0.5, lip_dom=0.3)
_SIBILANT = _consonant(0.08, 0.35, 0.0, jaw_dom=0.7, lip_dom=0.5)
_VELAR = _consonant(0.25, 0.0, 0.0, jaw_dom=0.3, lip_dom=0.2)

VISEMES: dict[str, Viseme] = {
    # Open vowels: the jaw opens most.
    "a": _vowel(0.8, 0.25, 0.0), "ɑ": _vowel(0.8, 0.1, 0.05), "æ": _vowel(0.75, 0.4, 0.0),
    "ɒ": _vowel(0.75, 0.0, 0.35), "ɔ": _vowel(0.68, -0.1, 0.5), "ɶ": _vowel(0.75, 0.0, 0.3),
    # Mid and central vowels.
    "ʌ": _vowel(0.58, 0.1, 0.0), "ɐ": _vowel(0.5, 0.1, 0.0), "ɛ": _vowel(0.58, 0.35, 0.0),
    "œ": _vowel(0.55, -0.2, 0.45), "e": _vowel(0.45, 0.45, 0.0), "ø": _vowel(0.4, -0.3, 0.6),
    "ə": _vowel(0.35, 0.0, 0.0), "ɜ": _vowel(0.45, 0.0, 0.15), "ɚ": _vowel(0.35, -0.1, 0.35),
    "ɝ": _vowel(0.4, -0.1, 0.35), "ɘ": _vowel(0.35, 0.1, 0.0), "ɵ": _vowel(0.35, -0.2, 0.5),
    "ɞ": _vowel(0.5, -0.1, 0.35), "ɤ": _vowel(0.4, 0.1, 0.0), "o": _vowel(0.48, -0.4, 0.7),
    # Close vowels: spread (i, ɪ) or rounded (u, ʊ, y), jaw nearly closed.
    "ɪ": _vowel(0.3, 0.5, 0.0), "ᵻ": _vowel(0.3, 0.4, 0.0), "ɨ": _vowel(0.25, 0.3, 0.0),
    "i": _vowel(0.22, 0.7, 0.0), "y": _vowel(0.22, -0.3, 0.8), "ʏ": _vowel(0.28, -0.2, 0.65),
    "ʊ": _vowel(0.3, -0.4, 0.6), "u": _vowel(0.22, -0.6, 0.9), "ʉ": _vowel(0.22, -0.4, 0.75),
    "ɯ": _vowel(0.22, 0.3, 0.0), "ᵿ": _vowel(0.3, -0.3, 0.5),
    # Lips pressed: p, b, m.
    "p": _BILABIAL, "b": _BILABIAL, "m": _BILABIAL,
    # Lower lip to upper teeth.
    "f": _LABIODENTAL, "v": _LABIODENTAL, "ɱ": _LABIODENTAL,
    # Protruded, rounded lips.
    "ʃ": _POSTALVEOLAR, "ʒ": _POSTALVEOLAR, "tʃ": _POSTALVEOLAR, "dʒ": _POSTALVEOLAR,
    "w": _consonant(0.12, -0.6, 0.95, jaw_dom=0.6, lip_dom=2.0),
    "ʍ": _consonant(0.12, -0.6, 0.95, jaw_dom=0.6, lip_dom=2.0),
    "ɹ": _consonant(0.2, -0.2, 0.45, jaw_dom=0.5, lip_dom=0.8),
    "r": _consonant(0.2, -0.1, 0.3, jaw_dom=0.5, lip_dom=0.6),
    # Tongue tip and blade: jaw fairly closed, lips follow the neighbours.
    "t": _ALVEOLAR, "d": _ALVEOLAR, "n": _ALVEOLAR, "ɾ": _ALVEOLAR, "ts": _SIBILANT,
    "l": _consonant(0.25, 0.1, 0.0, jaw_dom=0.5, lip_dom=0.3),
    "ɫ": _consonant(0.25, 0.0, 0.1, jaw_dom=0.5, lip_dom=0.3),
    "s": _SIBILANT, "z": _SIBILANT,
    "θ": _consonant(0.15, 0.1, 0.0, jaw_dom=0.7, lip_dom=0.3),
    "ð": _consonant(0.15, 0.1, 0.0, jaw_dom=0.7, lip_dom=0.3),
    "j": _consonant(0.2, 0.5, 0.0, jaw_dom=0.5, lip_dom=0.6),
    # Back of the tongue and the glottis: barely visible, they take their neighbours' shape.
    "k": _VELAR, "ɡ": _VELAR, "g": _VELAR, "ŋ": _VELAR, "x": _VELAR, "ɣ": _VELAR, "c": _VELAR,
    "ɟ": _VELAR, "q": _VELAR, "χ": _VELAR, "ɲ": _VELAR,
    "h": _consonant(0.3, 0.0, 0.0, jaw_dom=0.15, lip_dom=0.1, closed_dom=0.1),
    "ɦ": _consonant(0.3, 0.0, 0.0, jaw_dom=0.15, lip_dom=0.1, closed_dom=0.1),
    "ʔ": _consonant(0.1, 0.0, 0.0, jaw_dom=0.2, lip_dom=0.1),
}

REST = _consonant(0.0, 0.0, 0.0, jaw_dom=0.6, lip_dom=0.4, closed=0.3, closed_dom=0.4)
"""Silence: jaw closed, lips relaxed and lightly together. Its weak dominance keeps a short
pause between words from snapping the mouth shut."""

SILENCE_SYMBOLS = frozenset({"", "_", "sil", "sp", "spn", "pau", "#", "|", "‖"})

_VOWEL_LETTERS = frozenset("aeiouyæɑɐɒɔəɘɚɛɜɝɞɤɪʊʌʏøœɵɶᵻᵿɨʉɯ")
_GENERIC_VOWEL = _vowel(0.45, 0.1, 0.1)
_GENERIC_CONSONANT = _consonant(0.2, 0.0, 0.0, jaw_dom=0.3, lip_dom=0.2)
_PRIMARY_STRESS = "ˈ"
_SECONDARY_STRESS = "ˌ"
# Marks that carry no mouth shape of their own: stress, length, ties, aspiration, palatalisation.
_DROPPED = frozenset("ˈˌːˑ.‿͡ʰʲʷˠˤ'-")
_STRESSED_JAW_GAIN = 1.12
_STRESSED_DOMINANCE_GAIN = 1.25


@lru_cache(maxsize=512)
def resolve_symbol(symbol: str) -> tuple[tuple[float, Viseme], ...]:
    """The viseme(s) of one phoneme symbol, as (fraction of its duration, viseme) pairs.

    Known symbols map directly; diphthongs and clusters ("aɪ", "oʊ", "ɔːɹ", "əl") are split into
    their parts, the first part of a diphthong holding a little longer. Stress and length marks are
    ignored here; an unknown symbol falls back to a generic vowel or consonant, never an error.
    """
    core = "".join(ch for ch in symbol if ch not in _DROPPED and not unicodedata.combining(ch))
    if core in VISEMES:
        return ((1.0, VISEMES[core]),)
    parts: list[Viseme] = []
    i = 0
    while i < len(core):
        for length in (2, 1):
            piece = core[i:i + length]
            if len(piece) == length and piece in VISEMES:
                parts.append(VISEMES[piece])
                i += length
                break
        else:
            i += 1  # a letter we have no shape for: skip it, keep the rest
    if not parts:
        generic = _GENERIC_VOWEL if any(ch in _VOWEL_LETTERS for ch in core) else _GENERIC_CONSONANT
        return ((1.0, generic),)
    if len(parts) == 1:
        return ((1.0, parts[0]),)
    # A diphthong dwells on its first target; the glide to the second is shorter.
    weights = np.array([1.3] + [1.0] * (len(parts) - 1))
    fractions = weights / weights.sum()
    return tuple((float(f), v) for f, v in zip(fractions, parts))


def is_silence(symbol: str) -> bool:
    """Whether a timeline symbol marks a pause rather than a sound."""
    return symbol.strip().lower() in SILENCE_SYMBOLS


@dataclass(frozen=True)
class MouthTracks:
    """Mouth curves and speech cues on a uniform grid (sample i at i / rate_hz seconds).

    jaw/width/round/closed are the raw (preset-independent) viseme curves; `activity` is a
    smoothed 0…1 "speaking now" indicator; emphases are stressed-syllable onsets with a strength
    in (0, 1].
    """

    rate_hz: float
    jaw: np.ndarray
    width: np.ndarray
    round: np.ndarray
    closed: np.ndarray
    activity: np.ndarray
    emphasis_s: np.ndarray
    emphasis_strength: np.ndarray

    def sample(self, times_s: np.ndarray) -> dict[str, np.ndarray]:
        """Linear interpolation of every grid curve at `times_s` (held at the ends)."""
        grid_s = np.arange(self.jaw.size) / self.rate_hz
        names = ("jaw", "width", "round", "closed", "activity")
        return {name: np.interp(times_s, grid_s, getattr(self, name)) for name in names}


def select_emphasis(onsets_s: np.ndarray, strengths: np.ndarray,
                    min_gap_s: float = EMPHASIS_MIN_GAP_S) -> tuple[np.ndarray, np.ndarray]:
    """Greedy pick of the strongest onsets at least `min_gap_s` apart, returned in time order."""
    chosen: list[int] = []
    for idx in np.argsort(-np.asarray(strengths), kind="stable"):
        if all(abs(onsets_s[idx] - onsets_s[j]) >= min_gap_s for j in chosen):
            chosen.append(int(idx))
    chosen.sort(key=lambda j: onsets_s[j])
    return np.asarray(onsets_s, dtype=np.float64)[chosen], np.asarray(strengths, dtype=np.float64)[chosen]


@dataclass(frozen=True)
class _Spans:
    starts_s: np.ndarray
    ends_s: np.ndarray
    visemes: tuple[Viseme, ...]
    stressed: np.ndarray  # bool, primary stress (vowels only)


def _check_phonemes(phonemes: Sequence[Phoneme]) -> list[Phoneme]:
    for i, ph in enumerate(phonemes):
        if not (math.isfinite(ph.start_s) and math.isfinite(ph.end_s)):
            raise StageInputError(_FIELD, f"phoneme {i} ({ph.symbol!r}) has a non-finite time", index=i)
        if ph.start_s < 0 or ph.end_s < ph.start_s:
            raise StageInputError(
                _FIELD, f"phoneme {i} ({ph.symbol!r}) has an invalid span {ph.start_s}–{ph.end_s} s",
                index=i,
            )
    return sorted(phonemes, key=lambda ph: ph.start_s)


def _expand(phonemes: Sequence[Phoneme]) -> _Spans:
    """Split each phoneme into its viseme parts and carry stress marks onto the next vowel."""
    starts, ends, visemes, stressed = [], [], [], []
    pending_stress = False
    for ph in phonemes:
        if is_silence(ph.symbol) or ph.end_s <= ph.start_s:
            continue
        pending_stress = pending_stress or _PRIMARY_STRESS in ph.symbol
        duration_s = ph.end_s - ph.start_s
        edge_s = ph.start_s
        for fraction, viseme in resolve_symbol(ph.symbol.strip()):
            starts.append(edge_s)
            edge_s += fraction * duration_s
            ends.append(edge_s)
            visemes.append(viseme)
            stressed.append(viseme.vowel and pending_stress)
            if viseme.vowel:
                pending_stress = False
    return _Spans(np.array(starts, dtype=np.float64), np.array(ends, dtype=np.float64),
                  tuple(visemes), np.array(stressed, dtype=bool))


def _target_arrays(spans: _Spans) -> tuple[np.ndarray, np.ndarray]:
    """(n_spans, 4) targets and dominances for jaw, width, round, closed."""
    targets = np.array([[v.jaw, v.width, v.round, v.closed] for v in spans.visemes]).reshape(-1, 4)
    dominance = np.array([[v.jaw_dominance, v.lip_dominance, v.lip_dominance, v.closed_dominance]
                          for v in spans.visemes]).reshape(-1, 4)
    # A stressed vowel opens wider and holds its shape against its neighbours.
    targets[spans.stressed, 0] = np.minimum(targets[spans.stressed, 0] * _STRESSED_JAW_GAIN, 1.0)
    dominance[spans.stressed, 0] *= _STRESSED_DOMINANCE_GAIN
    return targets, dominance


def _emphasis(spans: _Spans) -> tuple[np.ndarray, np.ndarray]:
    vowel = np.array([v.vowel for v in spans.visemes], dtype=bool)
    candidates = spans.stressed if spans.stressed.any() else vowel
    if not candidates.any():
        return np.zeros(0), np.zeros(0)
    durations_s = (spans.ends_s - spans.starts_s)[candidates]
    return select_emphasis(spans.starts_s[candidates], durations_s / durations_s.max())


def viseme_tracks(phonemes: Sequence[Phoneme], duration_s: float, min_closure_s: float) -> MouthTracks:
    """Coarticulated mouth curves for a phoneme timeline, on a GRID_RATE_HZ grid covering duration_s.

    Every bilabial (p, b, m) closes the lips to ≈1 over its span, for at least `min_closure_s`
    (so each one shows on at least one frame), and pulls the jaw nearly shut.
    """
    spans = _expand(_check_phonemes(phonemes))
    n_grid = int(math.ceil(duration_s * GRID_RATE_HZ)) + 1
    grid_s = np.arange(n_grid) / GRID_RATE_HZ
    targets, dominance = _target_arrays(spans)
    rest_target = np.array([REST.jaw, REST.width, REST.round, REST.closed])
    rest_dominance = np.array([REST.jaw_dominance, REST.lip_dominance, REST.lip_dominance,
                               REST.closed_dominance])

    # Which span covers each grid time (vectorised): the latest span starting at or before it,
    # looked up ANTICIPATION_S ahead so the mouth shapes a sound just before it is heard.
    # A rest pseudo-span at index 0 covers silence (and a timeline of nothing but pauses).
    targets = np.vstack([rest_target, targets])
    dominance = np.vstack([rest_dominance, dominance])
    lookup_s = grid_s + ANTICIPATION_S
    idx = np.searchsorted(spans.starts_s, lookup_s, side="right")  # 0 = before every span
    inside = idx > 0
    inside[inside] = lookup_s[inside] < spans.ends_s[idx[inside] - 1]
    idx = np.where(inside, idx, 0)
    grid_targets, grid_dominance = targets[idx].T, dominance[idx].T

    sigmas = np.array([JAW_SIGMA_S, LIP_SIGMA_S, LIP_SIGMA_S, CLOSED_SIGMA_S]) * GRID_RATE_HZ
    jaw, width, round_, closed = (
        normalized_convolution(grid_targets[c], grid_dominance[c], sigmas[c]) for c in range(4)
    )

    closure = _closure_plateau(spans, grid_s, min_closure_s)
    closed = np.maximum(closed, closure)
    jaw = jaw * (1.0 - 0.9 * closure)

    speaking = gaussian_smooth(inside.astype(np.float64), ACTIVITY_SIGMA_S * GRID_RATE_HZ)
    emphasis_s, strength = _emphasis(spans)
    return MouthTracks(GRID_RATE_HZ, jaw, width, round_, closed, np.clip(speaking, 0.0, 1.0),
                       emphasis_s, strength)


def _closure_plateau(spans: _Spans, grid_s: np.ndarray, min_closure_s: float) -> np.ndarray:
    """1 over each bilabial span, softened at the edges; 0 elsewhere.

    The plateau starts ANTICIPATION_S early (lips close before the stop is heard), extends
    CLOSURE_MARGIN_S past both ends so the span itself stays ≈1 after softening, and is at least
    `min_closure_s` long.
    """
    bilabial = np.array([v.bilabial for v in spans.visemes], dtype=bool)
    if not bilabial.any():
        return np.zeros_like(grid_s)
    starts = spans.starts_s[bilabial] - ANTICIPATION_S - CLOSURE_MARGIN_S
    ends = spans.ends_s[bilabial] + CLOSURE_MARGIN_S
    short = np.clip(min_closure_s - (ends - starts), 0.0, None)
    starts, ends = starts - 0.5 * short, ends + 0.5 * short
    # Mark each plateau on the grid by a +1/−1 difference array (no loop over grid samples).
    marks = np.zeros(grid_s.size + 1)
    lo = np.clip(np.round(starts * GRID_RATE_HZ).astype(int), 0, grid_s.size)
    hi = np.clip(np.round(ends * GRID_RATE_HZ).astype(int), 0, grid_s.size)
    np.add.at(marks, lo, 1.0)
    np.add.at(marks, hi, -1.0)
    plateau = (np.cumsum(marks)[:-1] > 0).astype(np.float64)
    return np.clip(gaussian_smooth(plateau, CLOSURE_EDGE_SIGMA_S * GRID_RATE_HZ), 0.0, 1.0)
