"""espeak phonemes → Kokoro input symbols, keeping track of which symbols make which phoneme.

Kokoro v1.0 was trained on misaki's English inventory, not raw espeak IPA: the diphthongs are
single symbols (A = eɪ, I = aɪ, O = oʊ, W = aʊ, Y = ɔɪ, Q = British əʊ), the affricates are ʤ
and ʧ, the American flap is T, syllabic l/n are written ᵊl/ᵊn, and American English carries no
length marks (iː → i, ɜː → ɜɹ). The "kokoro-v1" token set converts espeak's output to that
inventory; "ipa" passes espeak's IPA through (for older Kokoro exports trained on it).

Every phoneme becomes one `Unit`: the IPA symbol the motion planner and lip-sync judge
understand (espeak's, stress mark included, e.g. "ˈoʊ"), and the Kokoro symbols that speak it
(e.g. "ˈO"). The model's per-token durations are summed per unit to time each phoneme.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TOKEN_SETS = ("kokoro-v1", "ipa")

_STRESS = "ˈˌ"
_LENGTH = "ː"
# Longest match first; applied to the phoneme with its stress mark removed.
_V1_SHARED = {
    "aɪ": "I", "aʊ": "W", "eɪ": "A", "ɔɪ": "Y", "dʒ": "ʤ", "tʃ": "ʧ", "əl": "ᵊl", "n̩": "ᵊn",
    "ʔ": "t", "ɐ": "ə", "r": "ɹ", "x": "k", "ç": "k", "ɬ": "l", "ʲ": "", "e": "A",
}
_V1_AMERICAN = {**_V1_SHARED, "oʊ": "O", "ɾ": "T", "ɚ": "əɹ", "ɜːɹ": "ɜɹ", "ɜː": "ɜɹ"}
_V1_BRITISH = {**_V1_SHARED, "əʊ": "Q", "eə": "ɛː"}


@dataclass(frozen=True)
class Unit:
    """One timeline element: a phoneme, a word space, or a punctuation pause.

    `symbol` is the IPA name for the timeline ("" for spaces and punctuation); `tokens` the
    Kokoro symbols fed to the model for it (every one of them in the vocabulary).
    """

    symbol: str
    tokens: str

    @property
    def spoken(self) -> bool:
        """True for a phoneme, False for a space or punctuation."""
        return bool(self.symbol)


SPACE = Unit("", " ")


def _substitute(core: str, table: Mapping[str, str]) -> str:
    keys = sorted(table, key=len, reverse=True)
    out, i = [], 0
    while i < len(core):
        for key in keys:
            if core.startswith(key, i):
                out.append(table[key])
                i += len(key)
                break
        else:
            out.append(core[i])
            i += 1
    return "".join(out)


def _kokoro_symbols(core: str, next_core: str, token_set: str, british: bool) -> str:
    if token_set == "ipa":
        return core
    converted = _substitute(core, _V1_BRITISH if british else _V1_AMERICAN)
    if converted.endswith("ɹ") and next_core.startswith(("ɹ", "r")):
        # "hurry" h ˈɜː ɹ i, "fire is" f ˈaɪɚ ɹ: espeak wrote the r out; do not say it twice.
        converted = converted[:-1]
    return converted if british else converted.replace(_LENGTH, "")


def _split_stress(phoneme: str) -> tuple[str, str]:
    stress = "".join(ch for ch in phoneme if ch in _STRESS)
    core = "".join(ch for ch in phoneme if ch not in _STRESS)
    return stress, unicodedata.normalize("NFC", core)


def word_units(word: Sequence[str], vocab: Mapping[str, int], token_set: str = "kokoro-v1",
               british: bool = False) -> list[Unit]:
    """Units for one word's espeak phonemes. Phonemes with no symbol in `vocab` are left out."""
    if token_set not in TOKEN_SETS:
        raise ValueError(f"unknown token set {token_set!r}; valid: {', '.join(TOKEN_SETS)}")
    parts = [_split_stress(p) for p in word]
    units = []
    for i, (stress, core) in enumerate(parts):
        next_core = parts[i + 1][1] if i + 1 < len(parts) else ""
        symbols = "".join(ch for ch in stress + _kokoro_symbols(core, next_core, token_set, british) if ch in vocab)
        if symbols.strip(_STRESS):
            units.append(Unit(stress + core, symbols))
    return units


def punctuation_unit(mark: str, vocab: Mapping[str, int]) -> Unit | None:
    """The unit for a clause's punctuation mark, or None when the vocabulary lacks it."""
    return Unit("", mark) if mark and all(ch in vocab for ch in mark) else None


def token_ids(units: Sequence[Unit], vocab: Mapping[str, int]) -> list[int]:
    """The model's input ids for `units` (pads not included)."""
    return [vocab[ch] for unit in units for ch in unit.tokens]
