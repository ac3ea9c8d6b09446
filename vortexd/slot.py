"""The one record of a slot, owned by the slot engine.

Everything the daemon knows about a slot lives in its `Slot`: who it is (recipe, inputs and their
hashes), where it stands on the timeline (state, air time, deadline, running stage, durations),
the work between its stages (what prepare made, the slab lease), its one cancel flag and its
publish gate. The scheduler decides over these records; the journal is written from them; the
stage workers get them in their jobs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vortexd.pipeline import Prepared, StageClock
from vortexd.recipe import Recipe
from vortexd.slot_state import TERMINAL_STATES, SlotState


class Withdrawn(InterruptedError):
    """The slot was withdrawn (cancelled, late, or the daemon is stopping) before it went out."""


class PublishGate:
    """Decides once, under a lock, whether a slot goes out: its finish renames it into place, or
    it is withdrawn (cancelled or abandoned as late) — never both, whichever comes first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcome: str | None = None

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        """Hold the gate around the final rename; raises Withdrawn if the slot was withdrawn."""
        with self._lock:
            if self._outcome == "withdrawn":
                raise Withdrawn("the slot was withdrawn before it was published")
            yield
            self._outcome = "published"

    def withdraw(self) -> bool:
        """Close the gate; False when the slot is already published (too late to withdraw)."""
        with self._lock:
            if self._outcome == "published":
                return False
            self._outcome = "withdrawn"
            return True

    @property
    def published(self) -> bool:
        """Whether the rename into place has happened."""
        return self._outcome == "published"


@dataclass(frozen=True)
class HeldSlab:
    """A slab the caller owns outright (the one-shot renderer's, the warm-up's): a lease with
    nothing to give back."""

    slab: Any

    def release(self) -> None:
        """Nothing to give back: the caller owns the memory."""


@dataclass(eq=False)
class Slot:
    """One slot's whole state (see the module docstring). Mutated on the event loop only, except
    `cancel` and `gate`, which the stage threads read."""

    slot_id: str
    seq: int
    recipe: Recipe
    inputs: dict[str, Any] = field(default_factory=dict)
    """The recipe's input files as snapshotted at submit: field → {path, sha256, bytes}."""
    # ----- the timeline (decided by the scheduler) -----
    air_s: float = 0.0
    deadline_s: float = 0.0
    state: SlotState = SlotState.QUEUED
    running_stage: str | None = None
    stage_started_s: float | None = None
    holds_slab: bool = False
    late: bool = False
    error: str | None = None
    published_s: float | None = None
    slack_s: float | None = None
    deadline_resolved: bool = False
    """Whether the slot's deadline outcome (met, missed, not the daemon's to miss) is counted."""
    durations_s: dict[str, float] = field(default_factory=dict)
    attempts: int = 0
    """Transient failures so far (a disk full, a crash); retried while the deadline allows."""
    retry_at_s: float | None = None
    """Not before this time is the failed stage tried again."""
    # ----- the work between stages -----
    prepared: Prepared | None = None
    stream: Any = None
    """slot_stream.StreamRecord once the warp has encoded the slot's stream."""
    lease: Any = None
    """vram.SlabLease while the slot holds a video slab."""
    clock: StageClock = field(default_factory=StageClock)
    accepted_monotonic_s: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    """Set when the slot is cancelled, abandoned or interrupted: running stages poll it."""
    gate: PublishGate = field(default_factory=PublishGate)

    @property
    def terminal(self) -> bool:
        """Whether the slot reached a state it never leaves."""
        return self.state in TERMINAL_STATES

    @property
    def retired(self) -> bool:
        """Final, no stage running and its deadline outcome counted: the engine may forget it."""
        return self.terminal and self.running_stage is None and self.deadline_resolved

    @property
    def frames(self):
        """This slot's frames in its leased slab."""
        return self.lease.slab[: self.recipe.output.n_frames]

    def release_slab(self) -> None:
        """Give the video slab back (idempotent)."""
        if self.lease is not None:
            self.lease.release()
            self.lease = None
