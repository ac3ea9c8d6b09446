"""The embedded TTS backend: espeak-ng, with the exact phoneme timeline the lip sync needs.

espeak is robotic but instant (~1000× real time on one core) and knows exactly when each
phoneme starts, because it generates the waveform phoneme by phoneme. The motion planner uses
that timeline directly instead of guessing mouth shapes from the audio.
"""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from stages.errors import StageInputError
from stages.tts import _espeak_ffi
from stages.tts._timeline import phonemes_from_events
from stages.tts.resample import resample_to_rate
from stages.types import SAMPLE_RATE_HZ, Speech

RATE_MIN_WPM = 80
RATE_MAX_WPM = 450
"""espeak's documented speaking-rate range (espeakRATE_MINIMUM..espeakRATE_MAXIMUM)."""

PITCH_MIN = 0
PITCH_MAX = 100
"""espeak's base-pitch parameter range (50 is the voice's normal pitch)."""

VOICE_PREFIX = "espeak:"
"""Recipes may name a voice with its backend, e.g. "espeak:en-us"; the prefix is optional here."""

# Shown first when an unknown voice is rejected, so the message suggests voices people use.
_SHOWCASE_VOICES = ("en-us", "en-gb", "de", "fr-fr", "es", "it", "pt-br", "nl", "ru", "cmn", "ja", "hi")
_INT16_FULL_SCALE = 32768.0


@dataclass(frozen=True)
class _VoiceCatalog:
    """Language codes → espeak voice file, and variant names → variant file."""

    by_code: dict[str, str]  # "en-us" → "gmw/en-US"
    variants: dict[str, str]  # "f3" → "f3", "alex" → "Alex"


def _dictionary_name(data_path: Path, entry: _espeak_ffi.VoiceEntry) -> str:
    # espeak uses the voice file's `dictionary` line, else the first language code up to "-".
    try:
        lines = (data_path / "lang" / entry.identifier).read_text("utf-8", "replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "dictionary":
            return words[1]
    return entry.languages[0][1].split("-")[0] if entry.languages else ""


@lru_cache(maxsize=1)
def _catalog() -> _VoiceCatalog:
    entries, data_path = _espeak_ffi.list_voices()
    best: dict[str, tuple[int, str]] = {}
    for entry in entries:
        # Some packaged voices (Faroese, Karakalpak, ...) ship without their dictionary; espeak
        # would accept them and then speak nothing but a complaint on stderr. Offer only voices
        # that can actually speak.
        if not (data_path / f"{_dictionary_name(data_path, entry)}_dict").is_file():
            continue
        for priority, code in entry.languages:
            key = code.lower()
            if key not in best or priority < best[key][0]:
                best[key] = (priority, entry.identifier)
    variant_entries, _ = _espeak_ffi.list_voices(variants=True)
    variants = {}
    for entry in variant_entries:
        file_name = entry.identifier.rsplit("/", 1)[-1]
        variants[file_name.lower()] = file_name
    return _VoiceCatalog(by_code={code: ident for code, (_, ident) in best.items()}, variants=variants)


def _unknown_voice_message(requested: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(requested.lower(), valid, n=3, cutoff=0.6)
    shown = [v for v in _SHOWCASE_VOICES if v in valid] or valid[:12]
    hint = f"did you mean {', '.join(near)}? " if near else ""
    return (
        f"unknown espeak voice {requested!r}; {hint}valid voices include "
        f"{', '.join(shown)} ({len(valid)} in all, listed in details['valid'])"
    )


class EspeakBackend:
    """Speech from text with espeak-ng: 24 kHz float32 audio plus the exact phoneme timeline.

    Cheap to construct; the library is loaded and initialised on first use and shared by every
    instance (libespeak-ng is a process-wide singleton, and every call is serialised).
    """

    name = "espeak"

    def voices(self) -> list[str]:
        """Language codes of the voices that can speak here (e.g. "en-us", "en-gb", "de"), sorted.

        A variant may be appended with "+" ("en-us+f3", "en-gb+Alex"); see `variants()`.
        """
        return sorted(_catalog().by_code)

    def variants(self) -> list[str]:
        """Voice-variant names (timbre/gender presets such as "f3", "m2", "Alex"), sorted."""
        return sorted(_catalog().variants.values(), key=str.lower)

    def resolve_voice(self, voice: str) -> tuple[str, str]:
        """(canonical voice id, espeak voice name) for `voice`, or StageInputError("speech.voice").

        Accepts "en-us", "EN-US", "espeak:en-us" and "en-us+f3"; the canonical id is the
        lower-case code with the variant's file name, e.g. "en-us+f3".
        """
        if not isinstance(voice, str) or not voice.strip():
            raise StageInputError("speech.voice", "must name an espeak voice, e.g. 'en-us'", requested=voice)
        catalog = _catalog()
        spec = voice.strip()
        if spec.lower().startswith(VOICE_PREFIX):
            spec = spec[len(VOICE_PREFIX) :]
        code, _, variant = spec.partition("+")
        code = code.strip().lower()
        valid = sorted(catalog.by_code)
        if code not in catalog.by_code:
            raise StageInputError("speech.voice", _unknown_voice_message(code, valid), valid=valid, requested=voice)
        if not variant:
            return code, catalog.by_code[code]
        variant_file = catalog.variants.get(variant.strip().lower())
        if variant_file is None:
            names = sorted(catalog.variants.values(), key=str.lower)
            raise StageInputError(
                "speech.voice",
                f"unknown espeak voice variant {variant!r} in {voice!r}; variants include "
                f"{', '.join(names[:10])} ({len(names)} in all, listed in details['valid_variants'])",
                valid=valid,
                valid_variants=names,
                requested=voice,
            )
        return f"{code}+{variant_file}", f"{catalog.by_code[code]}+{variant_file}"

    def synthesize(self, text: str, voice: str = "en-us", rate_wpm: int = 165, pitch: int | None = None) -> Speech:
        """Speak `text`; returns 24 kHz mono float32 audio and its phoneme timeline (IPA symbols).

        `rate_wpm` is espeak's speaking rate (80..450 words per minute); `pitch` its base-pitch
        parameter (0..100, None = the voice's normal pitch). Phoneme symbols are espeak's IPA
        names and may carry a stress mark (ˈ primary, ˌ secondary) before the vowel and a length
        mark (ː) after it, e.g. "ˈoʊ", "ɜː". Pauses are left out: they are the gaps between spans.
        """
        _check_text(text)
        _check_rate(rate_wpm)
        _check_pitch(pitch)
        canonical_voice, espeak_voice = self.resolve_voice(voice)
        raw = _espeak_ffi.synthesize(text, espeak_voice, int(rate_wpm), None if pitch is None else int(pitch))
        phonemes = phonemes_from_events(
            raw.event_types, raw.event_samples, raw.event_phonemes, len(raw.samples), raw.sample_rate_hz
        )
        if not phonemes:
            raise StageInputError(
                "speech.text", "contains nothing speakable (no phonemes were produced)", text=text[:80]
            )
        audio = resample_to_rate(raw.samples / _INT16_FULL_SCALE, raw.sample_rate_hz, SAMPLE_RATE_HZ)
        return Speech(audio=audio, phonemes=phonemes, voice=canonical_voice, backend=self.name)


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise StageInputError("speech.text", f"must be a string, got {type(text).__name__}")
    if not text.strip():
        raise StageInputError("speech.text", "is empty; give the words the actor should say")
    if "\0" in text:
        # The C API reads up to the first NUL, so the rest would be silently dropped.
        raise StageInputError("speech.text", "contains a NUL character", position=text.index("\0"))


def _check_rate(rate_wpm: object) -> None:
    if isinstance(rate_wpm, bool) or not isinstance(rate_wpm, numbers.Integral):
        raise StageInputError("speech.rate_wpm", f"must be an integer, got {rate_wpm!r}")
    if not RATE_MIN_WPM <= rate_wpm <= RATE_MAX_WPM:
        raise StageInputError(
            "speech.rate_wpm",
            f"{rate_wpm} words per minute is outside espeak's range {RATE_MIN_WPM}..{RATE_MAX_WPM}",
            minimum=RATE_MIN_WPM,
            maximum=RATE_MAX_WPM,
        )


def _check_pitch(pitch: object) -> None:
    if pitch is None:
        return
    if isinstance(pitch, bool) or not isinstance(pitch, numbers.Integral):
        raise StageInputError("speech.pitch", f"must be an integer or omitted, got {pitch!r}")
    if not PITCH_MIN <= pitch <= PITCH_MAX:
        raise StageInputError(
            "speech.pitch", f"{pitch} is outside {PITCH_MIN}..{PITCH_MAX} (50 is normal)",
            minimum=PITCH_MIN, maximum=PITCH_MAX,
        )  # fmt: skip
