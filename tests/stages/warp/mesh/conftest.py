"""Fixtures for the mesh-warp tests: the built-in astronaut as an actor, prepared once."""

from __future__ import annotations

import numpy as np
import pytest

from stages.types import FRAME_SIZE_PX, Actor, MotionPlan

CURVES = ("jaw_open", "lip_width", "lip_round", "lips_closed", "blink", "eye_wide", "brow", "smile",
          "head_yaw_deg", "head_pitch_deg", "head_roll_deg", "shift_x_px", "shift_y_px")


def make_plan(n_frames: int, **curves: object) -> MotionPlan:
    """A plan of `n_frames`, every curve 0 unless given (a scalar or a per-frame array)."""
    values = {name: np.zeros(n_frames, np.float32) for name in CURVES}
    for name, value in curves.items():
        values[name] = np.broadcast_to(np.asarray(value, np.float32), (n_frames,)).copy()
    return MotionPlan(fps=24, **values)


def new_slab(n_frames: int, fill: int = 0) -> np.ndarray:
    """An (n, 512, 512, 3) uint8 slab filled with `fill`."""
    return np.full((n_frames, FRAME_SIZE_PX, FRAME_SIZE_PX, 3), fill, np.uint8)


@pytest.fixture(scope="session")
def astronaut_actor() -> Actor:
    """The scikit-image astronaut (already 512²) with MediaPipe landmarks."""
    from skimage import data

    from stages.image.face import detect_landmarks

    image = np.ascontiguousarray(data.astronaut())
    return Actor(image, detect_landmarks(image), np.eye(2, 3), "builtin:astronaut", "test")


@pytest.fixture(scope="session")
def prepared(astronaut_actor):
    """The astronaut prepared for the mesh warp (shared: preparing costs about a second)."""
    from stages.warp.mesh import MeshWarpBackend

    return MeshWarpBackend().prepare(astronaut_actor)


@pytest.fixture(scope="session")
def tracker_landmarks():
    """Track landmarks on rendered frames: (T, 478, 3), NaN rows where no face is found."""
    from stages.image.face import track_landmarks

    return track_landmarks
