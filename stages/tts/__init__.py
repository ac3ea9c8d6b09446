"""The TTS stage: speech audio (24 kHz mono float32) and, when known, its phoneme timeline.

`EspeakBackend` is the embedded default (espeak-ng, no downloads); `load_wav` takes a recipe's
recorded speech instead.
"""

from stages.tts.espeak import EspeakBackend
from stages.tts.wav import load_wav

__all__ = ["EspeakBackend", "load_wav"]
