"""`vortexd render` on bad input: a clear error naming the field, non-zero exit, nothing published."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest


def _render(recipe: dict, folder: Path, *extra: str) -> subprocess.CompletedProcess:
    recipe_file = folder / "recipe.json"
    recipe_file.write_text(json.dumps(recipe))
    return subprocess.run([sys.executable, "-m", "vortexd.cli", "render", str(recipe_file), "-o",
                           str(folder / "out"), "--quiet", *extra], capture_output=True, text=True, timeout=300)


def _assert_refused(result: subprocess.CompletedProcess, folder: Path, *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    out = folder / "out"
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def _recipe(**parts) -> dict:
    data = {"slot_id": "bad", "speech": {"text": "Hello."}, "output": {"duration_s": 2}}
    data.update(parts)
    return data


def test_dog_photo_is_refused_as_no_human_face(shared_dir: Path, tmp_path: Path) -> None:
    """A portrait of a dog is refused with "no human face", naming actor.image."""
    shutil.copy(shared_dir / "faces" / "s25.jpg", tmp_path / "dog.jpg")
    _assert_refused(_render(_recipe(actor={"image": "dog.jpg"}), tmp_path), tmp_path, "actor.image", "no human face")


def test_non_image_file_is_refused(tmp_path: Path) -> None:
    """A text file named .jpg is refused as unreadable, naming actor.image."""
    (tmp_path / "face.jpg").write_text("this is not a picture")
    _assert_refused(_render(_recipe(actor={"image": "face.jpg"}), tmp_path), tmp_path, "actor.image")


def test_empty_text_is_refused(tmp_path: Path) -> None:
    """Whitespace-only speech text is refused, naming speech.text."""
    _assert_refused(_render(_recipe(speech={"text": "  "}), tmp_path), tmp_path, "speech", "empty")


def test_unknown_preset_error_lists_valid_presets(tmp_path: Path) -> None:
    """An unknown preset is refused and the message lists neutral, excited, manic and calm."""
    result = _render(_recipe(motion={"expression": "grumpy"}), tmp_path)
    _assert_refused(result, tmp_path, "motion.expression", "neutral", "excited", "manic", "calm")


def test_path_outside_allowed_roots_is_refused(tmp_path: Path) -> None:
    """An image path escaping the recipe folder is refused, naming actor.image."""
    inner = tmp_path / "inner"
    inner.mkdir()
    result = _render(_recipe(actor={"image": "/etc/hostname"}), inner)
    _assert_refused(result, inner, "actor.image", "outside the allowed roots")


@pytest.mark.slow
def test_too_long_audio_is_truncated_with_a_warning_naming_both_lengths(tmp_path: Path) -> None:
    """A 5 s wav in a 2 s slot renders, warning "5.00 s" vs "2.00 s"; the video is 2 s."""
    samples = (0.3 * np.sin(np.arange(5 * 24_000) * 2 * np.pi * 220 / 24_000) * 32767).astype(np.int16)
    with wave.open(str(tmp_path / "long.wav"), "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(24_000), wav.writeframes(samples.tobytes())
    result = _render(_recipe(speech={"audio": "long.wav"}), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "5.00 s" in result.stderr and "2.00 s" in result.stderr and "truncated" in result.stderr
    from stages.encode import probe_mp4

    assert probe_mp4(tmp_path / "out" / "bad" / "video.mp4")["frames"] == 48
