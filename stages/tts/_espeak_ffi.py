"""ctypes bindings to the libespeak-ng shipped by `espeakng-loader` (never a system espeak).

libespeak-ng keeps all of its state in process globals (current voice, parameters, the synth
callback), so every call into it goes through `_LOCK`, and the library is initialised lazily,
on first use.

Some of that state is C `static` data that outlives espeak_Terminate (the waveform generator's
pitch-cycle phase, among others): the same text spoken twice in a row comes out a few samples
different, with phoneme boundaries moved by a pitch period. Reproducible slots need identical
speech, so each synthesis runs on a freshly loaded library: the previous instance is
terminated and dlclose()d, which discards its statics, and the next dlopen starts clean. That
costs ~5 ms per call. Synthesis runs in AUDIO_OUTPUT_SYNCHRONOUS mode: `espeak_Synth` returns
only when the whole text has been spoken, having called our callback with each audio buffer and
the events (words, sentences, phonemes) that fall inside it.

espeak_Initialize seeds espeak's own random generator from time(NULL), and voices with breath
noise (the +f3 variant, among others) draw from it, so the same text came out differently from
one second to the next. Each synthesis therefore reseeds it with a fixed value first.
"""

from __future__ import annotations

import _ctypes
import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# --- constants from speak_lib.h (API revision 12) -------------------------------------------
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
# Without this flag a missing data directory makes the library call exit() on our process.
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0

_PARAM_RATE = 1
_PARAM_PITCH = 3

EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_SENTENCE = 2
EVENT_END = 5
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7

_BUFFER_MS = 200  # callback buffer length; larger buffers mean fewer Python callbacks
# Seed for espeak's noise generator (breathy voices). Any constant works; it only has to be the same
# before every synthesis so that equal requests give equal audio.
_NOISE_SEED = 1


class _EventId(ctypes.Union):
    # `string` is declared as raw bytes: a phoneme name that fills all 8 bytes has no NUL, and
    # ctypes' c_char arrays would silently stop at the first NUL or run past the end.
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_ubyte * 8),
    ]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # samples since the start of the message: exact timing
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        # A packed list of (priority byte, NUL-terminated code) pairs, so not a c_char_p.
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class EspeakUnavailableError(RuntimeError):
    """libespeak-ng or its data could not be loaded or initialised."""


@dataclass(frozen=True)
class VoiceEntry:
    """One installed espeak voice: its file identifier and the language codes it serves."""

    identifier: str  # path below espeak-ng-data/lang, e.g. "gmw/en-US"
    name: str  # human name, e.g. "English (America)"
    languages: tuple[tuple[int, str], ...]  # (priority, code); lower priority = better match


@dataclass(frozen=True)
class RawSynthesis:
    """What one espeak_Synth call produced, untouched: int16 samples and the event stream."""

    samples: np.ndarray  # (n,) int16 at sample_rate_hz
    sample_rate_hz: int
    event_types: np.ndarray  # (k,) int32, espeakEVENT_* codes in emission order
    event_samples: np.ndarray  # (k,) int64, sample index at which each event happens
    event_phonemes: tuple[str, ...]  # (k,) IPA name for PHONEME events, "" otherwise/pauses


class _Engine:
    """The one initialised library instance and the state of the synthesis in flight."""

    def __init__(self) -> None:
        import espeakng_loader

        library_path = espeakng_loader.get_library_path()
        data_path = espeakng_loader.get_data_path()
        try:
            lib = ctypes.CDLL(library_path)
        except OSError as exc:
            raise EspeakUnavailableError(f"cannot load libespeak-ng from {library_path}: {exc}") from exc
        self._declare(lib)
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT
        sample_rate_hz = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path.encode(), options
        )
        if sample_rate_hz <= 0:
            raise EspeakUnavailableError(f"espeak_Initialize failed with data at {data_path}")
        self.lib = lib
        self.data_path = Path(data_path)
        self.sample_rate_hz = int(sample_rate_hz)
        self.default_pitch = int(lib.espeak_GetParameter(_PARAM_PITCH, 0))
        # Kept on self: ctypes frees the trampoline when the Python object dies, and the library
        # would then call into freed memory.
        self._callback = _SynthCallback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str]] = []
        self._callback_error: BaseException | None = None
        self.has_synthesized = False

    def close(self) -> None:
        """Terminate espeak and unload the library, so the next load starts from clean statics."""
        lib, self.lib = self.lib, None
        lib.espeak_Terminate()
        # After dlclose every function pointer of `lib` dangles; nothing may keep it.
        handle = lib._handle
        del lib
        _ctypes.dlclose(handle)

    @staticmethod
    def _declare(lib: ctypes.CDLL) -> None:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_GetParameter.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.espeak_GetParameter.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_Terminate.argtypes = []
        lib.espeak_Terminate.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int

    def _on_synth(self, wav, n_samples: int, events) -> int:
        # An exception must not cross back into C; keep it, abort synthesis (return 1), and
        # re-raise it on the Python side once espeak_Synth has returned.
        try:
            if wav and n_samples > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
            i = 0
            while events[i].type != EVENT_LIST_TERMINATED:
                event = events[i]
                symbol = ""
                if event.type == EVENT_PHONEME:
                    symbol = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._events.append((int(event.type), int(event.sample), symbol))
                i += 1
            return 0
        except BaseException as exc:  # noqa: BLE001 - re-raised in synthesize()
            self._callback_error = exc
            return 1

    def list_voices(self, variants: bool = False) -> list[VoiceEntry]:
        """espeak's voices, or with `variants` its voice variants (the "!v/…" names)."""
        spec_pointer = None
        if variants:
            spec = _Voice()
            # espeak lists the voice variants (!v/...) when asked for the language "variant".
            keep = ctypes.c_char_p(b"variant")
            spec.languages = ctypes.cast(keep, ctypes.c_void_p)
            spec_pointer = ctypes.byref(spec)
        table = self.lib.espeak_ListVoices(spec_pointer)
        entries = []
        i = 0
        while table[i]:
            voice = table[i].contents
            entries.append(
                VoiceEntry(
                    identifier=voice.identifier.decode("utf-8", "replace"),
                    name=(voice.name or b"").decode("utf-8", "replace"),
                    languages=_unpack_languages(voice.languages),
                )
            )
            i += 1
        return entries

    def synthesize(self, text: str, voice_name: str, rate_wpm: int, pitch: int) -> RawSynthesis:
        """Speak `text` with the voice, rate and pitch: the samples and espeak's timed events."""
        self.has_synthesized = True
        if self.lib.espeak_SetVoiceByName(voice_name.encode()) != _EE_OK:
            raise ValueError(f"espeak refused voice {voice_name!r}")
        # Parameters after the voice: selecting a voice may reset them to the voice's defaults.
        self.lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        self._chunks, self._events, self._callback_error = [], [], None
        self.lib.espeak_ng_SetRandSeed(_NOISE_SEED)
        encoded = text.encode("utf-8")
        status = self.lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        chunks, events, error = self._chunks, self._events, self._callback_error
        self._chunks, self._events, self._callback_error = [], [], None
        if error is not None:
            raise error
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return RawSynthesis(
            samples=samples.astype(np.int16, copy=False),
            sample_rate_hz=self.sample_rate_hz,
            event_types=np.array([e[0] for e in events], dtype=np.int32),
            event_samples=np.array([e[1] for e in events], dtype=np.int64),
            event_phonemes=tuple(e[2] for e in events),
        )


def _unpack_languages(address: int | None) -> tuple[tuple[int, str], ...]:
    """Decode espeak's packed `languages` field: [priority byte][code]\\0 ... ending in a 0 byte."""
    if not address:
        return ()
    out = []
    offset = 0
    while True:
        priority = ctypes.string_at(address + offset, 1)[0]
        if priority == 0:
            return tuple(out)
        code = ctypes.string_at(address + offset + 1)
        out.append((int(priority), code.decode("utf-8", "replace")))
        offset += 2 + len(code)


_LOCK = threading.Lock()
_engine: _Engine | None = None


def _get_engine() -> _Engine:
    # Caller holds _LOCK.
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def _clean_engine() -> _Engine:
    """An engine no synthesis has run on yet (see the module docstring for why). Caller holds _LOCK."""
    global _engine
    if _engine is not None and _engine.has_synthesized:
        stale, _engine = _engine, None
        stale.close()
    return _get_engine()


def list_voices(variants: bool = False) -> tuple[list[VoiceEntry], Path]:
    """Installed voices (or, with `variants`, the voice variants) and the espeak data folder."""
    with _LOCK:
        engine = _get_engine()
        return engine.list_voices(variants), engine.data_path


def synthesize(text: str, voice_name: str, rate_wpm: int, pitch: int | None) -> RawSynthesis:
    """Speak `text` with the voice espeak knows as `voice_name` ("gmw/en-US+f3" form).

    `pitch` is espeak's 0..100 base-pitch parameter; None means the library default.
    """
    with _LOCK:
        engine = _clean_engine()
        resolved_pitch = engine.default_pitch if pitch is None else pitch
        return engine.synthesize(text, voice_name, rate_wpm, resolved_pitch)
