"""The plan → ratio calibration: the documented constants are what the shared motion data gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.errors import StageInputError
from stages.warp.liveportrait.calibration import CALIBRATION, measure_calibration


def test_constants_match_a_fresh_measurement(shared_dir: Path) -> None:
    """Recomputing from ../shared/motion_templates reproduces every constant to its stated precision."""
    measured, diag = measure_calibration(shared_dir / "motion_templates")
    assert measured.lip_ratio_closed == pytest.approx(CALIBRATION.lip_ratio_closed, abs=5e-5)
    assert measured.lip_ratio_open == pytest.approx(CALIBRATION.lip_ratio_open, abs=5e-4)
    assert measured.eye_ratio_closed == pytest.approx(CALIBRATION.eye_ratio_closed, abs=5e-5)
    assert measured.eye_ratio_open == pytest.approx(CALIBRATION.eye_ratio_open, abs=5e-4)
    assert measured.eye_ratio_wide == pytest.approx(CALIBRATION.eye_ratio_wide, abs=5e-4)
    assert measured.lip_exp_coordinate == CALIBRATION.lip_exp_coordinate
    assert measured.lip_ratio_per_exp == pytest.approx(CALIBRATION.lip_ratio_per_exp, abs=5e-3)
    assert np.allclose(measured.smile_exp_delta, CALIBRATION.smile_exp_delta, atol=5e-5)
    assert diag["frames_with_ratios"] == 633 and diag["lip_exp_r"] > 0.7


def test_ranges_are_ordered_like_real_faces() -> None:
    """Closed < open < wide for eyes, closed < open for lips, and the smile is a small expression change."""
    c = CALIBRATION
    assert c.lip_ratio_closed < 0.01 < c.lip_ratio_open
    assert c.eye_ratio_closed < 0.05 < c.eye_ratio_open < c.eye_ratio_wide
    assert 0.01 < float(np.linalg.norm(c.smile_delta())) < 0.05


def test_folder_without_ratio_templates_is_refused(tmp_path: Path) -> None:
    """A folder with no template carrying lip/eye ratios cannot calibrate anything."""
    with pytest.raises(StageInputError, match="ratios"):
        measure_calibration(tmp_path)
