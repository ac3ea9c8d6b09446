"""The slot scheduler: pure logic deciding which stage of which slot runs next, and which are late.

No asyncio, threads or I/O: the daemon feeds events in (`submit`, `on_stage_done`, `cancel`) and
asks `next_actions(now_s)` what to start. Every action returned is considered *started* — the
daemon must run it and report each stage action back exactly once through `on_stage_done`
(also when it was interrupted by `cancel` or an `abandon` action, with `ok=False`).

Timeline: slot k (its `seq`) airs at `t0 + cadence·k`; its video must be published `margin`
seconds before that (the deadline). Image+TTS ("prepare") of k+1 overlaps the warp of k, and
verify+encode+publish ("finish") of k−1 overlaps it too; one warp at a time, in seq order, each
needing one of `slab_count` video slabs from warp start until its finish completes.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from collections.abc import Mapping
from typing import Literal

from stages.errors import StageInputError
from vortexd.clock import Clock, MonotonicClock
from vortexd.slot_state import RUNNING_STATE, TERMINAL_STATES, SlotState

STAGES: tuple[str, ...] = ("prepare", "warp", "finish")
"""Stage actions the daemon runs and reports back: image+TTS, warp, verify+encode+publish."""

LatePolicy = Literal["skip", "publish_late"]
ActionKind = Literal["prepare", "warp", "finish", "mark_late", "abandon"]


_NOT_WARPED_YET = (SlotState.QUEUED, SlotState.PREPARING, SlotState.PREPARED)
_DONE_STATE = {"prepare": SlotState.PREPARED, "warp": SlotState.WARPED,
               "finish": SlotState.PUBLISHED}
# A restart loses whatever a stage was doing: resume from the last state that completed.
_RESUME_STATE = {SlotState.PREPARING: SlotState.QUEUED, SlotState.WARPING: SlotState.PREPARED,
                 SlotState.FINISHING: SlotState.WARPED}


class SchedulerStateError(RuntimeError):
    """The daemon reported something impossible (e.g. a stage finishing that was never started)."""


@dataclass(frozen=True)
class SchedulerOptions:
    """How slots are timed and how much work may overlap."""

    cadence_s: float = 45.0
    """Seconds between the air times of consecutive slots."""
    margin_s: float = 2.0
    """A slot must be published this long before it airs."""
    t0_s: float | None = None
    """Air time of seq 0 on the scheduler's clock; None: anchored when the first slot arrives."""
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
    history_size: int = 256
    """Finished slots kept for status queries."""

    def __post_init__(self) -> None:
        positive = {"cadence_s": self.cadence_s}
        if self.first_air_lead_s is not None:
            positive["first_air_lead_s"] = self.first_air_lead_s
        for name, value in positive.items():
            if not math.isfinite(value) or value <= 0:
                raise StageInputError(f"scheduler.{name}", "must be a positive number", value=value)
        non_negative = {"margin_s": self.margin_s, "prepare_estimate_s": self.prepare_estimate_s,
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
        for name in ("prepare_ahead", "slab_count", "history_size"):
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
class Action:
    """Something the daemon must do now: start a stage, or record/stop a late slot."""

    kind: ActionKind
    slot_id: str
    reason: str = ""


@dataclass(frozen=True)
class SlotView:
    """A read-only picture of one slot for status output and the journal."""

    slot_id: str
    seq: int
    state: SlotState
    air_s: float
    deadline_s: float
    late: bool
    running_stage: str | None
    holds_slab: bool
    error: str | None
    published_s: float | None
    deadline_slack_s: float | None
    predicted_publish_s: float | None
    stage_durations_s: Mapping[str, float]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values."""
        return {"slot_id": self.slot_id, "seq": self.seq, "state": str(self.state),
                "air_s": self.air_s, "deadline_s": self.deadline_s, "late": self.late,
                "running_stage": self.running_stage, "holds_slab": self.holds_slab,
                "error": self.error, "published_s": self.published_s,
                "deadline_slack_s": self.deadline_slack_s,
                "predicted_publish_s": self.predicted_publish_s,
                "stage_durations_s": dict(self.stage_durations_s)}


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
    reanchors: int = 0


@dataclass(frozen=True)
class SchedulerSnapshot:
    """Everything `status` shows: the timeline, resources in use and every known slot."""

    now_s: float
    t0_s: float | None
    draining: bool
    slab_count: int
    slabs_in_use: int
    warping_slot_id: str | None
    queue_depth: int
    """Accepted slots not yet in a final state."""
    slots: tuple[SlotView, ...]
    stats: SchedulerStats


@dataclass
class _Slot:
    """Mutable bookkeeping for one slot (never handed out; `SlotView` is)."""

    slot_id: str
    seq: int
    air_s: float
    deadline_s: float
    state: SlotState = SlotState.QUEUED
    running_stage: str | None = None
    stage_started_s: float | None = None
    holds_slab: bool = False
    late: bool = False
    error: str | None = None
    published_s: float | None = None
    slack_s: float | None = None
    durations_s: dict[str, float] = field(default_factory=dict)


class Scheduler:
    """Decides, from events and the clock, what each slot does next (see the module docstring).

    Not thread-safe by design: the daemon calls it from its event loop only.
    """

    def __init__(self, options: SchedulerOptions | None = None, clock: Clock | None = None) -> None:
        self.options = options or SchedulerOptions()
        self.clock = clock or MonotonicClock()
        self._t0_s = self.options.t0_s
        self._slots: dict[str, _Slot] = {}
        self._pending: list[_Slot] = []  # not in a final state, sorted by seq
        self._unresolved: set[str] = set()  # deadline outcome not known yet
        self._history: deque[str] = deque()  # final slots, oldest first, for pruning
        self._slab_holders: set[str] = set()
        self._warp_owner: str | None = None
        self._last_seq = -1
        self._learned_s: dict[str, float] = {}
        self._counts: dict[str, int] = dict.fromkeys(SchedulerStats.__dataclass_fields__, 0)
        self._draining = False

    # ----- read-only views ---------------------------------------------------------------------

    @property
    def t0_s(self) -> float | None:
        """Air time of seq 0 (persist it with the journal to keep the timeline across restarts)."""
        return self._t0_s

    @property
    def stats(self) -> SchedulerStats:
        """Counters since start-up."""
        return SchedulerStats(**self._counts)

    @property
    def draining(self) -> bool:
        """True while no new slot is being started."""
        return self._draining

    def estimate_s(self, stage: str) -> float:
        """The current duration estimate of `stage`: learned, else configured, else 0."""
        if stage not in STAGES:
            raise StageInputError("stage", f"unknown stage; expected one of {STAGES}", stage=stage)
        if stage in self._learned_s:
            return self._learned_s[stage]
        return self.options.prior_estimate_s(stage) or 0.0

    def slot(self, slot_id: str) -> SlotView:
        """The current view of one slot."""
        return self._view(self._get(slot_id), None)

    def deadline_slack_s(self, slot_id: str) -> float | None:
        """Deadline minus publish time (negative when late); None until the slot is published."""
        return self._get(slot_id).slack_s

    def snapshot(self, now_s: float | None = None) -> SchedulerSnapshot:
        """Per-slot state, air time, deadline and predicted publish time, plus counters."""
        now = self.clock.now_s() if now_s is None else now_s
        predicted, _ = self._simulate(now)
        ordered = sorted(self._slots.values(), key=lambda s: s.seq)
        return SchedulerSnapshot(
            now_s=now, t0_s=self._t0_s, draining=self._draining,
            slab_count=self.options.slab_count, slabs_in_use=len(self._slab_holders),
            warping_slot_id=self._warp_owner, queue_depth=len(self._pending),
            slots=tuple(self._view(s, predicted.get(s.slot_id)) for s in ordered),
            stats=self.stats)

    def is_idle(self) -> bool:
        """True when no stage is running (safe to exit after a drain)."""
        return all(s.running_stage is None for s in self._slots.values())

    def next_wakeup_s(self, now_s: float) -> float | None:
        """Latest time to call `next_actions` again if no event arrives first (None: no need).

        Deadlines and predicted-infeasibility crossings are the only things that change with time
        alone; a predicted publish moves at most one second per second, so waking at
        `now + (deadline − predicted)` is never too late.
        """
        times = [self._slots[sid].deadline_s for sid in self._unresolved]
        if self.options.late_policy == "skip":
            predicted, _ = self._simulate(now_s)
            for slot in self._pending:
                if slot.state in _NOT_WARPED_YET and slot.slot_id in predicted:
                    times.append(now_s + (slot.deadline_s - predicted[slot.slot_id]))
        if not times:
            return None
        # Deadlines are checked with a strict ">", so nudge past them.
        return max(now_s, min(times) + 1e-6)

    # ----- events ------------------------------------------------------------------------------

    def submit(self, slot_id: str, seq: int, now_s: float | None = None) -> SlotView:
        """Accept a slot (already journaled) as the `seq`-th of the timeline; returns its view."""
        if not isinstance(slot_id, str) or not slot_id:
            raise StageInputError("slot_id", "must be a non-empty string", slot_id=slot_id)
        if slot_id in self._slots:
            raise StageInputError("slot_id", "a slot with this id was already accepted",
                                  slot_id=slot_id)
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise StageInputError("seq", "must be a non-negative integer", seq=seq)
        if seq <= self._last_seq:
            raise StageInputError("seq", "must be greater than every seq accepted before",
                                  seq=seq, last_seq=self._last_seq)
        now = self.clock.now_s() if now_s is None else now_s
        if self._t0_s is None:
            self._anchor(now, seq)
        elif self.options.reanchor_when_idle and not self._pending:
            deadline = self._air_s(seq) - self.options.margin_s
            if deadline < now + sum(self.estimate_s(stage) for stage in STAGES):
                self._anchor(now, seq)
                self._counts["reanchors"] += 1
        air = self._air_s(seq)
        slot = _Slot(slot_id=slot_id, seq=seq, air_s=air, deadline_s=air - self.options.margin_s)
        self._add(slot)
        self._counts["submitted"] += 1
        return self._view(slot, None)

    def restore(self, slot_id: str, seq: int, state: SlotState | str,
                air_s: float | None = None) -> SlotView:
        """Rebuild a slot from the journal after a restart.

        A slot that was mid-stage goes back to the last state that completed (warping →
        prepared, …); pass the last state whose artefacts actually survived the restart. Final
        states are kept as they are, so a published slot never runs again. Counters are not
        touched. `air_s` overrides the air time computed from `t0_s`.
        """
        if not isinstance(slot_id, str) or not slot_id:
            raise StageInputError("slot_id", "must be a non-empty string", slot_id=slot_id)
        if slot_id in self._slots:
            raise StageInputError("slot_id", "slot already known", slot_id=slot_id)
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise StageInputError("seq", "must be a non-negative integer", seq=seq)
        if any(s.seq == seq for s in self._slots.values()):
            raise StageInputError("seq", "another slot already has this seq", seq=seq)
        try:
            restored = SlotState(state)
        except ValueError:
            raise StageInputError("state", "unknown slot state",
                                  state=state, expected=[s.value for s in SlotState]) from None
        restored = _RESUME_STATE.get(restored, restored)
        if air_s is None:
            if self._t0_s is None:
                raise StageInputError("t0_s", "restoring without air_s needs a t0_s", seq=seq)
            air_s = self._air_s(seq)
        slot = _Slot(slot_id=slot_id, seq=seq, air_s=air_s,
                     deadline_s=air_s - self.options.margin_s, state=restored)
        if restored is SlotState.WARPED:
            # Its frames sit in a slab until finish completes.
            if len(self._slab_holders) >= self.options.slab_count:
                raise StageInputError("state", "no free slab for another warped slot",
                                      slot_id=slot_id, slab_count=self.options.slab_count)
            slot.holds_slab = True
            self._slab_holders.add(slot_id)
        self._last_seq = max(self._last_seq, seq)
        if restored in TERMINAL_STATES:
            self._slots[slot_id] = slot
            self._retire(slot)
        else:
            self._add(slot)
        return self._view(slot, None)

    def reanchor(self, now_s: float, lead_s: float | None = None) -> float | None:
        """Move t0 so the first pending slot airs `lead_s` (default first_air_lead_s) from now.

        For a restart after a long outage: pending slots get new air times and deadlines instead
        of all being late. Returns the new t0 (None when nothing is pending).
        """
        if not self._pending:
            return None
        lead = self._lead_s() if lead_s is None else lead_s
        first = self._pending[0]
        self._t0_s = now_s + lead - self.options.cadence_s * first.seq
        for slot in self._pending:
            slot.air_s = self._air_s(slot.seq)
            slot.deadline_s = slot.air_s - self.options.margin_s
        self._counts["reanchors"] += 1
        return self._t0_s

    def cancel(self, slot_id: str, now_s: float | None = None) -> str | None:
        """Cancel a slot. Returns the stage the daemon must interrupt, or None if none is running.

        Cancelling a cancelled slot is a no-op; cancelling a published, late or failed one is an
        error. The slab and warp turn of a running slot stay taken until its stage reports back.
        """
        slot = self._get(slot_id)
        if slot.state is SlotState.CANCELLED:
            return None
        if slot.state in TERMINAL_STATES:
            raise StageInputError("slot_id", f"slot is already {slot.state}", slot_id=slot_id,
                                  state=str(slot.state))
        now = self.clock.now_s() if now_s is None else now_s
        slot.state = SlotState.CANCELLED
        self._counts["cancelled"] += 1
        self._pending.remove(slot)
        if slot_id in self._unresolved:
            # Cancelled in time is the operator's choice, not a miss; after the deadline it was.
            self._resolve(slot, missed=now > slot.deadline_s)
        if slot.running_stage is None:
            self._release_slab(slot)
        self._retire(slot)
        return slot.running_stage

    def on_stage_done(self, slot_id: str, stage: str, ok: bool, now_s: float,
                      error: str | None = None, input_error: bool = False) -> SlotView:
        """Record that `stage` of `slot_id` ended (successfully or not) at `now_s`.

        `input_error`: the stage failed on the recipe's own input; the slot fails as rejected,
        and its deadline is no longer the daemon's to miss.
        """
        slot = self._get(slot_id)
        if stage not in STAGES:
            raise StageInputError("stage", f"unknown stage; expected one of {STAGES}", stage=stage)
        if slot.running_stage != stage:
            raise SchedulerStateError(
                f"slot {slot_id!r} reported {stage!r} done but {slot.running_stage!r} is running")
        assert slot.stage_started_s is not None
        duration_s = max(0.0, now_s - slot.stage_started_s)
        slot.durations_s[stage] = duration_s
        slot.running_stage = None
        slot.stage_started_s = None
        if stage == "warp":
            self._warp_owner = None
        if slot.state in TERMINAL_STATES:
            self._after_interrupted(slot, stage, ok, now_s)
            return self._view(slot, None)
        if not ok:
            slot.state = SlotState.FAILED
            slot.error = error or f"{stage} failed"
            self._counts["failed"] += 1
            if input_error:
                self._counts["rejected"] += 1
                self._resolve(slot, missed=False)
            self._release_slab(slot)
            self._pending.remove(slot)
            self._retire(slot)
            return self._view(slot, None)
        self._learn(stage, duration_s)
        slot.state = _DONE_STATE[stage]
        if stage == "finish":
            self._published(slot, now_s)
        return self._view(slot, None)

    def drain(self) -> None:
        """Stop preparing new slots; slots already prepared still warp and finish."""
        self._draining = True

    def resume(self) -> None:
        """Undo `drain`."""
        self._draining = False

    # ----- decisions ---------------------------------------------------------------------------

    def next_actions(self, now_s: float) -> list[Action]:
        """What to do now, warp first. Each stage action returned is marked as started."""
        late_actions = self._apply_late_policy(now_s)
        self._count_missed(now_s)
        warp = self._start_warp(now_s)
        finishes = self._start_finishes(now_s)
        prepares = self._start_prepares(now_s)
        return warp + late_actions + finishes + prepares

    def _apply_late_policy(self, now_s: float) -> list[Action]:
        actions: list[Action] = []
        if self.options.late_policy == "publish_late":
            for slot in self._pending:
                if now_s > slot.deadline_s and not slot.late:
                    # Runs to the end anyway; the daemon records that it will air late.
                    slot.late = True
                    self._counts["late"] += 1
                    actions.append(Action("mark_late", slot.slot_id, "deadline passed"))
            return actions
        _, infeasible = self._simulate(now_s)
        for slot in list(self._pending):
            if now_s > slot.deadline_s:
                actions.append(self._skip(slot, "deadline passed"))
            elif slot.slot_id in infeasible:
                actions.append(self._skip(slot, "cannot finish before the deadline"))
        return actions

    def _skip(self, slot: _Slot, reason: str) -> Action:
        slot.state = SlotState.LATE
        slot.late = True
        self._counts["late"] += 1
        self._pending.remove(slot)
        if slot.running_stage is not None:
            self._counts["abandoned"] += 1
            kind: ActionKind = "abandon"
        else:
            self._release_slab(slot)
            kind = "mark_late"
        self._retire(slot)
        return Action(kind, slot.slot_id, reason)

    def _start_warp(self, now_s: float) -> list[Action]:
        if self._warp_owner is not None:
            return []
        if len(self._slab_holders) >= self.options.slab_count:
            return []
        # Slots warp in seq order: only the oldest slot that has not warped may go.
        candidate = next((s for s in self._pending if s.state in _NOT_WARPED_YET), None)
        if candidate is None or candidate.state is not SlotState.PREPARED:
            return []
        self._start(candidate, "warp", now_s)
        candidate.holds_slab = True
        self._slab_holders.add(candidate.slot_id)
        self._warp_owner = candidate.slot_id
        return [Action("warp", candidate.slot_id)]

    def _start_finishes(self, now_s: float) -> list[Action]:
        actions = []
        for slot in self._pending:
            if slot.state is SlotState.WARPED:
                self._start(slot, "finish", now_s)
                actions.append(Action("finish", slot.slot_id))
        return actions

    def _start_prepares(self, now_s: float) -> list[Action]:
        if self._draining:
            return []
        ahead = sum(s.state in (SlotState.PREPARING, SlotState.PREPARED) for s in self._pending)
        actions = []
        for slot in self._pending:
            if ahead >= self.options.prepare_ahead:
                break
            if slot.state is SlotState.QUEUED:
                self._start(slot, "prepare", now_s)
                actions.append(Action("prepare", slot.slot_id))
                ahead += 1
        return actions

    def _simulate(self, now_s: float) -> tuple[dict[str, float], set[str]]:
        """Predict each pending slot's publish time; under `skip`, drop slots that cannot make it.

        A list-scheduling pass: slots already holding a slab first, then the rest in seq order,
        each waiting for its prepare, the single warp and a free slab. Optimistic by design
        (prepare assumed to start now; a stage past its estimate ends now) so a slot is only
        skipped when even the best case misses.
        """
        est = {stage: self.estimate_s(stage) for stage in STAGES}
        skip = self.options.late_policy == "skip"
        predicted: dict[str, float] = {}
        infeasible: set[str] = set()
        held = [s for s in self._pending if s.state not in _NOT_WARPED_YET]
        held_until_s: list[float] = []
        warp_free_s = now_s
        for slot in held:
            if skip and now_s > slot.deadline_s:
                continue  # about to be abandoned: its warp turn and slab come back now
            finish_start_s = now_s
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
        # One entry per slab: when it is next free. Free slabs, and slabs of slots being
        # interrupted or abandoned, come back about now; the others when their finish ends.
        free_count = max(0, self.options.slab_count - len(held_until_s))
        slab_free_s = held_until_s[: self.options.slab_count] + [now_s] * free_count
        heapq.heapify(slab_free_s)
        for slot in self._pending:
            if slot.state not in _NOT_WARPED_YET:
                continue
            if slot.state is SlotState.PREPARING:
                ready_s = self._stage_end_s(slot, est["prepare"], now_s)
            elif slot.state is SlotState.QUEUED:
                ready_s = now_s + est["prepare"]
            else:
                ready_s = now_s
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

    # ----- helpers -----------------------------------------------------------------------------

    def _get(self, slot_id: str) -> _Slot:
        try:
            return self._slots[slot_id]
        except (KeyError, TypeError):
            raise StageInputError("slot_id", "no such slot", slot_id=slot_id) from None

    def _lead_s(self) -> float:
        return self.options.first_air_lead_s or self.options.cadence_s

    def _anchor(self, now_s: float, seq: int) -> None:
        # t0 stays "air time of seq 0" even when the first slot seen has a larger seq.
        self._t0_s = now_s + self._lead_s() - self.options.cadence_s * seq

    def _air_s(self, seq: int) -> float:
        assert self._t0_s is not None
        return self._t0_s + self.options.cadence_s * seq

    def _add(self, slot: _Slot) -> None:
        self._slots[slot.slot_id] = slot
        bisect.insort(self._pending, slot, key=lambda s: s.seq)
        self._unresolved.add(slot.slot_id)
        self._last_seq = max(self._last_seq, slot.seq)

    def _start(self, slot: _Slot, stage: str, now_s: float) -> None:
        slot.state = RUNNING_STATE[stage]
        slot.running_stage = stage
        slot.stage_started_s = now_s

    @staticmethod
    def _stage_end_s(slot: _Slot, estimate_s: float, now_s: float) -> float:
        started_s = slot.stage_started_s if slot.stage_started_s is not None else now_s
        return max(now_s, started_s + estimate_s)

    def _learn(self, stage: str, duration_s: float) -> None:
        if not self.options.learn_estimates:
            return
        previous = self._learned_s.get(stage, self.options.prior_estimate_s(stage))
        weight = self.options.estimate_weight
        self._learned_s[stage] = (duration_s if previous is None
                                  else weight * duration_s + (1 - weight) * previous)

    def _release_slab(self, slot: _Slot) -> None:
        if slot.holds_slab:
            slot.holds_slab = False
            self._slab_holders.discard(slot.slot_id)

    def _published(self, slot: _Slot, now_s: float) -> None:
        slot.published_s = now_s
        slot.slack_s = slot.deadline_s - now_s
        self._counts["published"] += 1
        if slot.slack_s < 0:
            if not slot.late:
                slot.late = True
                self._counts["late"] += 1
            self._counts["published_late"] += 1
        self._release_slab(slot)
        if slot in self._pending:
            self._pending.remove(slot)
        if slot.slot_id in self._unresolved:
            self._resolve(slot, missed=slot.slack_s < 0)
        self._retire(slot)

    def _after_interrupted(self, slot: _Slot, stage: str, ok: bool, now_s: float) -> None:
        """A stage of a cancelled or abandoned slot came back: free what it held."""
        if stage == "finish" and ok and slot.state is SlotState.LATE:
            # The publish won the race against `abandon`: the video is out, so say so.
            slot.state = SlotState.PUBLISHED
            self._published(slot, now_s)
            return
        self._release_slab(slot)
        self._retire(slot)

    def _resolve(self, slot: _Slot, missed: bool) -> None:
        self._unresolved.discard(slot.slot_id)
        if missed:
            self._counts["missed_deadlines"] += 1

    def _count_missed(self, now_s: float) -> None:
        for slot_id in [sid for sid in self._unresolved if now_s > self._slots[sid].deadline_s]:
            self._resolve(self._slots[slot_id], missed=True)
        self._prune()

    def _retire(self, slot: _Slot) -> None:
        if slot.slot_id not in self._history:
            self._history.append(slot.slot_id)
        self._prune()

    def _prune(self) -> None:
        """Forget the oldest final slots beyond `history_size` once nothing refers to them."""
        excess = len(self._history) - self.options.history_size
        for slot_id in list(self._history):
            if excess <= 0:
                break
            slot = self._slots[slot_id]
            if slot.running_stage is None and slot_id not in self._unresolved:
                self._history.remove(slot_id)
                del self._slots[slot_id]
                excess -= 1

    def _view(self, slot: _Slot, predicted_s: float | None) -> SlotView:
        return SlotView(
            slot_id=slot.slot_id, seq=slot.seq, state=slot.state, air_s=slot.air_s,
            deadline_s=slot.deadline_s, late=slot.late, running_stage=slot.running_stage,
            holds_slab=slot.holds_slab, error=slot.error, published_s=slot.published_s,
            deadline_slack_s=slot.slack_s, predicted_publish_s=predicted_s,
            stage_durations_s=MappingProxyType(dict(slot.durations_s)))
