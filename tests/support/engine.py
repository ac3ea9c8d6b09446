"""A real SlotEngine on a scripted stage runner, for engine and vortexctl tests without models.

Everything but the stage bodies is the daemon's own: the SQLite journal, the scheduler, the slab
pool on a small host arena, the event bus, the metrics, the spool, the publish gate. The stage
bodies are scripted: each takes a set time (polling the slot's cancel flag, as the real ones do
between chunks), reports the real stages' progress events, can be held until released or made
to raise, and does its job on a small scale — warp fills the slot's frames, finish publishes a
real slot folder (frames and manifest) through `publish_slot` and the slot's gate.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.encode.publish import publish_slot
from vortexd.clock import MonotonicClock
from vortexd.daemon import STAGE_METRICS
from vortexd.engine import SlotEngine
from vortexd.events import EventBus
from vortexd.journal import Journal
from vortexd.metrics import Metrics, MetricsOptions
from vortexd.pipeline import Prepared
from vortexd.scheduler import Scheduler, SchedulerOptions
from vortexd.settings import Settings
from vortexd.slot import Slot
from vortexd.tasks import TaskManager

FRAME_PX = 8
"""Frames of the scripted slots are 8×8: the slab pool's shapes are the daemon's, only smaller."""


@dataclass
class ScriptedRunner:
    """Stage bodies with set durations (see the module docstring)."""

    output_dir: Path
    seconds: dict[str, float] = field(default_factory=lambda: {"prepare": 0.02, "warp": 0.02, "finish": 0.02})
    failures: dict[tuple[str, str], list[BaseException]] = field(default_factory=dict)
    """(slot_id, stage) → exceptions to raise, one per run, before the stage's work."""
    holds: dict[tuple[str, str], threading.Event] = field(default_factory=dict)
    """(slot_id, stage) → the stage waits here (after its set time) until the event is set."""
    started: list[tuple[str, str]] = field(default_factory=list)

    def hold(self, slot_id: str, stage: str) -> threading.Event:
        """Make `stage` of `slot_id` wait until the returned event is set."""
        return self.holds.setdefault((slot_id, stage), threading.Event())

    def fail(self, slot_id: str, stage: str, *errors: BaseException) -> None:
        """Make the next runs of `stage` of `slot_id` raise `errors`, one each."""
        self.failures.setdefault((slot_id, stage), []).extend(errors)

    def _work(self, slot: Slot, stage: str) -> None:
        self.started.append((slot.slot_id, stage))
        key = (slot.slot_id, stage)
        deadline = time.monotonic() + self.seconds.get(stage, 0.0)
        while time.monotonic() < deadline or (key in self.holds and not self.holds[key].is_set()):
            if slot.cancel.is_set():
                raise InterruptedError(f"{stage} cancelled")
            time.sleep(0.005)
        pending = self.failures.get(key)
        if pending:
            raise pending.pop(0)

    def prepare(self, slot: Slot, progress) -> Prepared:
        """Takes its time; reports image and tts like the real prepare."""
        self._work(slot, "prepare")
        progress("image", 1, 1)
        progress("tts", 1, 1)
        return Prepared(actor=None, speech=None, plan=None, warnings=[])

    def warp(self, slot: Slot, progress) -> np.ndarray:
        """Takes its time; fills each frame with the slot's seq and frame number."""
        self._work(slot, "warp")
        frames = slot.frames
        frames[...] = (np.arange(len(frames), dtype=np.uint8)[:, None, None, None] + slot.seq)
        progress("warp", len(frames), len(frames))
        return frames

    def finish(self, slot: Slot, progress):
        """Takes its time; publishes the frames and a manifest through the slot's gate."""
        self._work(slot, "finish")

        def write(folder: Path) -> dict[str, Any]:
            np.save(folder / "frames.npy", slot.frames)
            progress("encode", 1, 1)
            return {"slot_id": slot.slot_id, "stage_seconds": {}, "verdict": None, "inputs": slot.inputs}

        return publish_slot(self.output_dir, slot.slot_id, write, gate=slot.gate.publishing)

    def fp32_rerenders(self) -> int:
        """No fp16 here: nothing is ever re-rendered."""
        return 0


def engine_settings(folder: Path, **overrides: Any) -> Settings:
    """Daemon settings for a scripted engine under `folder` (cadence 2 s unless overridden)."""
    values: dict[str, Any] = {"output_dir": folder / "out", "journal_path": folder / "journal.sqlite3",
                              "socket_path": folder / "control.sock", "allowed_roots": [str(folder)],
                              "cadence_s": 2.0, "margin_s": 0.2, "max_slot_frames": 8, "slab_count": 2,
                              "drain_timeout_s": 5.0}
    return Settings(**(values | overrides))


class EngineUnderTest:
    """A SlotEngine with its journal, arena and slab pool, started on the running loop."""

    def __init__(self, folder: Path, runner: ScriptedRunner | None = None, **settings: Any) -> None:
        from vram import Arena, ArenaPlan, SlabPool, slab_region_bytes

        self.settings = engine_settings(folder, **settings)
        self.settings.output_dir.mkdir(parents=True, exist_ok=True)
        self.runner = runner or ScriptedRunner(self.settings.output_dir)
        self.journal = Journal.open(self.settings.journal_path)
        count, frames = self.settings.slab_count, self.settings.max_slot_frames
        plan = ArenaPlan.from_budgets({"video_slabs": slab_region_bytes(count, frames, FRAME_PX, FRAME_PX)})
        self.arena = Arena.create(plan, "cpu")
        self.slabs = SlabPool(self.arena, count=count, frames=frames, height=FRAME_PX, width=FRAME_PX)
        self.events = EventBus()
        self.metrics = Metrics(MetricsOptions(stages=STAGE_METRICS))
        self.tasks = TaskManager()
        options = SchedulerOptions(cadence_s=self.settings.cadence_s, margin_s=self.settings.margin_s,
                                   slab_count=count, late_policy=self.settings.late_policy)
        clock = MonotonicClock()
        self.engine = SlotEngine(self.settings, clock, self.journal, Scheduler(options, clock), self.events,
                                 self.metrics, folder / "spool", self.runner, self.slabs)

    def start(self) -> SlotEngine:
        """Resume what the journal holds, then start the workers and the loop (call on the loop)."""
        self.engine.resume_from_journal()
        self.engine.start(self.tasks)
        return self.engine

    async def close(self) -> None:
        """Stop everything and release the journal and the arena."""
        self.events.close()
        await self.tasks.shutdown(timeout_s=5.0)
        self.engine.close()
        self.journal.close()
        self.arena.close()

    def state(self, slot_id: str) -> str:
        """The journal's state of a slot."""
        return str(self.journal.get(slot_id).state)

    async def wait_state(self, slot_id: str, *states: str, timeout_s: float = 10.0) -> str:
        """Wait until the journal shows `slot_id` in one of `states`; returns it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            row = self.journal.get(slot_id)
            if row is not None and row.state in states:
                return str(row.state)
            await asyncio.sleep(0.01)
        raise AssertionError(f"{slot_id} not in {states} after {timeout_s} s: {self.journal.get(slot_id)}")


def text_recipe(slot_id: str, seconds: float = 2.0, fps: int = 2) -> Any:
    """A text-only recipe of `seconds` at `fps` (small: a scripted slot's frames are few)."""
    from vortexd.recipe import Recipe

    return Recipe.model_validate({"slot_id": slot_id, "speech": {"text": f"This is {slot_id}."},
                                  "output": {"duration_s": seconds, "fps": fps}})
