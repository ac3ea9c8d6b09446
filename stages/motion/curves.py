"""Smooth building blocks for motion curves: blends, kernels, band-limited noise, blink shapes.

Everything here is vectorised over time and has no knowledge of presets or phonemes, so the
planner can compose curves whose smoothness (C¹ or better) follows from these pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def smoothstep(x: np.ndarray | float) -> np.ndarray:
    """Cubic smoothstep 3x² − 2x³ of `x` clamped to [0, 1]: C¹, with zero slope at both ends."""
    u = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def crossfade_weights(times_s: np.ndarray, starts_s: np.ndarray, transition_s: float) -> np.ndarray:
    """Per-segment blend weights, shape (n_segments, n_times), summing to 1 at every time.

    Segment i takes over from segment i−1 through a smoothstep that spans `transition_s` centred
    on `starts_s[i]`; the first segment owns everything before the first transition. Because every
    step has the same width and the starts increase, the weights are never negative (telescoping
    differences of ordered steps), and each weight is C¹.
    """
    times = np.asarray(times_s, dtype=np.float64)
    starts = np.asarray(starts_s, dtype=np.float64)
    # steps[i] rises 0 → 1 around starts[i]; the first segment is "already on" (step = 1).
    steps = smoothstep((times[None, :] - (starts[1:, None] - transition_s / 2.0)) / transition_s)
    steps = np.concatenate([np.ones((1, times.size)), steps, np.zeros((1, times.size))], axis=0)
    return steps[:-1] - steps[1:]


def gaussian_kernel(sigma_samples: float) -> np.ndarray:
    """A normalised Gaussian kernel with standard deviation `sigma_samples`, truncated at 4σ."""
    if sigma_samples <= 0:
        return np.ones(1)
    radius = max(1, int(np.ceil(4.0 * sigma_samples)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma_samples) ** 2)
    return kernel / kernel.sum()


def gaussian_smooth(values: np.ndarray, sigma_samples: float) -> np.ndarray:
    """`values` (1-D, or 2-D smoothed along the last axis) convolved with a Gaussian.

    Edges are padded with the edge value so a curve that starts at rest is not pulled toward 0.
    """
    kernel = gaussian_kernel(sigma_samples)
    radius = kernel.size // 2
    arr = np.atleast_2d(np.asarray(values, dtype=np.float64))
    padded = np.pad(arr, ((0, 0), (radius, radius)), mode="edge")
    out = np.stack([np.convolve(row, kernel, mode="valid") for row in padded])
    return out.reshape(np.shape(values))


def rolling_percentile(values: np.ndarray, half_window: int, q: float) -> np.ndarray:
    """The `q`th percentile of `values` over each sample's ±`half_window` neighbours (edges padded
    with the edge value): a local level that ignores short dips such as blinks."""
    half = max(1, int(half_window))
    padded = np.pad(np.asarray(values, dtype=np.float64), half, mode="edge")
    return np.percentile(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), q, axis=1)


def normalized_convolution(targets: np.ndarray, weights: np.ndarray, sigma_samples: float) -> np.ndarray:
    """Weighted Gaussian average: smooth(weights·targets) / smooth(weights).

    This is dominance blending: where a strong (high-weight) target sits next to a weak one, the
    strong one wins the overlap, so a weak segment (e.g. "h") takes its neighbours' shape.
    """
    numerator = gaussian_smooth(weights * targets, sigma_samples)
    denominator = gaussian_smooth(weights, sigma_samples)
    return numerator / np.maximum(denominator, 1e-9)


def cumulative_phase(rate_hz: np.ndarray, dt_s: float) -> np.ndarray:
    """Phase in cycles, the trapezoid integral of `rate_hz` sampled every `dt_s` (starts at 0)."""
    rate = np.asarray(rate_hz, dtype=np.float64)
    increments = 0.5 * (rate[1:] + rate[:-1]) * dt_s
    return np.concatenate([[0.0], np.cumsum(increments)])


@dataclass(frozen=True)
class SmoothNoise:
    """Band-limited noise: a sum of sinusoids with random frequencies and phases.

    Infinitely differentiable (so no jitter), with unit variance over a long window. Frequencies
    are in cycles per unit of the phase it is sampled at, so sampling at a time-warped phase
    (∫ rate dt) changes its speed smoothly.
    """

    frequencies: np.ndarray  # (k,) cycles per phase unit
    phases_rad: np.ndarray  # (k,)
    amplitudes: np.ndarray  # (k,)

    @classmethod
    def draw(cls, rng: np.random.Generator, n_components: int = 7, low: float = 0.45,
             high: float = 1.6) -> "SmoothNoise":
        """Draw `n_components` sinusoids with frequencies in [low, high] (relative to the rate)."""
        frequencies = rng.uniform(low, high, n_components)
        phases = rng.uniform(0.0, 2.0 * np.pi, n_components)
        # Pinkish spectrum: slower components carry more of the motion, like a real head sway.
        amplitudes = 1.0 / np.sqrt(frequencies)
        # A sinusoid of amplitude a has variance a²/2; scale so the sum has unit variance.
        amplitudes = amplitudes / np.sqrt(0.5 * np.sum(amplitudes**2))
        return cls(frequencies=frequencies, phases_rad=phases, amplitudes=amplitudes)

    def sample(self, phase: np.ndarray) -> np.ndarray:
        """The noise at `phase` (any shape), unit variance."""
        arg = 2.0 * np.pi * np.multiply.outer(np.asarray(phase, dtype=np.float64), self.frequencies)
        return np.sin(arg + self.phases_rad) @ self.amplitudes


def soft_limit(x: np.ndarray, limit: float) -> np.ndarray:
    """`limit · tanh(x / limit)`: identity near 0, smoothly saturating at ±limit (C∞)."""
    return limit * np.tanh(np.asarray(x, dtype=np.float64) / limit)


def raised_cosine_bumps(times_s: np.ndarray, onsets_s: np.ndarray, widths_s: float | np.ndarray,
                        amplitudes: np.ndarray) -> np.ndarray:
    """Sum of raised-cosine bumps (1 − cos)/2, each starting at an onset and lasting its width.

    Each bump is C¹ (zero slope where it starts and ends) and peaks at its amplitude halfway.
    """
    times = np.asarray(times_s, dtype=np.float64)
    onsets = np.asarray(onsets_s, dtype=np.float64)
    if onsets.size == 0:
        return np.zeros_like(times)
    widths = np.broadcast_to(np.asarray(widths_s, dtype=np.float64), onsets.shape)
    u = (times[:, None] - onsets[None, :]) / widths[None, :]
    inside = (u >= 0.0) & (u <= 1.0)
    bumps = np.where(inside, 0.5 - 0.5 * np.cos(2.0 * np.pi * np.clip(u, 0.0, 1.0)), 0.0)
    return bumps @ np.asarray(amplitudes, dtype=np.float64)


def blink_curve(times_s: np.ndarray, peaks_s: np.ndarray, close_s: np.ndarray,
                reopen_s: np.ndarray) -> np.ndarray:
    """Eyelid closure in [0, 1] for blinks peaking at `peaks_s` (1 exactly at each peak).

    A blink is asymmetric like a real one: the lid falls in `close_s` and rises more slowly in
    `reopen_s`, each half a smoothstep, so the curve is C¹ with zero slope at rest and at the peak.
    Overlapping blinks combine by maximum.
    """
    times = np.asarray(times_s, dtype=np.float64)
    peaks = np.asarray(peaks_s, dtype=np.float64)
    if peaks.size == 0:
        return np.zeros_like(times)
    dt = times[:, None] - peaks[None, :]
    closing = smoothstep(1.0 + dt / np.asarray(close_s, dtype=np.float64)[None, :])
    reopening = smoothstep(1.0 - dt / np.asarray(reopen_s, dtype=np.float64)[None, :])
    return np.where(dt <= 0.0, closing, reopening).max(axis=1)


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in the boolean `mask`, in order."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], np.asarray(mask, bool), [False]]).astype(np.int8)))
    return [(int(start), int(stop)) for start, stop in zip(edges[::2], edges[1::2])]
