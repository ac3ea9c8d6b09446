"""Motion measured on rendered frames: presets ordered, sequences smooth, seeds reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.image.face import track_landmarks
from stages.verify.lipsync import mouth_aperture
from vortexd import pipeline
from vortexd.settings import Settings
from tests.support.slots import head_motion_energy, head_positions, render_frames

pytestmark = pytest.mark.slow

TEXT = ("Bob and Maya bought a big blue balloon. Then they walked home, happy and proud, "
        "talking about the open sky and the people they met on the way.")
PRESETS_IN_ORDER = ("calm", "neutral", "excited", "manic")


def _recipe(expression, seed: int = 3, duration_s: float = 10.0) -> dict:
    return {"slot_id": "t", "speech": {"text": TEXT}, "motion": {"expression": expression, "seed": seed},
            "output": {"duration_s": duration_s}}


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """One set of backends for the module, as the daemon keeps them."""
    return pipeline.Backends(Settings(output_dir=tmp_path_factory.mktemp("o")))


@pytest.fixture(scope="module")
def per_preset(backends, tmp_path_factory):
    """Landmarks tracked on a 10 s render of each preset (same text, same seed)."""
    base = tmp_path_factory.mktemp("r")
    return {p: track_landmarks(render_frames(_recipe(p), base, backends=backends).frames) for p in PRESETS_IN_ORDER}


def test_head_motion_energy_is_ordered_calm_neutral_excited_manic(per_preset) -> None:
    """Head-motion energy measured on frames rises strictly calm < neutral < excited < manic."""
    energy = [head_motion_energy(per_preset[p]) for p in PRESETS_IN_ORDER]
    assert energy == sorted(energy) and len(set(energy)) == 4, dict(zip(PRESETS_IN_ORDER, energy))


def test_mouth_amplitude_is_ordered_calm_neutral_excited_manic(per_preset) -> None:
    """The spread of the measured mouth aperture rises strictly calm < neutral < excited < manic."""
    gap = {p: np.nanstd(per_preset[p][:, 14, 1] - per_preset[p][:, 13, 1]) for p in PRESETS_IN_ORDER}
    values = [gap[p] for p in PRESETS_IN_ORDER]
    assert values == sorted(values) and len(set(values)) == 4, gap


def test_four_preset_sequence_has_no_jump_at_boundaries(backends, tmp_path: Path) -> None:
    """Across the boundaries of a 4-preset sequence the head moves no faster than inside the segments."""
    rendered = render_frames(_recipe(list(PRESETS_IN_ORDER), duration_s=16.0), tmp_path, backends=backends)
    positions = head_positions(track_landmarks(rendered.frames))
    speed = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    boundaries = [int(s["start_s"] * 24) for s in rendered.plan.meta["segments"][1:]]
    near = np.concatenate([speed[b - 3 : b + 3] for b in boundaries])
    # A jump would show as a single-frame spike far above the motion the presets produce.
    assert np.nanmax(near) <= 1.5 * np.nanpercentile(speed, 99), (np.nanmax(near), np.nanpercentile(speed, 99))


def test_same_seed_is_bit_identical_and_another_seed_moves_differently(backends, tmp_path: Path) -> None:
    """Same recipe and seed render identical bytes; another seed gives different head motion."""
    first = render_frames(_recipe("neutral", seed=11, duration_s=4.0), tmp_path, backends=backends).frames
    again = render_frames(_recipe("neutral", seed=11, duration_s=4.0), tmp_path, backends=backends).frames
    other = render_frames(_recipe("neutral", seed=12, duration_s=4.0), tmp_path, backends=backends).frames
    assert np.array_equal(first, again)
    moved_a = head_positions(track_landmarks(first))
    moved_b = head_positions(track_landmarks(other))
    assert np.nanmax(np.abs(moved_a - moved_b)) > 0.5


def test_animate_writes_in_place_in_both_layouts(shared_dir: Path) -> None:
    """animate() fills the caller's uint8 HWC and float32 CHW buffers in place, with matching content."""
    from skimage import data

    from stages.animate import animate
    from stages.tts import EspeakBackend

    audio = EspeakBackend().synthesize("Open wide, then close.").audio
    image = data.astronaut()
    as_uint8 = np.zeros((48, 512, 512, 3), np.uint8)
    as_float = np.zeros((48, 3, 512, 512), np.float32)
    pointers = (as_uint8.ctypes.data, as_float.ctypes.data)
    returned = animate(image, audio, fps=24, duration=2, output=as_uint8, seed=5)
    animate(image.transpose(2, 0, 1) / 255.0, audio, fps=24, duration=2, output=as_float, seed=5)
    assert returned is as_uint8 and (as_uint8.ctypes.data, as_float.ctypes.data) == pointers
    assert np.abs(as_uint8.astype(np.float32) / 255 - as_float.transpose(0, 2, 3, 1)).max() < 1.5 / 255
    aperture = mouth_aperture(as_uint8)
    assert np.nanmax(aperture) > np.nanmin(aperture) + 0.02  # the mouth actually moved


def test_animate_warns_naming_both_lengths_when_audio_is_too_long() -> None:
    """Audio longer than `duration` is truncated with a warning giving both lengths."""
    from skimage import data

    from stages.animate import animate
    from stages.fit import AudioTruncatedWarning

    audio = np.zeros(24_000 * 3, np.float32)
    with pytest.warns(AudioTruncatedWarning, match=r"3\.00 s.*1\.00 s"):
        animate(data.astronaut(), audio, duration=1, fps=24)
