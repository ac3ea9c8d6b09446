"""`vortexd render` on bad input: a clear error naming the field, non-zero exit, nothing published."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest


def _render(recipe: dict, folder: Path, *extra: str, address_space_bytes: int | None = None
            ) -> subprocess.CompletedProcess:
    recipe_file = folder / "recipe.json"
    recipe_file.write_text(json.dumps(recipe))

    def limit_address_space() -> None:  # in the child, before exec: what `ulimit -v` does
        resource.setrlimit(resource.RLIMIT_AS, (address_space_bytes, address_space_bytes))

    return subprocess.run([sys.executable, "-m", "vortexd.cli", "render", str(recipe_file), "-o",
                           str(folder / "out"), "--quiet", *extra], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_address_space if address_space_bytes else None)


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


GIB = 1 << 30


@pytest.mark.parametrize(("seconds", "limit_gib"), [(600, 11.25), (600, 11.5), (4, 1.0)])
def test_a_slot_that_does_not_fit_under_ulimit_v_is_refused_as_not_enough_memory(
        tmp_path: Path, seconds: int, limit_gib: float) -> None:
    """Defect 10a: `vortexd render` under an address-space limit just above the video slab (600 s:
    10.5 GiB; 4 s: 72 MiB) is refused with `error: not enough memory …` and exit 2, saying what
    needs how much, before any work — not a numpy or MediaPipe traceback, an abort or a crash
    part-way through the render."""
    result = _render(_recipe(output={"duration_s": seconds}), tmp_path, address_space_bytes=int(limit_gib * GIB))
    assert result.returncode == 2, result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and error[0].startswith("error: not enough memory to render"), result.stderr[-2000:]
    assert f"{seconds * 24} frames need" in error[0] and "ulimit -v" in error[0]
    _assert_refused(result, tmp_path)


@pytest.mark.slow
def test_a_slot_that_fits_under_ulimit_v_renders(tmp_path: Path) -> None:
    """The memory check refuses only what cannot fit: a 4 s slot renders under a 2.5 GiB limit
    (a render of it maps about 1.3 GiB at its peak)."""
    result = _render(_recipe(output={"duration_s": 4}), tmp_path, "--no-verify", address_space_bytes=int(2.5 * GIB))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "bad" / "video.mp4").is_file()


def test_a_memory_error_deep_in_a_stage_is_told_with_what_and_where() -> None:
    """A MemoryError past the up-front check (numpy's, from a stage's arrays, as in the mesh warp's
    field.py under `ulimit -v`) is reported by `vortexd render` with numpy's words and the Vortex
    function it happened in."""
    script = """
import resource
import numpy as np
from stages.warp.mesh.field import squared_distances
from vortexd.cli import _memory_failure

mapped = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + (256 << 20), resource.RLIM_INFINITY))
points = np.zeros((8192, 2))
try:
    squared_distances(points, points)  # 8192 x 8192 float64: 512 MiB, over the limit
except MemoryError as exc:
    print(_memory_failure(exc))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    what = result.stdout.strip()
    assert what.startswith("Unable to allocate") and "(8192, 8192)" in what, result.stdout + result.stderr[-2000:]
    assert what.endswith("(in stages.warp.mesh.field.squared_distances)")
