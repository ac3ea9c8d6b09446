"""The slot engine: it owns every slot and every operation on slots.

One object holds a slot's whole state: the journal (durable), the scheduler (pure timing logic
it consults), each slot's in-memory work between stages, and the event bus that tells
subscribers. Submit, cancel, drain, resume, status and slots are its methods; the control
server's op table (ops.py) only adapts requests to them, and the daemon only runs the stages the
engine dispatches and reports their outcome back to `stage_done`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from stages.errors import StageInputError
from vortexd.clock import Clock
from vortexd.control.protocol import ControlError, parse_submit
from vortexd.events import EventBus
from vortexd.journal import Journal, SlotFinished
from vortexd.metrics import Metrics
from vortexd.recipe import Recipe
from vortexd.scheduler import Action, Scheduler
from vortexd.settings import Settings
from vortexd.slot_state import RUNNING_STATE, TERMINAL_STATES, SlotState
from vortexd.slot_work import SlotWork
from vortexd.spool import input_files, snapshot_inputs, sweep_spool

log = structlog.get_logger("vortexd.engine")


@dataclass(frozen=True)
class StageWorkers:
    """How the engine reaches the stage actors the daemon runs."""

    send: Callable[[str, str], None]
    """send(stage, slot_id): start that stage of the slot."""
    cancel: Callable[[str, str | None], None]
    """cancel(slot_id, stage): interrupt the slot's work (in every stage when stage is None)."""


class SlotEngine:
    """Every slot's state and the operations on it (see the module docstring)."""

    def __init__(self, settings: Settings, clock: Clock, journal: Journal, scheduler: Scheduler,
                 events: EventBus, metrics: Metrics, spool_dir: Path, workers: StageWorkers,
                 wake: Callable[[], None]) -> None:
        self.settings, self.clock, self.journal, self.scheduler = settings, clock, journal, scheduler
        self.events, self.metrics, self.spool_dir, self.workers = events, metrics, spool_dir, workers
        self._wake = wake
        self.accepting = False
        """Whether submit takes recipes (false while starting and draining)."""
        self._work: dict[str, SlotWork] = {}
        self._misses_reported = 0
        # Submits snapshot into the spool and sweeps empty it: the lock keeps a sweep from taking a
        # file a submit has just stored (or found stored) but not yet registered.
        self._spool_lock = asyncio.Lock()
        self._sweep_due = False
        self._journal_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")

    def work(self, slot_id: str) -> SlotWork:
        """The in-memory artefacts of a slot in flight."""
        return self._work[slot_id]

    def in_flight(self) -> list[str]:
        """Slots with in-memory work (accepted, not yet final)."""
        return list(self._work)

    def close(self) -> None:
        """Give back every slab and stop the journal thread (after the last write)."""
        for work in self._work.values():
            work.release_slab()
        self._journal_thread.shutdown(wait=True)

    # ----- operations ----------------------------------------------------------------------

    async def submit(self, args: dict[str, Any]) -> dict[str, Any]:
        """Check, snapshot and journal a recipe, then put it on the timeline."""
        if not self.accepting:
            raise ControlError("draining", "the daemon is not serving (starting or draining); submit again later")
        async with self._spool_lock:
            recipe = await self._checked_recipe(args)
            recipe_json = json.dumps(recipe.model_dump(mode="json"), sort_keys=True)
            # Committed to disk before the answer: an acknowledged recipe survives kill -9.
            seq = await asyncio.to_thread(self.journal.accept, recipe.slot_id, recipe_json, recipe.content_hash())
            record = self.journal.get(recipe.slot_id)
            if recipe.slot_id in self._work or record.state != SlotState.QUEUED:
                return {"slot_id": recipe.slot_id, "seq": seq, "state": record.state, "duplicate": True}
            self._work[recipe.slot_id] = SlotWork(recipe=recipe, seq=seq)
        now = self.clock.now_s()
        view = self.scheduler.submit(recipe.slot_id, seq, now)
        self.events.publish(recipe.slot_id, "state", state=SlotState.QUEUED, error=None)
        self._wake()
        return {"slot_id": recipe.slot_id, "seq": seq, "state": SlotState.QUEUED, "duplicate": False,
                "air_in_s": round(view.air_s - now, 3), "deadline_in_s": round(view.deadline_s - now, 3)}

    async def _checked_recipe(self, args: dict[str, Any]) -> Recipe:
        """The request's recipe, paths inside the roots, sized for a slab, inputs snapshotted."""
        recipe = parse_submit(args, self.settings.allowed_roots)
        limit = self.settings.max_slot_frames
        if recipe.output.n_frames > limit:
            raise ControlError("invalid_recipe", f"output.duration_s: {recipe.output.n_frames} frames do not fit "
                               f"a video slab of {limit} frames", {"field": "output.duration_s", "max_frames": limit})
        # Read, check and copy the input files now: a bad or swapped file is refused here, never
        # accepted and then failed at prepare time. (A trusted base_dir lies inside the roots.)
        roots = [Path(root).resolve() for root in self.settings.allowed_roots]
        recipe, _ = await asyncio.to_thread(snapshot_inputs, recipe, roots, self.spool_dir)
        return recipe

    async def cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        """End a slot that is not final yet, interrupting the stage it is in."""
        slot_id = args["slot_id"]
        record = self._record(slot_id)
        if record.terminal:
            raise ControlError("conflict", f"slot {slot_id!r} is already {record.state}",
                               {"slot_id": slot_id, "state": record.state})
        running = self.scheduler.cancel(slot_id, self.clock.now_s())
        if running is not None:
            self.workers.cancel(slot_id, running)
        else:
            self.forget(slot_id)
        await self.record_state(slot_id, SlotState.CANCELLED, error=args.get("reason"))
        self.metrics.count_slot("cancelled")
        self._wake()
        return {"slot_id": slot_id, "state": SlotState.CANCELLED, "interrupted_stage": running}

    def drain(self) -> None:
        """No new slot starts preparing; slots already prepared still warp and finish."""
        self.scheduler.drain()

    def resume(self) -> None:
        """Undo `drain`."""
        self.scheduler.resume()
        self._wake()

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        """One slot's journal record and schedule, or the timeline of every pending slot."""
        slot_id = args.get("slot_id")
        if slot_id is not None:
            summary = self._record(slot_id).summary()
            try:
                summary["schedule"] = self.scheduler.slot(slot_id).to_dict()
            except (KeyError, ValueError, LookupError):
                pass  # the scheduler forgets old final slots; the journal keeps them
            return summary
        snapshot = self.scheduler.snapshot()
        stats = snapshot.stats
        return {"draining": snapshot.draining, "queue_depth": snapshot.queue_depth,
                "warping": snapshot.warping_slot_id,
                "slabs": {"count": snapshot.slab_count, "in_use": snapshot.slabs_in_use},
                "stats": {k: getattr(stats, k) for k in stats.__dataclass_fields__},
                "cadence_s": self.settings.cadence_s,
                "pending": [v.to_dict() for v in snapshot.slots if v.state not in TERMINAL_STATES]}

    async def slots(self, args: dict[str, Any]) -> dict[str, Any]:
        """The newest slots from the journal, optionally only some states."""
        records = self.journal.list(limit=args.get("limit", 100), states=args.get("states"))
        return {"slots": [record.summary() for record in records]}

    def _record(self, slot_id: str):
        record = self.journal.get(slot_id)
        if record is None:
            raise ControlError("not_found", f"no slot {slot_id!r}", {"slot_id": slot_id})
        return record

    # ----- the slot's life -----------------------------------------------------------------

    def resume_from_journal(self) -> int:
        """Put every accepted-but-unfinished slot back on the timeline; skip what was published.
        Returns how many were restored."""
        now = self.clock.now_s()
        restored = 0
        unfinished = self.journal.unfinished()
        # Inputs of finished slots are no longer needed (their hashes are in the manifests).
        sweep_spool(self.spool_dir, {path for record in unfinished
                                     for path in input_files(Recipe.model_validate(record.recipe))})
        for record in unfinished:
            if (self.settings.output_dir / record.slot_id / "manifest.json").is_file():
                # Published, but the process died before journaling it: never publish twice.
                self.journal.set_state(record.slot_id, SlotState.PUBLISHED, result={"recovered": True})
                continue
            self.journal.begin_attempt(record.slot_id)  # `vortexctl slots` shows it as RESTARTS
            self._work[record.slot_id] = SlotWork(recipe=Recipe.model_validate(record.recipe), seq=record.seq)
            restored += 1
            self.scheduler.restore(record.slot_id, record.seq, SlotState.QUEUED,
                                   air_s=now + self.settings.cadence_s * restored)
        if restored:
            self.scheduler.reanchor(now)
        return restored

    async def tick(self) -> float | None:
        """Run what the scheduler says is due now; returns when it next wants to be asked."""
        now = self.clock.now_s()
        for action in self.scheduler.next_actions(now):
            await self._dispatch(action)
        self._refresh_gauges()
        if self._sweep_due:
            await self._sweep_spool()
        return self.scheduler.next_wakeup_s(now)

    async def _sweep_spool(self) -> None:
        """Remove the spool files no slot in flight names (a finished slot's inputs live on only as
        the hashes in its manifest), so the spool does not grow with every new input."""
        async with self._spool_lock:
            self._sweep_due = False
            keep = {path for work in self._work.values() for path in input_files(work.recipe)}
            removed = await asyncio.to_thread(sweep_spool, self.spool_dir, keep)
        if removed:
            log.info("spool_swept", removed=removed)

    async def _dispatch(self, action: Action) -> None:
        slot_id = action.slot_id
        if action.kind in RUNNING_STATE:
            await self.record_state(slot_id, RUNNING_STATE[action.kind])
            self.workers.send(action.kind, slot_id)
            return
        # mark_late / abandon: the slot will not air on time.
        if action.kind == "abandon":
            self.workers.cancel(slot_id, None)
        if self.scheduler.slot(slot_id).state is SlotState.LATE:
            await self.record_state(slot_id, SlotState.LATE, error=action.reason)
            self.metrics.count_slot("late")
            if action.kind == "mark_late":
                self.forget(slot_id)
        log.warning("slot_late", slot_id=slot_id, action=action.kind, reason=action.reason)

    async def stage_done(self, stage: str, slot_id: str, result: Any, error: BaseException | None) -> None:
        """Every stage outcome lands here: scheduler, journal, metrics, events, in that order."""
        message = None if error is None else (f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
        # A bad input (no face, unspeakable text) fails its slot as rejected: the operator's
        # deadline alerts are for the daemon's own failures, not for user errors.
        rejected = isinstance(error, StageInputError)
        view = self.scheduler.on_stage_done(slot_id, stage, error is None, self.clock.now_s(), error=message,
                                            input_error=rejected)
        if view.stage_durations_s.get(stage) is not None:
            self.metrics.observe_stage(stage, view.stage_durations_s[stage])
        if view.state is SlotState.PUBLISHED or (view.published_s is not None and stage == "finish"):
            await self._published(slot_id, view, result or {})
        elif view.state is SlotState.FAILED:
            log.error("slot_failed", slot_id=slot_id, stage=stage, error=message)
            await self.record_state(slot_id, SlotState.FAILED, error=message)
            self.metrics.count_slot("rejected" if rejected else "failed")
            self.forget(slot_id)
        elif view.state in (SlotState.LATE, SlotState.CANCELLED):
            self.forget(slot_id)
        else:
            await self.record_state(slot_id, view.state)
        self._wake()

    async def _published(self, slot_id: str, view, result: dict[str, Any]) -> None:
        slack_s = view.deadline_slack_s if view.deadline_slack_s is not None else 0.0
        await self.record_state(slot_id, SlotState.PUBLISHED,
                                result={**result, "deadline_slack_s": round(slack_s, 3), "late": view.late})
        work = self._work.get(slot_id)
        end_to_end_s = time.monotonic() - work.accepted_monotonic_s if work is not None else None
        self.metrics.observe_published(end_to_end_s, slack_s, late=view.late)
        log.info("slot_published", slot_id=slot_id, slack_s=round(slack_s, 3), late=view.late)
        self.forget(slot_id)

    async def record_state(self, slot_id: str, state: SlotState, error: str | None = None,
                           result: dict[str, Any] | None = None) -> None:
        """Journal a slot's new state, then tell subscribers (never the other way round).

        The write (an fsync) runs on the journal's own thread, never on the event loop; one
        thread, so the journal sees the transitions in the order they were decided.
        """
        write = functools.partial(self.journal.set_state, slot_id, state, error=error, result=result)
        try:
            await asyncio.get_running_loop().run_in_executor(self._journal_thread, write)
        except SlotFinished:
            return  # e.g. a cancelled slot's stage reporting back: the final state stands
        self.events.publish(slot_id, "state", state=state, error=error)

    def forget(self, slot_id: str) -> None:
        """Drop a finished slot's in-memory artefacts and give its slab back; its spool files go
        at the next tick."""
        work = self._work.pop(slot_id, None)
        if work is not None:
            work.release_slab()
            self._sweep_due = self._sweep_due or bool(input_files(work.recipe))

    def _refresh_gauges(self) -> None:
        snapshot = self.scheduler.snapshot()
        self.metrics.set_queue_depth(snapshot.queue_depth)
        # The scheduler counts a miss when it sees the clock pass a deadline; mirror new ones.
        new_misses = snapshot.stats.missed_deadlines - self._misses_reported
        if new_misses > 0:
            self.metrics.count_deadline_misses(new_misses)
            self._misses_reported = snapshot.stats.missed_deadlines
