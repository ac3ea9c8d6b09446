"""The driven-slot judge: blink events (short dips, timed at their middle) and eye-midpoint jitter."""

from __future__ import annotations

import numpy as np

from stages.verify.motion_transfer import blink_frames, jitter


def test_a_blink_is_a_short_dip_timed_at_its_middle() -> None:
    """Open eyes (0.3) with a 3-frame dip at 49–51 and a 5-frame dip at 100–104: blinks at 50 and
    102; the eyes narrowing slowly to 0.15 over two seconds (looking down) and a 20-frame closure
    are not blinks."""
    aperture = np.full(300, 0.3)
    aperture[49:52] = [0.15, 0.08, 0.12]
    aperture[100:105] = 0.1
    aperture[150:198] = np.linspace(0.3, 0.15, 48)
    aperture[198:230] = 0.15
    aperture[260:280] = 0.08
    assert blink_frames(aperture, 24) == [50, 102]


def test_jitter_is_what_a_smooth_track_does_not_have() -> None:
    """A slow sway has almost no jitter; the same sway with a frame-to-frame wobble has it."""
    t = np.arange(240) / 24
    sway = np.column_stack([0.2 * np.sin(2 * np.pi * 0.3 * t), 0.1 * np.cos(2 * np.pi * 0.2 * t)])
    wobble = sway + 0.01 * np.where(np.arange(240) % 2, 1.0, -1.0)[:, None]
    assert jitter(sway) < 0.003 and jitter(wobble) > 0.008
