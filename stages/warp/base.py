"""The warp-backend contract: prepare an actor once, then render plan chunks into a slab."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from stages.types import Actor, MotionPlan


class PreparedWarp(Protocol):
    """An actor made ready for one backend (cached per actor)."""

    def render(self, plan: MotionPlan, frames: slice, out: np.ndarray) -> None:
        """Write frames `frames` of `plan` into `out[frames]`.

        `out` is the whole video slab, (n_frames, 512, 512, 3) uint8 RGB. Must not allocate
        per frame; scratch buffers are owned by the prepared object and reused.
        """


class WarpBackend(Protocol):
    """A warp backend: mesh warp on any machine, LivePortrait on a GPU node."""

    name: str

    def prepare(self, actor: Actor) -> PreparedWarp:
        """Precompute everything that depends on the actor alone."""
