"""Fixtures for the motion-planner tests: hand-built speech (see motion_speech.py)."""

from __future__ import annotations

import pytest
from motion_speech import build_timeline, synth_audio

from stages.types import Speech


@pytest.fixture(scope="session")
def speech_45s() -> Speech:
    """45 s of hand-built speech: an IPA timeline plus audio synthesised to follow it."""
    phonemes = build_timeline(45.0)
    return Speech(synth_audio(phonemes, 45.0), phonemes, voice="test", backend="hand-built")


@pytest.fixture(scope="session")
def audio_only_45s(speech_45s: Speech) -> Speech:
    """The same 45 s track without its phoneme timeline (the audio-only path)."""
    return Speech(speech_45s.audio, (), voice="test", backend="wav")
