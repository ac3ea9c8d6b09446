"""What the daemon holds in memory for a slot between its stages (lost on a crash, by design:
the journal has the recipe and a restart prepares it again)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from stages.types import Actor, MotionPlan, Speech
from vortexd.pipeline import StageClock
from vortexd.recipe import Recipe


@dataclass
class SlotWork:
    """A slot's recipe and the artefacts its finished stages produced."""

    recipe: Recipe
    seq: int
    accepted_monotonic_s: float = field(default_factory=time.monotonic)
    actor: Actor | None = None
    speech: Speech | None = None
    plan: MotionPlan | None = None
    lease: Any = None  # vram.SlabLease while the slot holds a video slab
    warnings: list[str] = field(default_factory=list)
    clock: StageClock = field(default_factory=StageClock)

    def release_slab(self) -> None:
        """Give the video slab back (idempotent)."""
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    @property
    def frames(self):
        """This slot's frames in its leased slab."""
        return self.lease.slab[: self.plan.n_frames]
