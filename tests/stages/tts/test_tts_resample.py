"""The embedded resampler: SciPy's resample_poly filter and alignment, without importing scipy.signal."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.signal import resample_poly

from stages.tts.resample import resample_to_rate


@pytest.mark.parametrize(("n_samples", "from_hz"), [(220_500, 22_050), (7, 22_050), (1, 22_050), (48_001, 48_000),
                                                    (16_000, 16_000), (777, 44_100), (3, 8_000), (100, 96_000)])
def test_resampling_matches_scipys_polyphase_filter(n_samples: int, from_hz: int) -> None:
    audio = np.random.default_rng(n_samples).uniform(-0.9, 0.9, n_samples)
    ours = resample_to_rate(audio, from_hz, 24_000)
    up, down = 24_000 // np.gcd(from_hz, 24_000), from_hz // np.gcd(from_hz, 24_000)
    reference = np.clip(resample_poly(audio, up, down), -1, 1).astype(np.float32)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_resampling_is_bit_identical_run_to_run() -> None:
    audio = np.random.default_rng(3).uniform(-1, 1, 100_003)
    assert resample_to_rate(audio, 22_050).tobytes() == resample_to_rate(audio.copy(), 22_050).tobytes()


def test_the_tts_stage_does_not_import_scipy_signal() -> None:
    # scipy.signal costs ~1 s of CPU to import: a slot's speech must not pay it.
    code = "import sys, stages.tts.espeak, stages.tts.wav; print('scipy.signal' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert found == "False"
