"""Motion templates: loading, validation and resampling to a slot's fps and length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from stages.errors import StageInputError
from stages.warp.liveportrait.templates import fit_to_slot, load_template, source_positions, template_from_arrays


@pytest.fixture(scope="module")
def templates_dir(shared_dir: Path) -> Path:
    """../shared/motion_templates."""
    return shared_dir / "motion_templates"


def _arrays(n: int = 5, fps: float = 25.0) -> dict:
    yaw = np.linspace(0, 20, n)
    return {"scale": np.full((n, 1), 1.2, np.float32),
            "R": Rotation.from_euler("y", yaw[:, None], degrees=True).as_matrix().astype(np.float32),
            "exp": np.linspace(0, 1, n, dtype=np.float32)[:, None, None] * np.ones((1, 21, 3), np.float32),
            "t": np.zeros((n, 3), np.float32), "fps": np.float32(fps)}


def test_every_shared_template_loads(templates_dir: Path) -> None:
    """All shared templates load with their frame count, fps and optional ratios."""
    for path in sorted(templates_dir.glob("*.npz")):
        tpl = load_template(path)
        assert tpl.n_frames >= 16 and tpl.fps in (20.0, 25.0, 30.0)
        assert tpl.exp.shape == (tpl.n_frames, 21, 3)
        if path.stem.startswith("d"):
            assert tpl.lip_close_ratio.shape == (tpl.n_frames, 1)


def test_same_fps_and_length_is_an_exact_copy(templates_dir: Path) -> None:
    """Resampling talking.npz to its own fps and length returns its frames unchanged."""
    tpl = load_template(templates_dir / "talking.npz")
    same = fit_to_slot(tpl, tpl.fps, tpl.n_frames)
    assert np.allclose(same.exp, tpl.exp) and np.allclose(same.t, tpl.t) and np.allclose(same.scale, tpl.scale)
    assert np.allclose(same.R, tpl.R, atol=1e-6)


def test_resampling_to_24fps_interpolates_in_time() -> None:
    """A 25 fps ramp resampled to 24 fps has the value the ramp has at each 24 fps instant."""
    tpl = template_from_arrays(_arrays(26, fps=25.0))
    out = fit_to_slot(tpl, 24.0, 24)
    times = np.arange(24) / 24.0
    assert np.allclose(out.exp[:, 0, 0], times * 25.0 / 25.0, atol=1e-5)  # exp ramps 0→1 over 25 frames = 1 s
    yaw = Rotation.from_matrix(out.R.astype(np.float64)).as_euler("zyx", degrees=True)[:, 1]
    assert np.allclose(yaw, 20.0 * times, atol=1e-3)  # slerp keeps a constant-rate turn constant


def test_mirror_extension_is_continuous_and_covers_a_whole_slot(templates_dir: Path) -> None:
    """A 5 s template fills a 45 s slot by playing back and forth: no jump bigger than a normal step."""
    tpl = load_template(templates_dir / "talking.npz")
    slot = fit_to_slot(tpl, 24.0, 1080)
    assert slot.n_frames == 1080
    own_steps = np.abs(np.diff(tpl.exp, axis=0)).max()
    assert np.abs(np.diff(slot.exp, axis=0)).max() <= own_steps + 1e-6
    rot_err = np.abs(slot.R @ slot.R.transpose(0, 2, 1) - np.eye(3)).max()
    assert rot_err < 1e-5


def test_extension_modes_place_frames_as_documented() -> None:
    """mirror plays backwards past the end, loop restarts, hold freezes on the last frame."""
    assert np.allclose(source_positions(4, 24, 8, 24, "mirror"), [0, 1, 2, 3, 2, 1, 0, 1])
    assert np.allclose(source_positions(4, 24, 6, 24, "loop"), [0, 1, 2, 3, 0, 1])
    assert np.allclose(source_positions(4, 24, 6, 24, "hold"), [0, 1, 2, 3, 3, 3])


@pytest.mark.parametrize("mutate, reason", [
    (lambda a: a.pop("exp"), "no 'exp'"),
    (lambda a: a.update(t=np.zeros((4, 3), np.float32)), "frames"),
    (lambda a: a.update(R=a["R"] * 2), "rotation"),
    (lambda a: a.update(fps=np.float32(0)), "fps"),
    (lambda a: a.update(scale=np.full((5, 1), np.nan, np.float32)), "NaN"),
])
def test_malformed_templates_are_refused_naming_the_field(mutate, reason: str) -> None:
    """A template with a missing, mis-shaped, non-rotation, zero-fps or NaN array is a StageInputError."""
    arrays = _arrays()
    mutate(arrays)
    with pytest.raises(StageInputError, match=reason) as err:
        template_from_arrays(arrays)
    assert err.value.field == "motion.template"


def test_missing_or_unreadable_file_is_refused(tmp_path: Path) -> None:
    """A path that does not exist or is not an .npz names motion.template."""
    with pytest.raises(StageInputError, match="not found"):
        load_template(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(StageInputError, match="readable"):
        load_template(bad)
