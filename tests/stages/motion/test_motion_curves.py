"""Smooth building blocks: blends, noise and blink shapes behave as the planner relies on."""

from __future__ import annotations

import numpy as np

from stages.motion.curves import (SmoothNoise, blink_curve, crossfade_weights, cumulative_phase,
                                  normalized_convolution, raised_cosine_bumps, smoothstep)


def test_smoothstep_is_c1_with_flat_ends():
    """smoothstep goes 0 → 1 with zero slope at both ends and clamps outside [0, 1]."""
    x = np.linspace(-0.5, 1.5, 2001)
    y = smoothstep(x)
    slope = np.gradient(y, x)
    assert y[0] == 0.0 and y[-1] == 1.0
    assert abs(slope[np.searchsorted(x, 0.0)]) < 0.01 and abs(slope[np.searchsorted(x, 1.0) - 1]) < 0.01
    assert np.all(np.diff(y) >= 0)


def test_crossfade_weights_partition_unity_and_stay_non_negative():
    """Segment weights sum to 1 everywhere, never go negative, and hand over around each start."""
    t = np.linspace(0, 10, 1001)
    w = crossfade_weights(t, np.array([0.0, 3.0, 3.5, 7.0]), 0.8)
    assert w.shape == (4, t.size)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
    assert w.min() >= 0.0
    assert w[0, t < 2.5].min() == 1.0 and w[3, t > 7.5].min() == 1.0


def test_smooth_noise_has_unit_variance_and_no_jitter():
    """Band-limited noise has ≈ unit variance and its per-sample steps are tiny (no jitter)."""
    rng = np.random.default_rng(5)
    phase = np.linspace(0, 400, 40_000)
    x = SmoothNoise.draw(rng).sample(phase)
    assert 0.6 < x.std() < 1.4
    # At 100 samples per cycle, a smooth signal moves a small fraction of its σ per sample.
    assert np.abs(np.diff(x)).max() < 0.25


def test_cumulative_phase_integrates_rate():
    """A constant 2 Hz rate over 3 s accumulates 6 cycles."""
    phase = cumulative_phase(np.full(301, 2.0), 0.01)
    assert abs(phase[-1] - 6.0) < 1e-9 and phase[0] == 0.0


def test_normalized_convolution_lets_dominant_target_win():
    """Where a strong target meets a weak one, the blend sits closer to the strong target."""
    targets = np.r_[np.ones(100), np.zeros(100)]
    weights = np.r_[np.full(100, 4.0), np.full(100, 1.0)]
    out = normalized_convolution(targets, weights, 10.0)
    assert out[100] > 0.75  # at the boundary the dominant side pulls the value its way
    assert out[10] > 0.99 and out[190] < 0.01


def test_blink_is_asymmetric_and_peaks_at_one():
    """A blink reaches exactly 1 at its peak, closes in ~close_s and reopens more slowly."""
    t = np.arange(0, 2, 0.001)
    b = blink_curve(t, np.array([1.0]), np.array([0.08]), np.array([0.18]))
    assert b[1000] == 1.0 and b[:900].max() == 0.0
    closed_s = np.flatnonzero(b > 0.05)
    closing_s = (1000 - closed_s[0]) / 1000
    reopening_s = (closed_s[-1] - 1000) / 1000
    assert 0.06 < closing_s < 0.09 and 0.15 < reopening_s < 0.19


def test_raised_cosine_bumps_are_c1():
    """Emphasis bumps start and end with zero slope and peak at their amplitude."""
    t = np.arange(0, 3, 0.001)
    y = raised_cosine_bumps(t, np.array([1.0]), 0.5, np.array([2.0]))
    assert abs(y.max() - 2.0) < 1e-6
    dy = np.diff(y) / 0.001
    assert abs(dy[999]) < 0.05 and abs(dy[1500]) < 0.05
