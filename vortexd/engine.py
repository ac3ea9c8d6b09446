"""The slot engine: it owns every slot, runs their stages and decides every outcome.

One `Slot` record per slot (slot.py) lives in the engine's table from submit to retirement. The
engine asks the scheduler (pure policy) what is due, hands each stage to its lane's
`StageWorker` as `Job(slot, stage)`, runs the stage body through the one `SlotRunner`, and takes
every outcome back in `_stage_done`: the failure policy (failures.py) says what kind of fault it
was, the scheduler what follows, and the journal is written from the record (outcomes.py). The
control server's op table (ops.py) is a thin adapter over the typed operations here; the daemon
only starts the engine, serves, and asks it to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from vortexd.abandonable import run_abandonable
from vortexd.clock import Clock
from vortexd.engine_errors import NotServing, SlotAlreadyFinal, UnknownSlot
from vortexd.events import EventBus
from vortexd.failures import classify, describe
from vortexd.journal import Journal
from vortexd.metrics import Metrics
from vortexd.on_air import channel_dir
from vortexd.outcomes import OutcomeRecorder
from vortexd.recipe import Recipe, RecipeError
from vortexd.scheduler import STAGES, Action, Scheduler
from vortexd.settings import Settings
from vortexd.slot import Slot
from vortexd.slot_state import RUNNING_STATE, SlotState
from vortexd.slot_stream import live_folder
from vortexd.slot_table import SlotTable
from vortexd.spool import input_files, snapshot_inputs, spooled_inputs, sweep_spool
from vortexd.stage_worker import Job, StageWorker
from vortexd.tasks import TaskManager

log = structlog.get_logger("vortexd.engine")

_LOOP_TICK_S = 1.0
"""Longest the scheduling loop sleeps without an event: deadlines are checked at least this often."""
_IN_FLIGHT = frozenset({SlotState.PREPARING, SlotState.PREPARED, SlotState.WARPING, SlotState.WARPED,
                        SlotState.FINISHING})
"""States of a slot that has started and will go on to publish unless stopped: what a drain waits for."""


class StageRunner(Protocol):
    """The stage bodies the engine runs in worker threads (vortexd.slot_runner.SlotRunner)."""

    def prepare(self, slot: Slot, progress: Callable[[str, int, int], None]) -> Any:
        """Make the slot's actor, speech and plan; returns `pipeline.Prepared`."""

    def warp(self, slot: Slot, progress: Callable[[str, int, int], None]) -> Any:
        """Render the slot's frames into its slab."""

    def finish(self, slot: Slot, progress: Callable[[str, int, int], None]) -> Any:
        """Verify, encode and publish; returns the published folder and manifest."""

    def fp32_rerenders(self) -> int:
        """Warp chunks rendered again in fp32 so far (for the metrics)."""


@dataclass(frozen=True)
class SubmitReceipt:
    """What `submit` tells the client: the slot's place on the timeline."""

    slot_id: str
    seq: int
    state: SlotState
    duplicate: bool
    air_in_s: float | None = None
    deadline_in_s: float | None = None


@dataclass(frozen=True)
class EngineSnapshot:
    """Everything status and health read, taken at one moment."""

    accepting: bool
    draining: bool
    slots: tuple[Slot, ...]
    stats: Any
    slab_count: int
    predicted_publish_s: dict[str, float]
    lanes: dict[str, dict[str, Any]]
    now_s: float


class SlotEngine:
    """Every slot's state and every operation on slots (see the module docstring)."""

    def __init__(self, settings: Settings, clock: Clock, journal: Journal, scheduler: Scheduler,
                 events: EventBus, metrics: Metrics, spool_dir: Path, runner: StageRunner, slabs: Any,
                 on_published: Callable[[Slot], Awaitable[None]] | None = None) -> None:
        self.settings, self.clock, self.journal, self.scheduler = settings, clock, journal, scheduler
        self.events, self.metrics, self.spool_dir, self.runner, self.slabs = events, metrics, spool_dir, runner, slabs
        self.table = SlotTable()
        self._on_published = on_published
        """Told of each slot once it is published (the channel takes it for its air time)."""
        self.accepting = False
        """Whether submit takes recipes (false while starting and stopping)."""
        self.draining = False
        """The one drain flag: no slot starts preparing; slots already started go on to publish."""
        self._stopping = False
        self._workers = {stage: StageWorker(stage, self._run_stage, self._stage_done) for stage in STAGES}
        self._record = OutcomeRecorder(journal, events, metrics, settings.output_dir)
        self._wake_event = asyncio.Event()
        self._settled = asyncio.Event()
        self._stop_requested = asyncio.Event()
        """Set when `stop` begins: input checks still running are abandoned."""
        # Journal, then admit, in seq order: two submits' acks must not overtake each other.
        self._accept_lock = asyncio.Lock()
        self._submits_in_progress = 0
        self._sweep_due = False
        self._sweep_task: asyncio.Task | None = None

    # ----- life cycle ----------------------------------------------------------------------

    def start(self, tasks: TaskManager) -> None:
        """Start the stage workers and the scheduling loop under the daemon's task manager."""
        for stage, worker in self._workers.items():
            tasks.spawn(worker.run(), f"worker:{stage}")
        tasks.spawn(self._schedule_loop(), "scheduler")
        self.accepting = True

    async def stop(self, timeout_s: float) -> bool:
        """Drain: take no recipes, start no slot, wait up to `timeout_s` for every slot in flight
        (queued jobs included) to publish or fail. Out of time, interrupt them without failing
        them: the journal keeps them where they were and a restart resumes them. Returns whether
        everything in flight finished."""
        self.accepting = False
        self.draining = True
        self._stop_requested.set()
        deadline = time.monotonic() + timeout_s
        while self.in_flight() and time.monotonic() < deadline:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.5, max(0.01, deadline - time.monotonic()))):
                    await self._settled.wait()
        clean = not self.in_flight()
        self._stopping = True  # from here on nothing starts and nothing turns late
        if not clean:
            log.warning("drain_timeout", in_flight=self.in_flight(), timeout_s=timeout_s)
            for slot in self.table:
                slot.cancel.set()
            await self._wait_for_workers(timeout_s=30.0)
        for worker in self._workers.values():
            worker.stop()
        return clean

    async def _wait_for_workers(self, timeout_s: float) -> None:
        """Wait for the running stages to notice their cancel flags (they poll between chunks)."""
        deadline = time.monotonic() + timeout_s
        while any(w.current or w.queue_depth for w in self._workers.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def close(self) -> None:
        """Give back every slab and stop the journal thread (after the last write)."""
        for slot in self.table:
            slot.release_slab()
        self._record.close()

    def in_flight(self) -> list[str]:
        """Slots that started and have not reached a final state, or whose stage still runs."""
        return [slot.slot_id for slot in self.table if slot.state in _IN_FLIGHT or slot.running_stage]

    # ----- operations ----------------------------------------------------------------------

    async def submit(self, recipe: Recipe) -> SubmitReceipt:
        """Check and snapshot the recipe's inputs, journal it, then put it on the timeline.

        Raises NotServing while starting or stopping, and RecipeError / StageInputError naming
        the field for a recipe that cannot render. Checking inputs holds no lock the scheduler
        needs: slow checks of one client delay only that client.
        """
        if not self.accepting:
            raise NotServing("the daemon is not serving (starting or draining); submit again later")
        await self._no_sweep_running()
        self._submits_in_progress += 1
        try:
            recipe, inputs = await self._checked_inputs(recipe)
            async with self._accept_lock:
                return await self._accept(recipe, inputs)
        finally:
            self._submits_in_progress -= 1

    async def _checked_inputs(self, recipe: Recipe) -> tuple[Recipe, dict[str, Any]]:
        """The recipe sized for a slab, its input files read, checked and copied to the spool."""
        if self.settings.channel and channel_dir(self.settings) == self.settings.output_dir / recipe.slot_id:
            raise RecipeError("slot_id", "is the name of the channel's folder in the output folder; choose another")
        limit = self.settings.max_slot_frames
        if recipe.output.n_frames > limit:
            raise RecipeError("output.duration_s", f"{recipe.output.n_frames} frames do not fit a video slab "
                              f"of {limit} frames", max_frames=limit)
        roots = [Path(root).resolve() for root in self.settings.allowed_roots]
        # A prompt served from the actor library is picked here, once, and rendered from its copy.
        library_dir = self.settings.actor_library_dir if self.settings.image_backend == "library" else None
        # An abandonable thread, raced against a stop: a drain neither waits for a long clip's
        # check (the client is told to submit again) nor does the process's exit.
        check = asyncio.ensure_future(run_abandonable(functools.partial(
            snapshot_inputs, recipe, roots, self.spool_dir, library_dir=library_dir), name="submit-check"))
        stopped = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({check, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            abandoned = not check.done()
            if abandoned:
                check.cancel()
        if abandoned:
            raise NotServing("the daemon is stopping; submit again later")
        return check.result()

    async def _accept(self, recipe: Recipe, inputs: dict[str, Any]) -> SubmitReceipt:
        # Committed to disk before the answer: an acknowledged recipe survives kill -9.
        seq, state = await self._record.accept(recipe, inputs)
        if self.table.find(recipe.slot_id) is not None or state is not SlotState.QUEUED:
            return SubmitReceipt(recipe.slot_id, seq, state, duplicate=True)
        slot = self.table.add(Slot(recipe.slot_id, seq, recipe, inputs))
        now = self.clock.now_s()
        self.scheduler.admit(slot, self.table, now)
        self.events.publish(slot.slot_id, "state", state=SlotState.QUEUED, error=None)
        self._wake()
        return SubmitReceipt(slot.slot_id, seq, SlotState.QUEUED, duplicate=False,
                             air_in_s=round(slot.air_s - now, 3), deadline_in_s=round(slot.deadline_s - now, 3))

    async def cancel(self, slot_id: str, reason: str | None = None) -> tuple[SlotState, str | None]:
        """End a slot that is not final yet, interrupting the stage it is in; returns the new
        state and the interrupted stage. Raises UnknownSlot / SlotAlreadyFinal."""
        slot = self.table.find(slot_id)
        if slot is None:  # never accepted, or final long enough ago to be remembered by the journal alone
            raise SlotAlreadyFinal(slot_id, (await asyncio.to_thread(self.slot_row, slot_id)).state)
        if slot.terminal or not slot.gate.withdraw():
            raise SlotAlreadyFinal(slot_id, SlotState.PUBLISHED if slot.gate.published else slot.state)
        running = self.scheduler.cancel(slot, self.clock.now_s())
        self._follow_reservations()
        slot.cancel.set()
        await self._record.state(slot, error=reason)
        self.metrics.count_slot("cancelled")
        self._settle(slot)
        return SlotState.CANCELLED, running

    def drain(self) -> None:
        """No new slot starts preparing; slots already started still warp and finish."""
        self.draining = True
        self._wake()

    def resume(self) -> None:
        """Undo `drain` (not a stop: a stopping engine stays drained)."""
        if not self._stopping and self.accepting:
            self.draining = False
        self._wake()

    def snapshot(self) -> EngineSnapshot:
        """The slots, counters and lanes as they are now."""
        now = self.clock.now_s()
        lanes = {name: {"current": w.current.slot_id if w.current else None, "queued": w.queue_depth,
                        "done": w.jobs_done, "failed": w.jobs_failed} for name, w in self._workers.items()}
        return EngineSnapshot(self.accepting, self.draining, tuple(self.table.everything()), self.scheduler.stats,
                              self.settings.slab_count, self.scheduler.predicted_publish_s(self.table, now),
                              lanes, now)

    def slot_row(self, slot_id: str):
        """The journal's row of a slot (any slot ever accepted); raises UnknownSlot."""
        row = self.journal.get(slot_id)
        if row is None:
            raise UnknownSlot(slot_id)
        return row

    # ----- restart -------------------------------------------------------------------------

    def resume_from_journal(self) -> int:
        """Put every accepted-but-unfinished slot back on the timeline (from its first stage: the
        work between stages did not survive); skip what was published. Returns how many."""
        now = self.clock.now_s()
        unfinished = self.journal.unfinished()
        # Inputs of finished slots are no longer needed (their hashes are in the manifests).
        sweep_spool(self.spool_dir, {path for row in unfinished
                                     for path in input_files(Recipe.model_validate(row.recipe))})
        restored = 0
        for row in unfinished:
            if (self.settings.output_dir / row.slot_id / "manifest.json").is_file():
                # Published, but the process died before journaling it: never publish twice.
                self.journal.set_state(row.slot_id, SlotState.PUBLISHED, result={"recovered": True})
                continue
            self.journal.begin_attempt(row.slot_id)  # `vortexctl slots` shows it as RESTARTS
            recipe = Recipe.model_validate(row.recipe)
            slot = self.table.add(Slot(row.slot_id, row.seq, recipe, self._journaled_inputs(row.slot_id, recipe)))
            restored += 1
            self.scheduler.restore(slot, SlotState.QUEUED, air_s=now + self.settings.cadence_s * restored)
        if restored:
            self.scheduler.reanchor(self.table, now)
        return restored

    def _journaled_inputs(self, slot_id: str, recipe: Recipe) -> dict[str, Any]:
        """The inputs record journaled at submit; for a slot journaled without one (an older
        journal, or a crash between the two writes), read off its spool copies, named by sha256."""
        for event in self.journal.events(slot_id):
            if event.kind == "inputs" and event.data:
                return event.data["inputs"]
        return spooled_inputs(recipe)

    # ----- the scheduling loop -------------------------------------------------------------

    def _wake(self) -> None:
        self._wake_event.set()

    async def _schedule_loop(self) -> None:
        while True:
            self._wake_event.clear()
            now = self.clock.now_s()
            wake_at = None
            try:
                wake_at = await self.tick()
            except Exception:  # supervision: a bad decision must not stop every future slot
                log.exception("scheduling_failed")
            timeout_s = _LOOP_TICK_S if wake_at is None else min(_LOOP_TICK_S, max(0.0, wake_at - now))
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives as the
            # event is set (a publish wakes the loop just as the daemon shuts down), and the
            # shutdown then waits its whole 5 s for this task.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._wake_event.wait()

    async def tick(self) -> float | None:
        """Run what the scheduler says is due now; returns when it next wants to be asked."""
        if self._stopping:
            return None  # interrupted slots stay as the journal has them, for the next start
        now = self.clock.now_s()
        actions = self.scheduler.next_actions(self.table, now, draining=self.draining)
        self._follow_reservations()
        for action in actions:
            await self._dispatch(action)
        self._retire()
        self._record.gauges(self.scheduler.stats, len([s for s in self.table if not s.terminal]))
        self._maybe_sweep()
        return self.scheduler.next_wakeup_s(self.table, now)

    async def _dispatch(self, action: Action) -> None:
        slot = self.table.get(action.slot_id)
        if action.kind in RUNNING_STATE:
            if action.kind == "warp":
                slot.lease = self.slabs.lease_nowait(slot.slot_id)  # the scheduler reserved it
            await self._record.state(slot)
            self._workers[action.kind].send(Job(slot, action.kind))
            return
        # mark_late / abandon: the slot will not air on time.
        if action.kind == "abandon" and not slot.gate.withdraw():
            return  # its finish already published it: the finish's report records that
        if action.kind == "abandon":
            slot.cancel.set()
        log.warning("slot_late", slot_id=slot.slot_id, action=action.kind, reason=action.reason)
        if slot.state is SlotState.LATE:
            await self._record.state(slot, error=action.reason)
            self.metrics.count_slot("late")
        self._settle(slot)

    # ----- stages --------------------------------------------------------------------------

    def _progress(self, slot: Slot) -> Callable[[str, int, int], None]:
        loop = asyncio.get_running_loop()

        def report(stage: str, done: int, total: int) -> None:
            loop.call_soon_threadsafe(functools.partial(self.events.publish, slot.slot_id, "progress",
                                                        stage=stage, done=done, total=total))
        return report

    async def _run_stage(self, job: Job) -> Any:
        """A worker's handler: the stage body of the runner, in a thread."""
        body = getattr(self.runner, job.stage)
        return await asyncio.to_thread(body, job.slot, self._progress(job.slot))

    async def _stage_done(self, job: Job, result: Any, error: BaseException | None) -> None:
        """Every stage outcome lands here: failure policy, scheduler, record, journal, metrics."""
        slot, stage = job.slot, job.stage
        kind = classify(error, slot.cancel.is_set())
        if kind == "withdrawn" and self._stopping and not slot.terminal:
            # Interrupted by a stop, not failed: the journal keeps its state; a restart resumes it.
            self.scheduler.on_stage_interrupted(slot, stage)
            self._follow_reservations()
        else:
            self.scheduler.on_stage_done(slot, stage, error is None, self.clock.now_s(), error=describe(error),
                                         input_error=kind == "input", transient=kind == "transient")
            self._follow_reservations()
            if error is None and stage == "prepare":
                slot.prepared = result
            await self._record.outcome(slot, stage, result, self.runner, rejected=kind == "input")
            if slot.state is SlotState.PUBLISHED and self._on_published is not None:
                await self._on_published(slot)
        self._settle(slot)

    def _follow_reservations(self) -> None:
        """Slabs follow the scheduler's reservations at once, before anything awaits: a slab the
        scheduler counts as free must be free when the next tick leases it."""
        for slot in self.table:
            if not slot.holds_slab:
                slot.release_slab()

    def _settle(self, slot: Slot) -> None:
        """After a decision about `slot`: finished slots retire, and the loop and any drain look again."""
        if slot.terminal and slot.running_stage is None:
            slot.prepared = None  # the actor, speech and plan are not needed any more
            self._sweep_due = self._sweep_due or bool(input_files(slot.recipe))
            if slot.state is not SlotState.PUBLISHED:
                # A slot that will never air: its live stream goes (off the loop: a few MB of files).
                staging = live_folder(self.settings.output_dir, slot.slot_id)
                asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, staging, True)
        self._retire()
        self._settled.set()
        self._wake()

    def _retire(self) -> None:
        self.table.retire_finished()

    # ----- the spool -----------------------------------------------------------------------

    async def _no_sweep_running(self) -> None:
        if self._sweep_task is not None:
            await asyncio.shield(self._sweep_task)

    def _maybe_sweep(self) -> None:
        """Start a sweep of the spool when slots with input files finished and no submit is
        storing files (a sweep never waits for a submit, and nothing waits for a sweep but a
        submit that starts during one, for the few ms of its unlinks)."""
        if not self._sweep_due or self._submits_in_progress or self._sweep_task is not None:
            return
        self._sweep_due = False
        keep = {path for slot in self.table for path in input_files(slot.recipe)}
        self._sweep_task = asyncio.get_running_loop().create_task(self._sweep(keep), name="spool-sweep")

    async def _sweep(self, keep: set[Path]) -> None:
        try:
            removed = await asyncio.to_thread(sweep_spool, self.spool_dir, keep)
            if removed:
                log.info("spool_swept", removed=removed)
        finally:
            self._sweep_task = None
