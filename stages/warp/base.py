"""The warp-backend contract: prepare an actor once, prepare each plan's motion once, then render
plan chunks into a slab.

    prepared = backend.prepare(actor)        # once per actor (cached by the caller)
    prepared.prepare_motion(plan)            # once per plan, in the prepare stage
    prepared.render(plan, slice(0, 48), slab)  # the warp stage: rendering only
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from stages.errors import StageInputError
from stages.types import FRAME_SIZE_PX, Actor, MotionPlan


class MotionNotPrepared(RuntimeError):
    """render() was given a plan whose motion was never prepared: the prepare stage must call
    `prepared.prepare_motion(plan)` first. Raised instead of doing that work in the warp, the
    deadline-critical stage (LivePortrait would otherwise run M over a whole driving clip there)."""


class PreparedWarp(Protocol):
    """An actor made ready for one backend (cached per actor)."""

    def prepare_motion(self, plan: MotionPlan) -> None:
        """Do the one-off work `plan` needs before any of its frames render, and keep it.

        The prepare stage calls it once the plan is made, off the warp's critical path.
        LivePortrait reads the plan's driving clip here (M over its face crops, fitted to the
        slot); the mesh warp has nothing to do (it renders from the plan's curves alone).
        """

    def render(self, plan: MotionPlan, frames: slice, out: np.ndarray) -> None:
        """Write frames `frames` of `plan` into `out[frames]`.

        `out` is the whole video slab, (n_frames, 512, 512, 3) uint8 RGB. Must not allocate
        per frame; scratch buffers are owned by the prepared object and reused. Raises
        MotionNotPrepared when the plan needs work prepare_motion(plan) was to do.
        """


class WarpBackend(Protocol):
    """A warp backend: mesh warp on any machine, LivePortrait on a GPU node."""

    name: str

    def prepare(self, actor: Actor) -> PreparedWarp:
        """Precompute everything that depends on the actor alone."""


def validate_plan(plan: MotionPlan, frames: slice) -> tuple[int, int]:
    """Check that `plan` covers `frames` with finite 1-D curves; return (start, stop)."""
    n = plan.n_frames
    start, stop, step = frames.indices(n)
    if step != 1:
        raise StageInputError("frames", "only contiguous frame ranges can be rendered", step=step)
    for name, curve in plan.curves().items():
        arr = np.asarray(curve)
        if arr.ndim != 1 or arr.shape[0] != n:
            raise StageInputError(f"plan.{name}", "every curve must be 1-D with one value per frame",
                                  shape=tuple(arr.shape), n_frames=n)
        if not np.isfinite(arr[start:stop]).all():
            raise StageInputError(f"plan.{name}", "curve holds NaN or infinite values")
    return start, max(start, stop)


def check_slab(out: np.ndarray, stop: int) -> None:
    """Check that `out` is a (n, 512, 512, 3) uint8 slab of C-contiguous frames reaching `stop`."""
    if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 4
            and out.shape[1:] == (FRAME_SIZE_PX, FRAME_SIZE_PX, 3)):
        raise StageInputError("out", f"expected an (n, {FRAME_SIZE_PX}, {FRAME_SIZE_PX}, 3) uint8 slab",
                              shape=getattr(out, "shape", None), dtype=str(getattr(out, "dtype", None)))
    if stop > out.shape[0]:
        raise StageInputError("frames", "the frame range runs past the end of the slab",
                              stop=stop, slab_frames=out.shape[0])
    if stop > 0 and not out[0].flags.c_contiguous:
        raise StageInputError("out", "each slab frame must be C-contiguous")
