"""How the slot scheduler is tuned (`SchedulerOptions`) and what it counts (`SchedulerStats`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from stages.errors import StageInputError

STAGES: tuple[str, ...] = ("prepare", "warp", "finish")
"""Stage actions the engine runs and reports back: image+TTS, warp, verify+encode+publish."""

LatePolicy = Literal["skip", "publish_late"]


@dataclass(frozen=True)
class SchedulerOptions:
    """How slots are timed and how much work may overlap."""

    cadence_s: float = 45.0
    """Seconds between the air times of consecutive slots."""
    margin_s: float = 2.0
    """A slot must be published this long before it airs."""
    t0_s: float | None = None
    """Air time of seq 0 on the scheduler's clock; None: anchored when the first slot arrives."""
    grid_t0_s: float | None = None
    """The channel's air grid (air times `grid_t0_s + cadence·k`): every anchor and re-anchor of
    t0 lands on it, so each slot airs at one of the channel's air times. None: no grid."""
    first_air_lead_s: float | None = None
    """When anchoring (or re-anchoring) t0, the slot airs this long after it is accepted.
    None means one cadence."""
    late_policy: LatePolicy = "skip"
    """skip: a slot that cannot make its deadline is not started / is abandoned and marked late;
    publish_late: it runs to the end and is published marked late."""
    prepare_ahead: int = 1
    """How many slots may be preparing or prepared while waiting for the warp."""
    slab_count: int = 2
    """Video slabs: a slot holds one from warp start until its finish completes."""
    prepare_estimate_s: float | None = None
    warp_estimate_s: float | None = None
    finish_estimate_s: float | None = None
    """Prior stage durations used to predict whether a slot can make its deadline."""
    learn_estimates: bool = True
    """Refine the estimates from observed successful stage durations (moving average)."""
    estimate_weight: float = 0.3
    """Weight of the newest observation in the moving average."""
    reanchor_when_idle: bool = True
    """When a slot arrives with nothing else pending and could not make its deadline, move t0 so
    it airs `first_air_lead_s` from now instead of starting a permanently late timeline."""
    max_attempts: int = 6
    """A stage that fails for a transient reason (disk full, a crash) is tried this many times in
    all while its slot can still make its deadline; then the slot fails."""
    retry_backoff_s: float = 1.0
    """Seconds before a failed stage is tried again, doubling with each attempt up to
    `retry_backoff_max_s` (1, 2, 4, 8, 8 s: a full disk gets about 23 s to be freed)."""
    retry_backoff_max_s: float = 8.0

    def __post_init__(self) -> None:
        positive = {"cadence_s": self.cadence_s}
        if self.first_air_lead_s is not None:
            positive["first_air_lead_s"] = self.first_air_lead_s
        for name, value in positive.items():
            if not math.isfinite(value) or value <= 0:
                raise StageInputError(f"scheduler.{name}", "must be a positive number", value=value)
        non_negative = {"margin_s": self.margin_s, "retry_backoff_s": self.retry_backoff_s,
                        "retry_backoff_max_s": self.retry_backoff_max_s, "prepare_estimate_s": self.prepare_estimate_s,
                        "warp_estimate_s": self.warp_estimate_s,
                        "finish_estimate_s": self.finish_estimate_s}
        for name, value in non_negative.items():
            if value is not None and (not math.isfinite(value) or value < 0):
                raise StageInputError(f"scheduler.{name}", "must be a non-negative number",
                                      value=value)
        if self.margin_s >= self.cadence_s:
            raise StageInputError("scheduler.margin_s", "must be shorter than the cadence",
                                  margin_s=self.margin_s, cadence_s=self.cadence_s)
        if self.t0_s is not None and not math.isfinite(self.t0_s):
            raise StageInputError("scheduler.t0_s", "must be a finite number", value=self.t0_s)
        if self.late_policy not in ("skip", "publish_late"):
            raise StageInputError("scheduler.late_policy", "must be 'skip' or 'publish_late'",
                                  value=self.late_policy)
        for name in ("prepare_ahead", "slab_count", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise StageInputError(f"scheduler.{name}", "must be an integer >= 1", value=value)
        if not 0 < self.estimate_weight <= 1:
            raise StageInputError("scheduler.estimate_weight", "must be in (0, 1]",
                                  value=self.estimate_weight)

    def prior_estimate_s(self, stage: str) -> float | None:
        """The configured duration estimate of `stage`, if any."""
        return {"prepare": self.prepare_estimate_s, "warp": self.warp_estimate_s,
                "finish": self.finish_estimate_s}[stage]


@dataclass(frozen=True)
class SchedulerStats:
    """Counts since the scheduler was created (restored slots are not counted again)."""

    submitted: int = 0
    published: int = 0
    published_late: int = 0
    late: int = 0
    """Slots marked late by the policy (skipped, abandoned or published late)."""
    missed_deadlines: int = 0
    """Slots whose deadline passed without their video published (late or failed; not cancelled
    before the deadline). Counted when the clock is seen past the deadline."""
    failed: int = 0
    rejected: int = 0
    """Failed slots whose input was at fault (bad image, unspeakable text): no deadline miss."""
    cancelled: int = 0
    abandoned: int = 0
    """Running slots told to stop because they were late."""
    retries: int = 0
    """Stages tried again after a transient failure."""
    reanchors: int = 0


