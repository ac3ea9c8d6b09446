"""The driven-slot judge: blink events (short dips, timed at their middle) and eye-midpoint jitter."""

from __future__ import annotations

import numpy as np

from stages.motion.driving.fit import clip_positions
from stages.verify.motion_transfer import blink_frames, blinks_on_slot, jitter


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


def test_a_clip_blink_is_placed_on_the_slot_each_time_the_loop_shows_it() -> None:
    """A 30 fps clip of 100 frames blinking for two frames (40–41) and one frame deep (70), fitted to
    a 10 s slot at 24 fps by ping-pong: each blink is found on the clip's own frames (the one-frame
    blink would lose half its depth read between frames) and placed on the slot every time the
    clip passes it, forward and backward."""
    aperture = np.full(100, 0.3)
    aperture[40:42] = 0.08
    aperture[70] = 0.12
    positions = clip_positions(100, 30.0, 240, 24)
    placed = blinks_on_slot(aperture, 30.0, positions)
    expected = []
    for moment in (40.5, 70.0):
        # A pass over the moment is a change of side; a position exactly on it (slot frame 56 shows
        # clip frame 70.0) is on one side only, so it is one crossing, not one on each side.
        crossings = np.flatnonzero(np.diff(positions >= moment))
        expected += [int(k if abs(positions[k] - moment) <= abs(positions[k + 1] - moment) else k + 1)
                     for k in crossings]
    assert len(placed) == len(expected) == 6  # 240 slot frames show the clip 3 times over
    assert all(abs(p - e) <= 1 for p, e in zip(placed, sorted(expected)))


def test_blinks_are_placed_the_same_when_positions_land_an_ulp_either_side_of_a_clip_frame() -> None:
    """Positions that land exactly on clip frames (30 fps on 24: every fourth slot frame) come out
    of the fit an ulp above or below depending on how the BLAS build sums its convolution; the
    blinks placed on the slot must not depend on which."""
    aperture = np.full(100, 0.3)
    aperture[40:42] = 0.08
    aperture[70] = 0.12
    # There and back at a quarter clip frame per slot frame: every fourth position is a clip frame.
    exact = np.concatenate([np.arange(0.0, 99.0, 0.25), np.arange(99.0, 0.0, -0.25)])
    placed = blinks_on_slot(aperture, 30.0, exact)
    for nudged in (np.nextafter(exact, -np.inf), np.nextafter(exact, np.inf)):
        assert blinks_on_slot(aperture, 30.0, nudged) == placed


def test_jitter_is_what_a_smooth_track_does_not_have() -> None:
    """A slow sway has almost no jitter; the same sway with a frame-to-frame wobble has it."""
    t = np.arange(240) / 24
    sway = np.column_stack([0.2 * np.sin(2 * np.pi * 0.3 * t), 0.1 * np.cos(2 * np.pi * 0.2 * t)])
    wobble = sway + 0.01 * np.where(np.arange(240) % 2, 1.0, -1.0)[:, None]
    assert jitter(sway) < 0.003 and jitter(wobble) > 0.008
