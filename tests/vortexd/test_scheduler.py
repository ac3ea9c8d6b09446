"""The slot scheduler: overlap, priorities, slabs, lateness, cancellation, failures and restarts."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.errors import StageInputError
from vortexd.clock import ManualClock, MonotonicClock
from vortexd.scheduler import STAGES, Action, Scheduler, SchedulerOptions, SchedulerStateError
from vortexd.slot import Slot
from vortexd.slot_state import TERMINAL_STATES, SlotState
from vortexd.slot_table import SlotTable

STAGE_ACTIONS = set(STAGES)


class Book:
    """The engine's side of the scheduler in miniature: its slot table, its drain flag and the
    calls the engine makes, by slot id (the scheduler under test is the real one)."""

    def __init__(self, scheduler: Scheduler, history_size: int = 256) -> None:
        self.scheduler = scheduler
        self.clock = scheduler.clock
        self.table = SlotTable(history_size)
        self.draining = False

    @property
    def stats(self):
        return self.scheduler.stats

    @property
    def t0_s(self):
        return self.scheduler.t0_s

    def submit(self, slot_id: str, seq: int, now_s: float | None = None) -> Slot:
        slot = Slot(slot_id, seq, recipe=None)
        if isinstance(slot_id, str) and slot_id and self.table.find(slot_id) is not None:
            raise StageInputError("slot_id", "a slot with this id was already accepted", slot_id=slot_id)
        self.table.add(slot)
        try:
            self.scheduler.admit(slot, self.table, now_s)
        except StageInputError:
            self.table._live.pop(slot_id)
            raise
        return slot

    def restore(self, slot_id: str, seq: int, state, air_s: float | None = None) -> Slot:
        slot = Slot(slot_id, seq, recipe=None)
        self.scheduler.restore(slot, state, air_s)
        return self.table.add(slot)

    def slot(self, slot_id: str) -> Slot:
        return self.table.get(slot_id)

    def next_actions(self, now_s: float) -> list[Action]:
        actions = self.scheduler.next_actions(self.table, now_s, draining=self.draining)
        self.table.retire_finished()
        return actions

    def on_stage_done(self, slot_id: str, stage: str, ok: bool, now_s: float, error: str | None = None,
                      transient: bool = False) -> Slot:
        slot = self.table.get(slot_id)
        self.scheduler.on_stage_done(slot, stage, ok, now_s, error=error, transient=transient)
        self.table.retire_finished()
        return slot

    def cancel(self, slot_id: str, now_s: float | None = None) -> str | None:
        return self.scheduler.cancel(self.table.get(slot_id), now_s)

    def reanchor(self, now_s: float, lead_s: float | None = None):
        return self.scheduler.reanchor(self.table, now_s, lead_s)

    def next_wakeup_s(self, now_s: float):
        return self.scheduler.next_wakeup_s(self.table, now_s)

    def estimate_s(self, stage: str) -> float:
        return self.scheduler.estimate_s(stage)

    def drain(self) -> None:
        self.draining = True

    def resume(self) -> None:
        self.draining = False

    def is_idle(self) -> bool:
        return all(slot.running_stage is None for slot in self.table)

    def snapshot(self, now_s: float | None = None):
        slots = self.table.everything()
        return SimpleNamespace(slots=slots, stats=self.stats,
                               slabs_in_use=sum(slot.holds_slab for slot in slots))



@dataclass
class Timeline:
    """Runs a scheduler against fixed stage durations on a manual clock, recording intervals."""

    scheduler: Book
    durations_s: dict[str, float]
    clock: ManualClock
    step_s: float = 0.5
    fail: set[tuple[str, str]] = field(default_factory=set)
    intervals: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    actions: list[tuple[float, Action]] = field(default_factory=list)
    max_slabs_in_use: int = 0
    max_warps: int = 0

    def run(self, until_s: float) -> None:
        """Advance time, starting what the scheduler asks and completing stages when due."""
        running: dict[tuple[str, str], float] = {}
        while self.clock.now_s() <= until_s:
            now = self.clock.now_s()
            for action in self.scheduler.next_actions(now):
                self.actions.append((now, action))
                if action.kind in STAGE_ACTIONS:
                    key = (action.slot_id, action.kind)
                    running[key] = now + self.durations_s[action.kind]
                    self.intervals[key] = [now, float("inf")]
            snap = self.scheduler.snapshot(now)
            self.max_slabs_in_use = max(self.max_slabs_in_use, snap.slabs_in_use)
            self.max_warps = max(self.max_warps, sum(k[1] == "warp" for k in running))
            due = [key for key, end in running.items() if end <= now]
            for key in due:
                del running[key]
                self.intervals[key][1] = now
                self.scheduler.on_stage_done(key[0], key[1], key not in self.fail, now,
                                             error="boom" if key in self.fail else None)
            if not due:
                self.clock.advance(self.step_s)

    def kinds(self, slot_id: str) -> list[str]:
        """Action kinds issued for one slot, in order."""
        return [a.kind for _, a in self.actions if a.slot_id == slot_id]


def make(clock: ManualClock | None = None, history_size: int = 256, **options: object) -> tuple[Book, ManualClock]:
    """A scheduler on a manual clock with t0 = 60 s unless overridden, with its slot table."""
    clock = clock or ManualClock(0.0)
    options.setdefault("t0_s", 60.0)
    return Book(Scheduler(SchedulerOptions(**options), clock), history_size), clock


def overlaps(a: list[float], b: list[float]) -> bool:
    """Whether two [start, end] intervals share some time."""
    return a[0] < b[1] and b[0] < a[1]


def test_five_slot_timeline_overlaps_prepare_and_finish_with_warp() -> None:
    """While slot k warps, prepare(k+1) is issued and finish(k−1) runs; all five publish in time."""
    sched, clock = make()
    for k in range(5):
        sched.submit(f"s{k}", k)
    line = Timeline(sched, {"prepare": 6.0, "warp": 20.0, "finish": 8.0}, clock)
    line.run(200.0)
    iv = line.intervals
    for k in range(1, 4):
        warp = iv[(f"s{k}", "warp")]
        assert warp[0] <= iv[(f"s{k+1}", "prepare")][0] < warp[1]
        assert overlaps(iv[(f"s{k-1}", "finish")], warp)
    assert line.max_warps == 1
    views = {v.slot_id: v for v in sched.snapshot().slots}
    assert all(views[f"s{k}"].state is SlotState.PUBLISHED for k in range(5))
    assert all(views[f"s{k}"].slack_s > 0 for k in range(5))
    assert sched.stats.published == 5 and sched.stats.missed_deadlines == 0


def test_warp_action_comes_first_and_warps_go_in_seq_order() -> None:
    """A warp is listed before any other action, and slots warp strictly in seq order."""
    sched, clock = make()
    for k in range(4):
        sched.submit(f"s{k}", k)
    line = Timeline(sched, {"prepare": 3.0, "warp": 10.0, "finish": 4.0}, clock)
    line.run(120.0)
    by_time: dict[float, list[str]] = {}
    for t, action in line.actions:
        by_time.setdefault(t, []).append(action.kind)
    assert all(kinds.index("warp") == 0 for kinds in by_time.values() if "warp" in kinds)
    warp_order = [a.slot_id for _, a in line.actions if a.kind == "warp"]
    assert warp_order == ["s0", "s1", "s2", "s3"]


def test_slab_limit_holds_the_warp_until_a_finish_completes() -> None:
    """With two slabs and a slow finish, slot 2 only warps after slot 0's finish frees a slab."""
    sched, clock = make(t0_s=500.0)
    for k in range(3):
        sched.submit(f"s{k}", k)
    line = Timeline(sched, {"prepare": 1.0, "warp": 5.0, "finish": 30.0}, clock)
    line.run(150.0)
    assert line.max_slabs_in_use == 2
    assert line.intervals[("s2", "warp")][0] >= line.intervals[("s0", "finish")][1]
    assert sched.snapshot().stats.published == 3


def test_single_slab_serialises_warp_and_finish() -> None:
    """With one slab, a slot's warp never overlaps the previous slot's finish."""
    sched, clock = make(t0_s=500.0, slab_count=1)
    for k in range(3):
        sched.submit(f"s{k}", k)
    line = Timeline(sched, {"prepare": 1.0, "warp": 5.0, "finish": 5.0}, clock)
    line.run(100.0)
    iv = line.intervals
    assert not overlaps(iv[("s0", "finish")], iv[("s1", "warp")])
    assert line.max_slabs_in_use == 1


def test_prepare_ahead_limits_how_many_slots_are_prepared_early() -> None:
    """With prepare_ahead=2, two slots prepare while one warps, never a third."""
    sched, _ = make(prepare_ahead=2)
    for k in range(5):
        sched.submit(f"s{k}", k)
    assert [a.slot_id for a in sched.next_actions(0.0)] == ["s0", "s1"]
    sched.on_stage_done("s0", "prepare", True, 1.0)
    assert [(a.kind, a.slot_id) for a in sched.next_actions(1.0)] == [("warp", "s0"),
                                                                      ("prepare", "s2")]
    assert sched.next_actions(2.0) == []


def test_air_time_and_deadline_follow_t0_and_cadence() -> None:
    """Slot k airs at t0 + 45·k and must be published margin seconds before."""
    sched, _ = make(t0_s=100.0, margin_s=3.0)
    view = sched.submit("a", 4)
    assert view.air_s == pytest.approx(100.0 + 45.0 * 4)
    assert view.deadline_s == pytest.approx(100.0 + 45.0 * 4 - 3.0)


def test_t0_is_anchored_from_the_first_accepted_slot() -> None:
    """Without a configured t0, the first slot airs one cadence after it is accepted."""
    clock = ManualClock(1000.0)
    sched = Book(Scheduler(SchedulerOptions(), clock))
    first = sched.submit("a", 7)
    second = sched.submit("b", 8)
    assert first.air_s == pytest.approx(1045.0)
    assert second.air_s - first.air_s == pytest.approx(45.0)
    assert sched.t0_s == pytest.approx(1045.0 - 45.0 * 7)


def test_idle_timeline_reanchors_instead_of_starting_late() -> None:
    """A slot arriving long after the queue ran dry gets a fresh air time, not an instant miss."""
    sched, clock = make(t0_s=45.0)
    sched.submit("a", 0)
    line = Timeline(sched, {"prepare": 1.0, "warp": 2.0, "finish": 1.0}, clock)
    line.run(10.0)
    clock.set(1000.0)
    view = sched.submit("b", 1)
    assert view.air_s == pytest.approx(1045.0)
    assert sched.stats.reanchors == 1 and sched.stats.late == 0


def test_skip_policy_marks_an_unstarted_late_slot_without_running_it() -> None:
    """Under skip, a slot still queued at its deadline is marked late, counted, never started."""
    sched, _ = make(t0_s=20.0, margin_s=2.0)
    sched.submit("s0", 0)
    sched.submit("s1", 1)
    # First look at the clock after s0's deadline (18 s), e.g. the loop was stalled.
    actions = sched.next_actions(19.0)
    assert [(a.kind, a.slot_id) for a in actions] == [("mark_late", "s0"), ("prepare", "s1")]
    assert sched.slot("s0").state is SlotState.LATE
    assert sched.stats.late == 1 and sched.stats.missed_deadlines == 1
    assert sched.stats.abandoned == 0


def test_skip_policy_abandons_a_late_prepare_and_moves_on() -> None:
    """A prepare still running at its deadline is abandoned and the next slot starts preparing."""
    sched, _ = make(t0_s=20.0, margin_s=2.0)
    sched.submit("s0", 0)
    sched.submit("s1", 1)
    assert sched.next_actions(0.0) == [Action("prepare", "s0")]
    actions = sched.next_actions(19.0)
    assert actions == [Action("abandon", "s0", "deadline passed"), Action("prepare", "s1")]
    view = sched.on_stage_done("s0", "prepare", False, 19.5, error="cancelled")
    assert view.state is SlotState.LATE and view.running_stage is None
    assert sched.stats.abandoned == 1 and sched.stats.failed == 0


def test_skip_policy_abandons_a_late_warp_and_frees_its_turn_when_it_stops() -> None:
    """A warp past its deadline is abandoned; the next slot warps once the stop is reported."""
    sched, _ = make(t0_s=30.0, margin_s=2.0, slab_count=1)
    sched.submit("s0", 0)
    sched.submit("s1", 1)
    sched.next_actions(0.0)
    sched.on_stage_done("s0", "prepare", True, 1.0)
    assert [a.kind for a in sched.next_actions(1.0)] == ["warp", "prepare"]
    sched.on_stage_done("s1", "prepare", True, 2.0)
    actions = sched.next_actions(29.0)
    assert [(a.kind, a.slot_id) for a in actions] == [("abandon", "s0")]
    assert sched.next_actions(29.5) == []  # the abandoned warp still holds the warp and slab
    sched.on_stage_done("s0", "warp", False, 30.0, error="cancelled")
    assert [(a.kind, a.slot_id) for a in sched.next_actions(30.0)] == [("warp", "s1")]
    assert sched.slot("s0").state is SlotState.LATE


def test_skip_policy_uses_estimates_to_drop_a_slot_that_cannot_make_it() -> None:
    """Given a 30 s warp estimate, a slot with 20 s left is skipped before its deadline."""
    sched, _ = make(t0_s=22.0, margin_s=2.0, warp_estimate_s=30.0, learn_estimates=False,
                    reanchor_when_idle=False)
    sched.submit("s0", 0)   # deadline 20 s: cannot fit a 30 s warp
    sched.submit("s1", 1)   # deadline 65 s: fits
    actions = sched.next_actions(0.0)
    assert [(a.kind, a.slot_id) for a in actions] == [("mark_late", "s0"), ("prepare", "s1")]
    assert actions[0].reason == "cannot finish before the deadline"
    assert sched.stats.late == 1
    assert sched.stats.missed_deadlines == 0  # the deadline itself has not passed yet
    sched.next_actions(21.0)
    assert sched.stats.missed_deadlines == 1


def test_publish_late_policy_runs_the_slot_and_publishes_it_marked_late() -> None:
    """Under publish_late, a slot past its deadline keeps running and is published late."""
    sched, clock = make(t0_s=12.0, margin_s=2.0, late_policy="publish_late")
    sched.submit("s0", 0)
    line = Timeline(sched, {"prepare": 2.0, "warp": 15.0, "finish": 2.0}, clock)
    line.run(40.0)
    assert line.kinds("s0") == ["prepare", "warp", "mark_late", "finish"]
    view = sched.slot("s0")
    assert view.state is SlotState.PUBLISHED and view.late
    assert sched.slot("s0").slack_s == pytest.approx(10.0 - 19.0)
    stats = sched.stats
    assert (stats.late, stats.published_late, stats.missed_deadlines) == (1, 1, 1)


def test_cancel_of_a_queued_slot_means_it_never_starts() -> None:
    """A cancelled queued slot gets no action, and the next slot takes its place."""
    sched, _ = make()
    sched.submit("s0", 0)
    sched.submit("s1", 1)
    assert sched.cancel("s0") is None
    assert [(a.kind, a.slot_id) for a in sched.next_actions(0.0)] == [("prepare", "s1")]
    assert sched.slot("s0").state is SlotState.CANCELLED
    assert sched.cancel("s0") is None  # idempotent
    assert sched.stats.cancelled == 1 and sched.stats.missed_deadlines == 0


def test_cancel_of_a_running_warp_names_the_stage_and_waits_for_it_to_stop() -> None:
    """Cancelling a warping slot returns 'warp'; its slab and turn free only when it reports."""
    sched, _ = make(slab_count=1)
    sched.submit("s0", 0)
    sched.submit("s1", 1)
    sched.next_actions(0.0)
    sched.on_stage_done("s0", "prepare", True, 1.0)
    sched.next_actions(1.0)
    sched.on_stage_done("s1", "prepare", True, 2.0)
    assert sched.cancel("s0", now_s=3.0) == "warp"
    assert sched.next_actions(3.0) == []
    view = sched.on_stage_done("s0", "warp", False, 4.0, error="cancelled")
    assert view.state is SlotState.CANCELLED and not view.holds_slab
    assert [(a.kind, a.slot_id) for a in sched.next_actions(4.0)] == [("warp", "s1")]


def test_cancel_of_a_published_slot_is_refused() -> None:
    """A published slot cannot be cancelled; the error names slot_id."""
    sched, clock = make()
    sched.submit("s0", 0)
    Timeline(sched, {"prepare": 1.0, "warp": 1.0, "finish": 1.0}, clock).run(10.0)
    with pytest.raises(StageInputError) as err:
        sched.cancel("s0")
    assert err.value.field == "slot_id" and "published" in err.value.message


def test_a_failed_stage_fails_only_its_slot() -> None:
    """A warp failure fails that slot, frees its slab, and the next slot still publishes."""
    sched, clock = make(slab_count=1)
    for k in range(3):
        sched.submit(f"s{k}", k)
    line = Timeline(sched, {"prepare": 1.0, "warp": 4.0, "finish": 2.0}, clock,
                    fail={("s1", "warp")})
    line.run(200.0)
    states = {v.slot_id: v.state for v in sched.snapshot().slots}
    assert states == {"s0": SlotState.PUBLISHED, "s1": SlotState.FAILED,
                      "s2": SlotState.PUBLISHED}
    assert sched.slot("s1").error == "boom"
    assert sched.stats.failed == 1
    assert sched.stats.missed_deadlines == 1  # counted once its deadline (103 s) passed


def test_publish_that_races_an_abandon_is_recorded_as_published_late() -> None:
    """If the finish completes after an abandon was issued, the slot is published (late)."""
    sched, _ = make(t0_s=10.0, margin_s=2.0)
    sched.submit("s0", 0)
    sched.next_actions(0.0)
    sched.on_stage_done("s0", "prepare", True, 1.0)
    sched.next_actions(1.0)
    sched.on_stage_done("s0", "warp", True, 5.0)
    assert [a.kind for a in sched.next_actions(5.0)] == ["finish"]
    assert [a.kind for a in sched.next_actions(9.0)] == ["abandon"]
    view = sched.on_stage_done("s0", "finish", True, 9.1)
    assert view.state is SlotState.PUBLISHED and view.late
    assert sched.stats.published == 1 and sched.stats.published_late == 1
    assert sched.stats.missed_deadlines == 1


def test_restore_resumes_from_the_last_completed_state_and_never_reruns_a_published_slot() -> None:
    """After a restart: warping → prepared, finishing → warped (with a slab), published stays."""
    sched, _ = make(t0_s=100.0)
    sched.restore("done", 0, "published")
    sched.restore("mid_warp", 1, "warping")
    sched.restore("mid_finish", 2, "finishing")
    sched.restore("mid_prep", 3, SlotState.PREPARING)
    assert sched.slot("mid_warp").state is SlotState.PREPARED
    assert sched.slot("mid_prep").state is SlotState.QUEUED
    assert sched.slot("mid_finish").holds_slab
    actions = [(a.kind, a.slot_id) for a in sched.next_actions(0.0)]
    assert actions == [("warp", "mid_warp"), ("finish", "mid_finish"), ("prepare", "mid_prep")]
    assert "done" not in {a.slot_id for a in sched.next_actions(1.0)}
    assert sched.stats.submitted == 0
    with pytest.raises(StageInputError) as err:
        sched.submit("next", 3)
    assert err.value.field == "seq"


def test_reanchor_moves_pending_slots_after_an_outage() -> None:
    """reanchor() gives pending slots air times counted from now instead of the stale t0."""
    sched, _ = make(t0_s=0.0)
    sched.restore("a", 5, "queued")
    sched.restore("b", 6, "queued")
    sched.reanchor(1000.0, lead_s=30.0)
    assert sched.slot("a").air_s == pytest.approx(1030.0)
    assert sched.slot("b").air_s == pytest.approx(1075.0)
    assert sched.next_actions(1000.0)[0] == Action("prepare", "a")


def test_drain_stops_new_prepares_but_lets_prepared_slots_finish() -> None:
    """During a drain, a prepared slot warps and publishes; no new slot starts preparing."""
    sched, clock = make()
    for k in range(3):
        sched.submit(f"s{k}", k)
    sched.next_actions(0.0)
    sched.on_stage_done("s0", "prepare", True, 1.0)
    sched.drain()
    line = Timeline(sched, {"prepare": 1.0, "warp": 2.0, "finish": 1.0}, clock)
    clock.set(1.0)
    line.run(20.0)
    assert sched.slot("s0").state is SlotState.PUBLISHED
    assert sched.slot("s1").state is SlotState.QUEUED and sched.is_idle()
    sched.resume()
    assert sched.next_actions(21.0) == [Action("prepare", "s1")]


def test_next_wakeup_points_at_the_moment_a_slot_turns_late() -> None:
    """next_wakeup_s returns the deadline of a waiting slot; at that time it is marked late."""
    sched, _ = make(t0_s=50.0, margin_s=2.0, slab_count=1)
    sched.submit("s0", 0)
    sched.next_actions(0.0)
    wake_s = sched.next_wakeup_s(0.0)
    assert wake_s == pytest.approx(48.0, abs=1e-3)
    assert sched.next_actions(47.9) == []
    assert [a.kind for a in sched.next_actions(wake_s)] == ["abandon"]


def test_learned_estimates_follow_observed_durations() -> None:
    """Observed stage durations move the estimate toward them (moving average)."""
    sched, clock = make(warp_estimate_s=10.0, estimate_weight=0.5)
    sched.submit("s0", 0)
    Timeline(sched, {"prepare": 1.0, "warp": 20.0, "finish": 1.0}, clock).run(40.0)
    assert sched.estimate_s("warp") == pytest.approx(15.0)
    assert sched.estimate_s("prepare") == pytest.approx(1.0)


@pytest.mark.parametrize(("call", "field_name"), [
    (lambda s: s.submit("", 0), "slot_id"),
    (lambda s: s.submit("x", -1), "seq"),
    (lambda s: s.cancel("nope"), "slot_id"),
    (lambda s: s.restore("y", 9, "sleeping"), "state"),
    (lambda s: s.on_stage_done("a", "dance", True, 0.0), "stage"),
])
def test_bad_calls_raise_errors_naming_the_field(call, field_name) -> None:
    """Unknown slots, bad seqs, states and stages are refused with the field named."""
    sched, _ = make()
    sched.submit("a", 0)
    with pytest.raises(StageInputError) as err:
        call(sched)
    assert err.value.field == field_name


def test_duplicate_ids_and_non_increasing_seqs_are_refused() -> None:
    """A slot id is accepted once, and seqs must grow."""
    sched, _ = make()
    sched.submit("a", 3)
    with pytest.raises(StageInputError, match="already accepted"):
        sched.submit("a", 4)
    with pytest.raises(StageInputError, match="greater"):
        sched.submit("b", 3)


def test_reporting_a_stage_that_is_not_running_is_a_state_error() -> None:
    """on_stage_done for a stage that was never started raises SchedulerStateError."""
    sched, _ = make()
    sched.submit("a", 0)
    with pytest.raises(SchedulerStateError):
        sched.on_stage_done("a", "warp", True, 0.0)


@pytest.mark.parametrize(("options", "field_name"), [
    ({"cadence_s": 0.0}, "scheduler.cadence_s"),
    ({"margin_s": 50.0}, "scheduler.margin_s"),
    ({"late_policy": "panic"}, "scheduler.late_policy"),
    ({"slab_count": 0}, "scheduler.slab_count"),
    ({"warp_estimate_s": -1.0}, "scheduler.warp_estimate_s"),
])
def test_bad_options_are_refused(options, field_name) -> None:
    """Options that cannot describe a timeline raise an error naming the option."""
    with pytest.raises(StageInputError) as err:
        SchedulerOptions(**options)
    assert err.value.field == field_name


def test_history_is_bounded_but_pending_slots_are_kept() -> None:
    """Only history_size finished slots are remembered, so memory stays flat over many slots."""
    sched, clock = make(history_size=3, t0_s=45.0)
    for k in range(8):
        sched.submit(f"s{k}", k)
    Timeline(sched, {"prepare": 0.5, "warp": 1.0, "finish": 0.5}, clock).run(500.0)
    ids = [v.slot_id for v in sched.snapshot().slots]
    assert ids == ["s5", "s6", "s7"]
    assert sched.stats.published == 8


def test_monotonic_clock_moves_forward_and_manual_clock_refuses_to_go_back() -> None:
    """The real clock never decreases; the manual clock rejects negative steps."""
    real = MonotonicClock()
    assert real.now_s() <= real.now_s()
    manual = ManualClock(5.0)
    assert manual.advance(2.5) == 7.5
    with pytest.raises(ValueError):
        manual.advance(-1.0)
    with pytest.raises(ValueError):
        manual.set(1.0)


# ----- property-style: random event orders keep the invariants ----------------------------------

event = st.one_of(
    st.tuples(st.just("submit"), st.integers(1, 3)),
    st.tuples(st.just("tick"), st.floats(0.0, 30.0)),
    st.tuples(st.just("done"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(event, max_size=60),
       policy=st.sampled_from(["skip", "publish_late"]),
       slab_count=st.integers(1, 3),
       prepare_ahead=st.integers(1, 3),
       warp_estimate_s=st.sampled_from([None, 5.0, 40.0]))
def test_random_event_orders_keep_the_invariants(events, policy, slab_count, prepare_ahead,
                                                 warp_estimate_s) -> None:
    """Whatever the order of submits, completions, failures, cancels and ticks: one warp at a
    time, slabs within limit, warps in seq order, no stage started twice, no slot acted on after
    it is final, every published slot went prepare → warp → finish."""
    clock = ManualClock(0.0)
    sched = Book(Scheduler(SchedulerOptions(t0_s=40.0, late_policy=policy, slab_count=slab_count,
                                            prepare_ahead=prepare_ahead,
                                            warp_estimate_s=warp_estimate_s), clock))
    running: list[tuple[str, str]] = []
    started: dict[str, list[str]] = {}
    warp_seqs: list[int] = []
    seq = 0
    for ev in events:
        now = clock.now_s()
        if ev[0] == "submit":
            for _ in range(ev[1]):
                sched.submit(f"s{seq}", seq)
                seq += 1
        elif ev[0] == "tick":
            clock.advance(ev[1])
        elif ev[0] == "done" and running:
            slot_id, stage = running.pop(ev[1] % len(running))
            sched.on_stage_done(slot_id, stage, ev[2], now)
        elif ev[0] == "cancel" and seq:
            slot_id = f"s{ev[1] % seq}"
            try:
                sched.slot(slot_id)
            except StageInputError:
                continue  # pruned from history
            state = sched.slot(slot_id).state
            if state in TERMINAL_STATES - {SlotState.CANCELLED}:
                with pytest.raises(StageInputError):
                    sched.cancel(slot_id)
            else:
                stage = sched.cancel(slot_id)
                expected = next((st_ for sid, st_ in running if sid == slot_id), None)
                # A second cancel has nothing new to interrupt.
                assert stage == (None if state is SlotState.CANCELLED else expected)
        for action in sched.next_actions(clock.now_s()):
            if action.kind == "abandon":
                assert sched.slot(action.slot_id).running_stage is not None
            if action.kind == "mark_late" and policy == "skip":
                assert sched.slot(action.slot_id).running_stage is None
            if action.kind in STAGE_ACTIONS:
                history = started.setdefault(action.slot_id, [])
                assert action.kind not in history, "stage started twice"
                history.append(action.kind)
                assert sched.slot(action.slot_id).state not in TERMINAL_STATES
                running.append((action.slot_id, action.kind))
                if action.kind == "warp":
                    warp_seqs.append(int(action.slot_id[1:]))
        snap = sched.snapshot()
        assert sum(stage == "warp" for _, stage in running) <= 1
        assert snap.slabs_in_use <= slab_count
        assert sum(v.holds_slab for v in snap.slots) == snap.slabs_in_use
        waiting = [v for v in snap.slots
                   if v.state in (SlotState.PREPARING, SlotState.PREPARED)]
        assert len(waiting) <= prepare_ahead
        for view in snap.slots:
            assert view.running_stage == next((s for sid, s in running if sid == view.slot_id),
                                              None)
    assert warp_seqs == sorted(warp_seqs)
    final = sched.snapshot()
    stats = final.stats
    assert stats.published == sum(v.state is SlotState.PUBLISHED for v in final.slots)
    assert stats.late == sum(v.late for v in final.slots)
    assert stats.failed == sum(v.state is SlotState.FAILED for v in final.slots)
    assert stats.missed_deadlines <= stats.submitted
    for view in final.slots:
        if view.state is SlotState.PUBLISHED:
            assert started[view.slot_id] == ["prepare", "warp", "finish"]


def test_a_transient_failure_is_retried_after_its_back_off_and_the_slot_publishes() -> None:
    """A finish that fails for the node's reason (disk full) goes back to warped, keeps its slab,
    waits its back-off, runs again and publishes; the retry is counted, no failure is."""
    sched, _ = make(t0_s=100.0, retry_backoff_s=2.0)
    sched.submit("s0", 0)
    sched.next_actions(0.0)
    sched.on_stage_done("s0", "prepare", True, 1.0)
    sched.next_actions(1.0)
    sched.on_stage_done("s0", "warp", True, 2.0)
    assert [a.kind for a in sched.next_actions(2.0)] == ["finish"]
    slot = sched.on_stage_done("s0", "finish", False, 3.0, error="OSError: No space left", transient=True)
    assert slot.state is SlotState.WARPED and slot.holds_slab and slot.attempts == 1
    assert sched.next_actions(4.0) == []
    assert sched.next_wakeup_s(4.0) == pytest.approx(5.0, abs=1e-3)
    assert [a.kind for a in sched.next_actions(5.0)] == ["finish"]
    assert sched.on_stage_done("s0", "finish", True, 6.0).state is SlotState.PUBLISHED
    assert (sched.stats.retries, sched.stats.failed, sched.stats.published) == (1, 0, 1)


def test_transient_failures_stop_being_retried_after_max_attempts_or_near_the_deadline() -> None:
    """The last attempt's failure, or one whose retry could not end before the deadline, fails
    the slot for good."""
    sched, _ = make(t0_s=100.0, max_attempts=2, retry_backoff_s=1.0)
    sched.submit("a", 0)
    sched.next_actions(0.0)
    assert sched.on_stage_done("a", "prepare", False, 1.0, error="crash", transient=True).state is SlotState.QUEUED
    sched.next_actions(2.0)
    slot = sched.on_stage_done("a", "prepare", False, 3.0, error="crash", transient=True)
    assert slot.state is SlotState.FAILED and slot.error == "crash"
    late, _ = make(t0_s=10.0, margin_s=2.0, retry_backoff_s=5.0)
    late.submit("b", 0)
    late.next_actions(0.0)
    assert late.on_stage_done("b", "prepare", False, 4.0, transient=True).state is SlotState.FAILED


def test_with_a_configured_t0_every_anchor_stays_on_its_air_grid() -> None:
    """The channel's grid (grid_t0 + 45·k): a slot arriving after the timeline ran dry, and a restart's
    re-anchoring, land on the next grid point at or after the lead, never between two."""
    sched, clock = make(t0_s=None, grid_t0_s=10.0)
    clock.set(1000.0)
    slot = sched.submit("a", 0)
    assert (slot.air_s - 10.0) % 45.0 == pytest.approx(0.0) and slot.air_s >= 1045.0
    assert slot.air_s < 1045.0 + 45.0
    sched.reanchor(5000.0, lead_s=30.0)
    assert (slot.air_s - 10.0) % 45.0 == pytest.approx(0.0) and 5030.0 <= slot.air_s < 5075.0
