"""What a blink is, read off a lid-aperture track: one definition for reading driving videos and
for judging rendered slots.

A blink is a quick dip of the aperture below BLINK_BELOW of the eyes' local open level, lasting
at most MAX_BLINK_S, with the eyes open (OPEN_AROUND of their usual level) within that time
before and after it. Slow narrowing (looking down, squinting) and long closures are not blinks.
"""

from __future__ import annotations

import numpy as np

from stages.motion.curves import rolling_percentile, true_runs
from stages.motion.driving import face_geometry as geo

BLINK_BELOW = 0.6
"""A blink dips below this fraction of the eyes' local open level (the clips' blinks reach
0.2–0.5 of it at 25–30 fps; a look down or a half-blink stays above 0.65)..."""
MAX_BLINK_S = 0.5
"""...for no longer than this (a blink takes 100–400 ms)..."""
OPEN_AROUND = 0.7
"""...with the eyes, within that time before and after it, at least this open against their
usual open level."""
LOCAL_OPEN_S = 0.5
"""The local open level: the 80th percentile over ±0.5 s, a level that ignores the dip itself."""


def local_open_level(aperture: np.ndarray, fps: float) -> np.ndarray:
    """(T,) the eyes' open level around each frame (80th percentile over ±LOCAL_OPEN_S)."""
    return rolling_percentile(aperture, round(LOCAL_OPEN_S * fps), 80)


def blink_spans(aperture: np.ndarray, fps: float) -> list[tuple[int, int]]:
    """[start, stop) frames of each blink's dip below BLINK_BELOW of the local open level."""
    below = aperture < BLINK_BELOW * local_open_level(aperture, fps)
    open_around = OPEN_AROUND * geo.open_level(aperture)
    reach = int(round(MAX_BLINK_S * fps))

    def is_blink(start: int, stop: int) -> bool:
        beside = (aperture[max(0, start - reach):start], aperture[stop:stop + reach])
        return stop - start <= reach and all(side.size == 0 or side.max() >= open_around for side in beside)

    return [(start, stop) for start, stop in true_runs(below) if is_blink(start, stop)]
