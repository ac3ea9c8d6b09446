"""English grapheme-to-phoneme through espeak-ng: IPA phonemes per word, boundaries exact.

Uses the libespeak-ng that `stages.tts._espeak_ffi` loads (never a system espeak), under that
module's lock. espeak_TextToPhonemes is asked for IPA with a separator character between
phonemes, so multi-letter phonemes ("aɪ", "dʒ", "ɑːɹ") arrive as one item and a stress mark
arrives attached to the vowel it stresses ("ˈoʊ").
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Sequence
from functools import lru_cache

from stages.tts import _espeak_ffi

_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
# A private-use code point as the phoneme separator: it can never be part of an IPA name.
_SEPARATOR = "\ue000"
_PHONEME_MODE = _PHONEMES_IPA | (ord(_SEPARATOR) << 8)
_STRESS = frozenset("ˈˌ")
# espeak marks words it reads with another language's rules as "(fr)word(en)"; drop the marks.
_LANGUAGE_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)?\)")

Word = tuple[str, ...]
"""The IPA phonemes of one word, e.g. ("h", "ə", "l", "ˈoʊ")."""


@lru_cache(maxsize=8)
def _espeak_voice(dialect: str) -> str:
    from stages.tts.espeak import EspeakBackend

    return EspeakBackend().resolve_voice(dialect)[1]


def _parse(output: str) -> list[Word]:
    words = []
    for chunk in _LANGUAGE_SWITCH.sub("", output).split():
        items = [item for item in chunk.split(_SEPARATOR) if item]
        phonemes: list[str] = []
        carry = ""
        for item in items:
            if all(ch in _STRESS for ch in item):
                carry += item  # a lone stress mark belongs to the phoneme after it
                continue
            phonemes.append(carry + item)
            carry = ""
        if phonemes:
            words.append(tuple(phonemes))
    return words


def phonemize(clauses: Sequence[str], dialect: str = "en-us") -> list[list[Word]]:
    """The words of each clause as IPA phoneme tuples (punctuation is not phonemised).

    `dialect` is an espeak language code ("en-us", "en-gb"). A clause that espeak splits
    further still comes back as one list of words.
    """
    voice = _espeak_voice(dialect).encode()
    results: list[list[Word]] = []
    with _espeak_ffi._LOCK:
        engine = _espeak_ffi._clean_engine()
        # Selecting a voice and translating text leave state behind in the library; the
        # espeak backend's next synthesis must start from a freshly loaded one.
        engine.has_synthesized = True
        to_phonemes = engine.lib["espeak_TextToPhonemes"]  # a fresh function object: local argtypes
        to_phonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        to_phonemes.restype = ctypes.c_char_p
        if engine.lib.espeak_SetVoiceByName(voice) != 0:
            raise RuntimeError(f"espeak refused voice {voice.decode()!r}")
        for clause in clauses:
            buffer = ctypes.create_string_buffer(clause.replace("\0", " ").encode("utf-8"))
            cursor = ctypes.c_void_p(ctypes.addressof(buffer))
            words: list[Word] = []
            # espeak consumes one clause per call and advances the cursor; NULL at the end.
            for _ in range(len(buffer) + 1):
                if not cursor.value:
                    break
                output = to_phonemes(ctypes.byref(cursor), _CHARS_UTF8, _PHONEME_MODE)
                words.extend(_parse((output or b"").decode("utf-8", "replace")))
            results.append(words)
    return results
