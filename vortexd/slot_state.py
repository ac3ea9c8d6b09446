"""A slot's states: one enum for the journal, the scheduler, the events and `vortexctl`.

    submit ──► queued ──► preparing ──► prepared ──► warping ──► warped ──► finishing ──► published
                  │            │                        │                      │
                  └────────────┴──── cancelled / late / failed (terminal) ─────┘

`queued` is written by the journal when a recipe is accepted (its row exists from then on);
the daemon moves a slot through the stage states as the scheduler dispatches its stages, and
into a terminal state when it publishes, fails, is cancelled, or misses its deadline.
"""

from __future__ import annotations

from enum import StrEnum


class SlotState(StrEnum):
    """Where a slot is in its life cycle."""

    QUEUED = "queued"
    PREPARING = "preparing"
    PREPARED = "prepared"
    WARPING = "warping"
    WARPED = "warped"
    FINISHING = "finishing"
    PUBLISHED = "published"
    LATE = "late"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({SlotState.PUBLISHED, SlotState.LATE, SlotState.FAILED, SlotState.CANCELLED})
"""States a slot never leaves: the journal refuses to change them (no slot is published twice)."""

RUNNING_STATE = {"prepare": SlotState.PREPARING, "warp": SlotState.WARPING, "finish": SlotState.FINISHING}
"""The state a slot is in while each stage runs (what the engine journals when it dispatches)."""

LEGACY_NAMES = {"accepted": SlotState.QUEUED}
"""State names older journals wrote, and what they mean now."""
