"""Writing down what the engine decided: the journal (from the slot record alone), the events,
the metrics. One place, so every transition is journaled before anyone is told of it, and every
outcome is counted exactly once.

Journal writes (an fsync each) run on one thread of their own, never on the event loop; one
thread, so the journal sees the transitions in the order they were decided.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from vortexd.events import EventBus
from vortexd.journal import Journal, SlotFinished
from vortexd.metrics import Metrics
from vortexd.recipe import Recipe
from vortexd.slot import Slot
from vortexd.slot_state import SlotState

log = structlog.get_logger("vortexd.engine")

_PREPARE_PARTS = ("image", "warp_prepare", "tts", "motion")
_WARP_PARTS = ("encode",)
"""The stream is encoded chunk by chunk inside the warp stage."""
_FINISH_PARTS = ("verify", "remux")


class OutcomeRecorder:
    """Journal, events and metrics of the engine's decisions (see the module docstring)."""

    def __init__(self, journal: Journal, events: EventBus, metrics: Metrics, output_dir: Path) -> None:
        self.journal, self.events, self.metrics, self.output_dir = journal, events, metrics, output_dir
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._misses_reported = 0

    def close(self) -> None:
        """Stop the journal thread after its last write."""
        self._thread.shutdown(wait=True)

    async def _write(self, call, *args, **kwargs) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, functools.partial(call, *args, **kwargs))

    async def accept(self, recipe: Recipe, inputs: dict[str, Any]) -> tuple[int, SlotState]:
        """Journal an accepted recipe and its inputs record (committed before the answer); returns
        its seq and journaled state. A duplicate submit journals nothing new."""
        recipe_json = json.dumps(recipe.model_dump(mode="json"), sort_keys=True)

        def accept() -> tuple[int, SlotState]:
            known = self.journal.get(recipe.slot_id) is not None
            seq = self.journal.accept(recipe.slot_id, recipe_json, recipe.content_hash())
            if not known and inputs:
                self.journal.record_event(recipe.slot_id, "inputs", {"inputs": inputs})
            return seq, SlotState(self.journal.get(recipe.slot_id).state)
        return await self._write(accept)

    async def state(self, slot: Slot, error: str | None = None, result: dict[str, Any] | None = None) -> None:
        """Journal the slot's state as its record says now, then tell subscribers."""
        state = slot.state  # the record may move on while the write runs; this write is of now
        try:
            await self._write(self.journal.set_state, slot.slot_id, state, error=error, result=result)
        except SlotFinished:
            return  # e.g. a cancelled slot's stage reporting back: the final state stands
        self.events.publish(slot.slot_id, "state", state=state, error=error)

    async def outcome(self, slot: Slot, stage: str, result: Any, runner: Any, rejected: bool) -> None:
        """Record what a stage's end left the slot in (published, failed, retried, or its next
        state). `rejected`: the stage failed on the recipe's own input."""
        self._observe(slot, stage, result, runner)
        if slot.state is SlotState.PUBLISHED:
            await self._published(slot, result)
        elif slot.state is SlotState.FAILED:
            log.error("slot_failed", slot_id=slot.slot_id, stage=stage, error=slot.error)
            await self.state(slot, error=slot.error)
            # A bad input is the user's fault: counted apart, so deadline alerts stay the node's.
            self.metrics.count_slot("rejected" if rejected else "failed")
        elif slot.terminal:
            return  # cancelled or late: recorded when decided; the stage only gave back what it held
        elif slot.retry_at_s is not None:
            log.warning("stage_retry", slot_id=slot.slot_id, stage=stage, attempt=slot.attempts,
                        retry_at_s=round(slot.retry_at_s, 3), error=slot.error)
            await self.state(slot, error=f"{stage} will be tried again: {slot.error}")
        else:
            await self.state(slot)

    async def _published(self, slot: Slot, published: Any) -> None:
        manifest = published.manifest
        result = {"slot_dir": str(published.path), "video": str(published.path / "video.mp4"),
                  "stage_seconds": manifest["stage_seconds"],
                  "verdict_passed": (manifest.get("verdict") or {}).get("passed"),
                  "deadline_slack_s": round(slot.slack_s or 0.0, 3), "late": slot.late}
        await self.state(slot, result=result)
        self.metrics.observe_published(time.monotonic() - slot.accepted_monotonic_s, slot.slack_s or 0.0,
                                       late=slot.late)
        log.info("slot_published", slot_id=slot.slot_id, slack_s=round(slot.slack_s or 0.0, 3), late=slot.late)

    def _observe(self, slot: Slot, stage: str, result: Any, runner: Any) -> None:
        """Stage timings into the metrics, for the stages that completed."""
        if slot.state is SlotState.FAILED or (slot.retry_at_s is not None and not slot.terminal):
            return
        if stage in slot.durations_s:
            self.metrics.observe_stage(stage, slot.durations_s[stage])
        seconds = slot.clock.seconds
        parts = {"prepare": _PREPARE_PARTS, "warp": _WARP_PARTS, "finish": _FINISH_PARTS}[stage]
        for part in parts:
            if part in seconds:
                self.metrics.observe_stage(part, seconds[part])
        if stage == "warp" and slot.stream is not None and slot.stream.first_segment_s is not None:
            self.metrics.observe_first_segment(slot.stream.first_segment_s)
        if stage == "warp" and "warp" in seconds:
            self.metrics.record_warp_throughput(slot.recipe.output.n_frames, seconds["warp"])
            self.metrics.sync_fp32_rerenders(runner.fp32_rerenders())
        if stage == "finish" and result is not None:
            offset = (result.manifest.get("verdict") or {}).get("av_offset_frames")
            if offset is not None:
                self.metrics.observe_lipsync_offset(offset)

    def gauges(self, stats: Any, queue_depth: int) -> None:
        """Queue depth, and the deadline misses the scheduler counted since the last call."""
        self.metrics.set_queue_depth(queue_depth)
        new_misses = stats.missed_deadlines - self._misses_reported
        if new_misses > 0:
            self.metrics.count_deadline_misses(new_misses)
            self._misses_reported = stats.missed_deadlines
