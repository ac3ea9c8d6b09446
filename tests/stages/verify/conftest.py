"""Fixtures for the verify tests: a real portrait made to talk (see verify_talking.py)."""

from __future__ import annotations

import numpy as np
import pytest
from verify_talking import PORTRAIT, Portrait, load_portrait, open_mouth_frames, syllable_speech

from stages.types import Speech

TALK_FRAMES = 192  # 8 s at 24 fps


@pytest.fixture(scope="session")
def portrait() -> Portrait:
    """The shared s10 portrait, 512², with landmarks (skips when ../shared is absent)."""
    if not PORTRAIT.is_file():
        pytest.skip(f"shared portrait {PORTRAIT} is absent")
    return load_portrait()


@pytest.fixture(scope="session")
def talk() -> tuple[Speech, np.ndarray]:
    """8 s of syllable speech and its per-frame loudness (0–1)."""
    return syllable_speech(TALK_FRAMES, seed=3)


@pytest.fixture(scope="session")
def in_sync_frames(portrait: Portrait, talk) -> np.ndarray:
    """The portrait opening its mouth exactly with the loudness of `talk`."""
    return open_mouth_frames(portrait, talk[1])
