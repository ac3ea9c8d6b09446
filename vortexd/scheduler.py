"""The slot scheduler: pure policy over the engine's slot records.

No asyncio, threads or I/O, and no slot state of its own: the engine owns every `Slot` record
and hands them in. The scheduler decides — which stage of which slot starts now, which slot is
late, when a failed stage is tried again — by writing the timeline fields of those records
(state, running stage, slab reservation, lateness) and returning `Action`s the engine must run.
Of its own it keeps only the timeline (t0), the learned stage estimates and the counters.

Every stage action returned is considered *started*: the engine runs it and reports it back
exactly once through `on_stage_done` (also when it was interrupted, with `ok=False`).

Timeline: slot k (its `seq`) airs at `t0 + cadence·k`; its video must be published `margin`
seconds before that (the deadline). Image+TTS ("prepare") of k+1 overlaps the warp of k, and
verify+encode+publish ("finish") of k−1 overlaps it too; one warp at a time, in seq order, each
needing one of `slab_count` video slabs from warp start until its finish completes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from stages.errors import StageInputError
from vortexd.clock import Clock, MonotonicClock
from vortexd.scheduler_options import STAGES, SchedulerOptions, SchedulerStats
from vortexd.slot import Slot
from vortexd.slot_state import RUNNING_STATE, SlotState

__all__ = ["STAGES", "Action", "Scheduler", "SchedulerOptions", "SchedulerStateError", "SchedulerStats"]

ActionKind = Literal["prepare", "warp", "finish", "mark_late", "abandon"]

_NOT_WARPED_YET = (SlotState.QUEUED, SlotState.PREPARING, SlotState.PREPARED)
_DONE_STATE = {"prepare": SlotState.PREPARED, "warp": SlotState.WARPED, "finish": SlotState.PUBLISHED}
_BEFORE_STATE = {"prepare": SlotState.QUEUED, "warp": SlotState.PREPARED, "finish": SlotState.WARPED}
"""Where a slot goes back to when a stage fails transiently (or a restart lost the stage)."""
RESUME_STATE = {SlotState.PREPARING: SlotState.QUEUED, SlotState.WARPING: SlotState.PREPARED,
                SlotState.FINISHING: SlotState.WARPED}
"""A restart loses whatever a stage was doing: resume from the last state that completed."""


class SchedulerStateError(RuntimeError):
    """The engine reported something impossible (e.g. a stage finishing that was never started)."""


@dataclass(frozen=True)
class Action:
    """Something the engine must do now: start a stage, or record/stop a late slot."""

    kind: ActionKind
    slot_id: str
    reason: str = ""


def pending_slots(slots: Iterable[Slot]) -> list[Slot]:
    """The slots not in a final state, in air order (seq)."""
    return sorted((slot for slot in slots if not slot.terminal), key=lambda slot: slot.seq)


class Scheduler:
    """Decides, from the records and the clock, what each slot does next (see the module docstring).

    Not thread-safe by design: the engine calls it from its event loop only.
    """

    def __init__(self, options: SchedulerOptions | None = None, clock: Clock | None = None) -> None:
        self.options = options or SchedulerOptions()
        self.clock = clock or MonotonicClock()
        self._t0_s = self.options.t0_s
        self._last_seq = -1
        self._learned_s: dict[str, float] = {}
        self._counts: dict[str, int] = dict.fromkeys(SchedulerStats.__dataclass_fields__, 0)

    # ----- read-only views ---------------------------------------------------------------------

    @property
    def t0_s(self) -> float | None:
        """Air time of seq 0 on the scheduler's clock."""
        return self._t0_s

    @property
    def stats(self) -> SchedulerStats:
        """Counters since start-up (restored slots are not counted again)."""
        return SchedulerStats(**self._counts)

    def estimate_s(self, stage: str) -> float:
        """The current duration estimate of `stage`: learned, else configured, else 0."""
        if stage not in STAGES:
            raise StageInputError("stage", f"unknown stage; expected one of {STAGES}", stage=stage)
        if stage in self._learned_s:
            return self._learned_s[stage]
        return self.options.prior_estimate_s(stage) or 0.0

    def predicted_publish_s(self, slots: Iterable[Slot], now_s: float) -> dict[str, float]:
        """When each pending slot is expected to be published (optimistic list scheduling)."""
        return self._simulate(pending_slots(slots), now_s)[0]

    def next_wakeup_s(self, slots: Iterable[Slot], now_s: float) -> float | None:
        """Latest time to call `next_actions` again if no event arrives first (None: no need).

        Deadlines, retry times and predicted-infeasibility crossings are the only things that
        change with time alone; a predicted publish moves at most one second per second, so
        waking at `now + (deadline − predicted)` is never too late.
        """
        slots = list(slots)
        times = [s.deadline_s for s in slots if not s.deadline_resolved]
        times += [s.retry_at_s for s in slots if s.retry_at_s is not None and not s.terminal]
        if self.options.late_policy == "skip":
            pending = pending_slots(slots)
            predicted, _ = self._simulate(pending, now_s)
            times += [now_s + (s.deadline_s - predicted[s.slot_id]) for s in pending
                      if s.state in _NOT_WARPED_YET and s.slot_id in predicted]
        if not times:
            return None
        # Deadlines are checked with a strict ">", so nudge past them.
        return max(now_s, min(times) + 1e-6)

    # ----- events ------------------------------------------------------------------------------

    def admit(self, slot: Slot, slots: Iterable[Slot], now_s: float | None = None) -> None:
        """Put a newly accepted (journaled) slot on the timeline: its air time and deadline."""
        if slot.seq <= self._last_seq:
            raise StageInputError("seq", "must be greater than every seq accepted before",
                                  seq=slot.seq, last_seq=self._last_seq)
        now = self.clock.now_s() if now_s is None else now_s
        if self._t0_s is None:
            self._anchor(now, slot.seq)
        elif self.options.reanchor_when_idle and not pending_slots(s for s in slots if s is not slot):
            deadline = self._air_s(slot.seq) - self.options.margin_s
            if deadline < now + sum(self.estimate_s(stage) for stage in STAGES):
                self._anchor(now, slot.seq)
                self._counts["reanchors"] += 1
        self._place(slot, self._air_s(slot.seq))
        self._counts["submitted"] += 1

    def restore(self, slot: Slot, state: SlotState | str, air_s: float | None = None) -> None:
        """Put a slot read back from the journal on the timeline after a restart.

        A slot that was mid-stage goes back to the last state that completed (warping →
        prepared, …). Counters are not touched. `air_s` overrides the air time from `t0_s`.
        """
        try:
            restored = SlotState(state)
        except ValueError:
            raise StageInputError("state", "unknown slot state",
                                  state=state, expected=[s.value for s in SlotState]) from None
        if air_s is None:
            if self._t0_s is None:
                raise StageInputError("t0_s", "restoring without air_s needs a t0_s", seq=slot.seq)
            air_s = self._air_s(slot.seq)
        slot.state = RESUME_STATE.get(restored, restored)
        slot.holds_slab = slot.state is SlotState.WARPED  # its frames sit in a slab until it finishes
        self._place(slot, air_s)
        slot.deadline_resolved = slot.terminal
        self._last_seq = max(self._last_seq, slot.seq)

    def reanchor(self, slots: Iterable[Slot], now_s: float, lead_s: float | None = None) -> float | None:
        """Move t0 so the first pending slot airs `lead_s` (default first_air_lead_s) from now.

        For a restart after a long outage: pending slots get new air times and deadlines instead
        of all being late. Returns the new t0 (None when nothing is pending).
        """
        pending = pending_slots(slots)
        if not pending:
            return None
        lead = self._lead_s() if lead_s is None else lead_s
        self._t0_s = self._on_grid(now_s + lead - self.options.cadence_s * pending[0].seq)
        for slot in pending:
            self._place(slot, self._air_s(slot.seq))
        self._counts["reanchors"] += 1
        return self._t0_s

    def cancel(self, slot: Slot, now_s: float | None = None) -> str | None:
        """Cancel a slot. Returns the stage the engine must interrupt, or None if none is running.

        Cancelling a cancelled slot is a no-op; cancelling another final one is an error. A
        running slot keeps its slab reservation until its stage reports back.
        """
        if slot.state is SlotState.CANCELLED:
            return None
        if slot.terminal:
            raise StageInputError("slot_id", f"slot is already {slot.state}", slot_id=slot.slot_id,
                                  state=str(slot.state))
        now = self.clock.now_s() if now_s is None else now_s
        slot.state = SlotState.CANCELLED
        self._counts["cancelled"] += 1
        if not slot.deadline_resolved:
            # Cancelled in time is the operator's choice, not a miss; after the deadline it was.
            self._resolve(slot, missed=now > slot.deadline_s)
        if slot.running_stage is None:
            slot.holds_slab = False
        return slot.running_stage

    def on_stage_done(self, slot: Slot, stage: str, ok: bool, now_s: float, error: str | None = None,
                      input_error: bool = False, transient: bool = False) -> None:
        """Record that `stage` of `slot` ended (successfully or not) at `now_s`.

        `input_error`: the stage failed on the recipe's own input; the slot fails as rejected,
        and its deadline is no longer the daemon's to miss. `transient`: the fault was the
        node's (disk full, a crash): the stage is tried again while attempts and time remain.
        """
        if stage not in STAGES:
            raise StageInputError("stage", f"unknown stage; expected one of {STAGES}", stage=stage)
        if slot.running_stage != stage:
            raise SchedulerStateError(
                f"slot {slot.slot_id!r} reported {stage!r} done but {slot.running_stage!r} is running")
        started_s = now_s if slot.stage_started_s is None else slot.stage_started_s
        duration_s = max(0.0, now_s - started_s)
        slot.durations_s[stage] = duration_s
        slot.running_stage = slot.stage_started_s = None
        if slot.terminal:
            self._after_interrupted(slot, stage, ok, now_s)
        elif ok:
            self._learn(stage, duration_s)
            slot.state = _DONE_STATE[stage]
            if stage == "finish":
                self._published(slot, now_s)
        elif transient and self._may_retry(slot, stage, now_s):
            self._retry(slot, stage, now_s, error)
        else:
            self._fail(slot, stage, error, input_error)

    def on_stage_interrupted(self, slot: Slot, stage: str) -> None:
        """A stage stopped because the daemon is stopping: the slot goes back to where the stage
        began (a restart resumes it there), nothing is counted or learned."""
        if slot.running_stage != stage:
            raise SchedulerStateError(
                f"slot {slot.slot_id!r} reported {stage!r} interrupted but {slot.running_stage!r} is running")
        slot.running_stage = slot.stage_started_s = None
        if not slot.terminal:
            slot.state = _BEFORE_STATE[stage]
        if stage == "warp" or slot.terminal:
            slot.holds_slab = False

    # ----- decisions ---------------------------------------------------------------------------

    def next_actions(self, slots: Iterable[Slot], now_s: float, draining: bool = False) -> list[Action]:
        """What to do now, warp first. Each stage action returned is marked as started.

        `draining`: no slot starts preparing; slots already prepared still warp and finish.
        """
        slots = list(slots)
        late_actions = self._apply_late_policy(pending_slots(slots), now_s)
        self._count_missed(slots, now_s)
        pending = pending_slots(slots)
        warp = self._start_warp(slots, pending, now_s)
        finishes = self._start_finishes(pending, now_s)
        prepares = [] if draining else self._start_prepares(pending, now_s)
        return warp + late_actions + finishes + prepares

    def _apply_late_policy(self, pending: list[Slot], now_s: float) -> list[Action]:
        actions: list[Action] = []
        if self.options.late_policy == "publish_late":
            for slot in pending:
                if now_s > slot.deadline_s and not slot.late:
                    # Runs to the end anyway; the engine records that it will air late.
                    slot.late = True
                    self._counts["late"] += 1
                    actions.append(Action("mark_late", slot.slot_id, "deadline passed"))
            return actions
        _, infeasible = self._simulate(pending, now_s)
        for slot in pending:
            if now_s > slot.deadline_s:
                actions.append(self._skip(slot, "deadline passed"))
            elif slot.slot_id in infeasible:
                actions.append(self._skip(slot, "cannot finish before the deadline"))
        return actions

    def _skip(self, slot: Slot, reason: str) -> Action:
        slot.state = SlotState.LATE
        slot.late = True
        self._counts["late"] += 1
        if slot.running_stage is not None:
            self._counts["abandoned"] += 1
            return Action("abandon", slot.slot_id, reason)
        slot.holds_slab = False
        return Action("mark_late", slot.slot_id, reason)

    def _start_warp(self, slots: list[Slot], pending: list[Slot], now_s: float) -> list[Action]:
        if any(slot.running_stage == "warp" for slot in slots):
            return []
        if sum(slot.holds_slab for slot in slots) >= self.options.slab_count:
            return []
        # Slots warp in seq order: only the oldest slot that has not warped may go.
        candidate = next((s for s in pending if s.state in _NOT_WARPED_YET), None)
        if candidate is None or candidate.state is not SlotState.PREPARED or self._waiting(candidate, now_s):
            return []
        self._start(candidate, "warp", now_s)
        candidate.holds_slab = True
        return [Action("warp", candidate.slot_id)]

    def _start_finishes(self, pending: list[Slot], now_s: float) -> list[Action]:
        actions = []
        for slot in pending:
            if slot.state is SlotState.WARPED and not self._waiting(slot, now_s):
                self._start(slot, "finish", now_s)
                actions.append(Action("finish", slot.slot_id))
        return actions

    def _start_prepares(self, pending: list[Slot], now_s: float) -> list[Action]:
        ahead = sum(s.state in (SlotState.PREPARING, SlotState.PREPARED) for s in pending)
        actions = []
        for slot in pending:
            if ahead >= self.options.prepare_ahead:
                break
            if slot.state is SlotState.QUEUED and not self._waiting(slot, now_s):
                self._start(slot, "prepare", now_s)
                actions.append(Action("prepare", slot.slot_id))
                ahead += 1
        return actions

    def _simulate(self, pending: list[Slot], now_s: float) -> tuple[dict[str, float], set[str]]:
        """Predict each pending slot's publish time; under `skip`, find slots that cannot make it.

        A list-scheduling pass: slots already holding a slab first, then the rest in seq order,
        each waiting for its prepare, the single warp and a free slab. Optimistic by design
        (prepare assumed to start now; a stage past its estimate ends now) so a slot is only
        skipped when even the best case misses.
        """
        est = {stage: self.estimate_s(stage) for stage in STAGES}
        predicted, held_until_s, warp_free_s = self._simulate_held(pending, now_s, est)
        # One entry per slab: when it is next free. Free slabs, and slabs of slots being
        # interrupted or abandoned, come back about now; the others when their finish ends.
        free_count = max(0, self.options.slab_count - len(held_until_s))
        slab_free_s = held_until_s[: self.options.slab_count] + [now_s] * free_count
        heapq.heapify(slab_free_s)
        skip = self.options.late_policy == "skip"
        infeasible: set[str] = set()
        for slot in (s for s in pending if s.state in _NOT_WARPED_YET):
            ready_s = self._ready_s(slot, est["prepare"], now_s)
            slab_s = slab_free_s[0] if slab_free_s else warp_free_s
            warp_end_s = max(ready_s, warp_free_s, slab_s) + est["warp"]
            publish_s = warp_end_s + est["finish"]
            predicted[slot.slot_id] = publish_s
            if skip and publish_s > slot.deadline_s:
                infeasible.add(slot.slot_id)
                continue  # skipped: it takes neither the warp nor a slab
            warp_free_s = warp_end_s
            if slab_free_s:
                heapq.heapreplace(slab_free_s, publish_s)
        return predicted, infeasible

    def _simulate_held(self, pending: list[Slot], now_s: float,
                       est: dict[str, float]) -> tuple[dict[str, float], list[float], float]:
        """Predicted publish of the slots past their prepare, when their slabs come back, and
        when the warp is next free."""
        skip = self.options.late_policy == "skip"
        predicted: dict[str, float] = {}
        held_until_s: list[float] = []
        warp_free_s = now_s
        for slot in (s for s in pending if s.state not in _NOT_WARPED_YET):
            if skip and now_s > slot.deadline_s:
                continue  # about to be abandoned: its warp turn and slab come back now
            finish_start_s = now_s if slot.retry_at_s is None else max(now_s, slot.retry_at_s)
            if slot.state is SlotState.WARPING:
                warp_free_s = self._stage_end_s(slot, est["warp"], now_s)
                finish_start_s = warp_free_s
            if slot.state is SlotState.FINISHING:
                end_s = self._stage_end_s(slot, est["finish"], now_s)
            else:
                end_s = finish_start_s + est["finish"]
            predicted[slot.slot_id] = end_s
            if slot.holds_slab:
                held_until_s.append(end_s)
        return predicted, held_until_s, warp_free_s

    def _ready_s(self, slot: Slot, prepare_estimate_s: float, now_s: float) -> float:
        """When a slot that has not warped yet can start its warp, at best."""
        start_s = now_s if slot.retry_at_s is None else max(now_s, slot.retry_at_s)
        if slot.state is SlotState.PREPARING:
            return self._stage_end_s(slot, prepare_estimate_s, now_s)
        if slot.state is SlotState.QUEUED:
            return start_s + prepare_estimate_s
        return start_s

    # ----- helpers -----------------------------------------------------------------------------

    def _lead_s(self) -> float:
        return self.options.first_air_lead_s or self.options.cadence_s

    def _anchor(self, now_s: float, seq: int) -> None:
        # t0 stays "air time of seq 0" even when the first slot seen has a larger seq.
        self._t0_s = self._on_grid(now_s + self._lead_s() - self.options.cadence_s * seq)

    def _on_grid(self, t0_s: float) -> float:
        """With an air grid (the channel's: `grid_t0_s` + cadence·k), a new anchor keeps air times on
        it: the first grid point at or after `t0_s`. Without one, `t0_s` itself."""
        grid_s = self.options.grid_t0_s
        if grid_s is None:
            return t0_s
        cadence_s = self.options.cadence_s
        return grid_s + cadence_s * math.ceil((t0_s - grid_s) / cadence_s - 1e-9)

    def _air_s(self, seq: int) -> float:
        assert self._t0_s is not None
        return self._t0_s + self.options.cadence_s * seq

    def _place(self, slot: Slot, air_s: float) -> None:
        slot.air_s = air_s
        slot.deadline_s = air_s - self.options.margin_s
        self._last_seq = max(self._last_seq, slot.seq)

    @staticmethod
    def _waiting(slot: Slot, now_s: float) -> bool:
        """Whether a failed stage of the slot is still in its back-off."""
        return slot.retry_at_s is not None and now_s < slot.retry_at_s

    @staticmethod
    def _start(slot: Slot, stage: str, now_s: float) -> None:
        slot.state = RUNNING_STATE[stage]
        slot.running_stage = stage
        slot.stage_started_s = now_s
        slot.retry_at_s = None

    @staticmethod
    def _stage_end_s(slot: Slot, estimate_s: float, now_s: float) -> float:
        started_s = slot.stage_started_s if slot.stage_started_s is not None else now_s
        return max(now_s, started_s + estimate_s)

    def _learn(self, stage: str, duration_s: float) -> None:
        if not self.options.learn_estimates:
            return
        previous = self._learned_s.get(stage, self.options.prior_estimate_s(stage))
        weight = self.options.estimate_weight
        self._learned_s[stage] = (duration_s if previous is None
                                  else weight * duration_s + (1 - weight) * previous)

    def _may_retry(self, slot: Slot, stage: str, now_s: float) -> bool:
        """Attempts left, and the retried stage can still end before the deadline."""
        if slot.attempts + 1 >= self.options.max_attempts:
            return False
        backoff_s = self._backoff_s(slot)
        rest_s = sum(self.estimate_s(s) for s in STAGES[STAGES.index(stage):])
        return now_s + backoff_s + rest_s <= slot.deadline_s

    def _backoff_s(self, slot: Slot) -> float:
        return min(self.options.retry_backoff_max_s, self.options.retry_backoff_s * 2 ** slot.attempts)

    def _retry(self, slot: Slot, stage: str, now_s: float, error: str | None) -> None:
        slot.retry_at_s = now_s + self._backoff_s(slot)
        slot.attempts += 1
        slot.error = error
        slot.state = _BEFORE_STATE[stage]
        if stage == "warp":
            slot.holds_slab = False  # a half-warped slab is warped again from the start, later
        self._counts["retries"] += 1

    def _fail(self, slot: Slot, stage: str, error: str | None, input_error: bool) -> None:
        slot.state = SlotState.FAILED
        slot.error = error or f"{stage} failed"
        slot.holds_slab = False
        self._counts["failed"] += 1
        if input_error:
            self._counts["rejected"] += 1
            self._resolve(slot, missed=False)

    def _published(self, slot: Slot, now_s: float) -> None:
        slot.published_s = now_s
        slot.slack_s = slot.deadline_s - now_s
        self._counts["published"] += 1
        if slot.slack_s < 0:
            if not slot.late:
                slot.late = True
                self._counts["late"] += 1
            self._counts["published_late"] += 1
        slot.holds_slab = False
        if not slot.deadline_resolved:
            self._resolve(slot, missed=slot.slack_s < 0)

    def _after_interrupted(self, slot: Slot, stage: str, ok: bool, now_s: float) -> None:
        """A stage of a cancelled or abandoned slot came back: free what it held."""
        if stage == "finish" and ok and slot.state is SlotState.LATE:
            # The publish won the race against `abandon` (the slot's publish gate decides which):
            # the video is out, so say so: it counts as published late.
            slot.state = SlotState.PUBLISHED
            self._published(slot, now_s)
            return
        slot.holds_slab = False

    def _resolve(self, slot: Slot, missed: bool) -> None:
        slot.deadline_resolved = True
        if missed:
            self._counts["missed_deadlines"] += 1

    def _count_missed(self, slots: list[Slot], now_s: float) -> None:
        for slot in slots:
            if not slot.deadline_resolved and now_s > slot.deadline_s:
                self._resolve(slot, missed=True)
