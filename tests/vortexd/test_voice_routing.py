"""Recipe voices pick their TTS backend: "kokoro:<name>" speaks through Kokoro, others through espeak."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.errors import StageInputError
from vortexd import pipeline
from vortexd.recipe import parse_recipe
from vortexd.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """Backends with in-process Kokoro (no worker start-up in a short test)."""
    made = pipeline.Backends(Settings(output_dir=tmp_path_factory.mktemp("o"), kokoro_workers=0))
    yield made
    made.close()


def _speech(backends, tmp_path: Path, voice: str):
    recipe = parse_recipe({"slot_id": "v", "speech": {"text": "Maybe people like bubbles.", "voice": voice},
                           "output": {"duration_s": 3}}, tmp_path)
    return pipeline.make_speech(recipe, backends)[0]


def test_kokoro_voice_is_spoken_by_kokoro_with_a_timeline(backends, tmp_path: Path) -> None:
    """A kokoro: voice yields Kokoro audio with a phoneme timeline inside the slot."""
    speech = _speech(backends, tmp_path, "kokoro:jf_alpha")
    assert speech.backend == "kokoro" and len(speech.phonemes) > 10
    assert speech.phonemes[-1].end_s <= 3.0 and abs(speech.audio).max() > 0.05


def test_espeak_voice_is_spoken_by_espeak(backends, tmp_path: Path) -> None:
    """A plain language voice yields espeak audio."""
    assert _speech(backends, tmp_path, "en-us").backend == "espeak"


def test_unknown_kokoro_voice_lists_the_valid_ones(backends, tmp_path: Path) -> None:
    """An unknown kokoro voice is refused on speech.voice, listing the voices that exist."""
    with pytest.raises(StageInputError) as info:
        _speech(backends, tmp_path, "kokoro:nobody")
    assert info.value.field == "speech.voice" and "jf_alpha" in str(info.value)
