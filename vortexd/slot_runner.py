"""The one slot runner: a slot's three stage bodies on this process's backends.

`vortexd render`, the daemon's warm-up, the daemon's stage workers and the test helpers all run a
slot through a `SlotRunner`, so there is one way to make a slot. Each body takes the slot record,
reads what the earlier stage left in it, honours its cancel flag between chunks, and returns its
result as a value: `prepare` → `Prepared`, `warp` → the frames written into the slot's slab,
`finish` → the `PublishedSlot` (published through the slot's gate, so a withdrawn slot never is).
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from vortexd import pipeline
from vortexd.pipeline import Backends, Prepared, Progress
from vortexd.recipe import Recipe
from vortexd.settings import Settings
from vortexd.slot import HeldSlab, Slot
from vortexd.slot_stream import SlotStream, live_folder, publish_stream

if TYPE_CHECKING:
    from stages.encode import PublishedSlot

FILLER_KEY = "filler.json"
"""What a kept filler was made with (length, warp, library versions): a start with the same reuses it."""
WARM_UP_TEXT = "Warm up."
WARM_UP_PROMPT = "a person looking at the camera"


def _no_progress(stage: str, done: int, total: int) -> None:
    """Progress sink that drops reports (the default)."""


class SlotRunner:
    """Runs slots' stages (see the module docstring). Stateless beyond the backends' caches, so
    stages of different slots may run on different threads at once."""

    def __init__(self, settings: Settings, backends: Backends, output_dir: Path) -> None:
        self.settings, self.backends, self.output_dir = settings, backends, Path(output_dir)

    def prepare(self, slot: Slot, progress: Progress = _no_progress) -> Prepared:
        """Image (and the warp's one-off work for it) beside speech, then the motion plan."""
        return pipeline.prepare(slot.recipe, self.settings, self.backends, slot.clock, progress,
                                should_stop=slot.cancel.is_set, inputs=slot.inputs)

    def warp(self, slot: Slot, progress: Progress = _no_progress, verify: bool | None = None,
             before_chunk: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Every frame of the slot's plan into its slab, each chunk encoded into the slot's live
        stream (and checked, when verifying) as it lands; returns the frames (the finished stream
        is kept in `slot.stream`). `before_chunk(start, stop)` runs before each chunk's render."""
        prepared = self._prepared(slot, "warp")
        plan = prepared.plan
        verify = self.settings.verify if verify is None else verify
        # The warp reports frames and the encoder's thread segments: one at a time to the caller.
        progress = _one_at_a_time(progress)
        stream = SlotStream(live_folder(self.output_dir, slot.slot_id), prepared.speech, plan.fps, plan.n_frames,
                            verify, lambda done, total: progress("segment", done, total))
        try:
            with slot.clock.time("warp"):
                pipeline.warp_frames(self.backends, prepared.actor, plan, slot.frames, progress,
                                     should_stop=slot.cancel.is_set,
                                     on_chunk=lambda start, stop: stream.add(slot.frames[start:stop], start),
                                     before_chunk=before_chunk or (lambda start, stop: None))
            # "drain": from the last warped chunk until the encoder and the checks are done with it.
            with slot.clock.time("drain"):
                slot.stream = stream.close()
        except BaseException:
            stream.abort()
            raise
        # The encoder and the checks ran beside the warp, each on its thread: their busy seconds.
        seconds = slot.clock.seconds
        seconds["encode"], seconds["verify"] = slot.stream.encode_s, slot.stream.verify_s
        return slot.frames

    def finish(self, slot: Slot, progress: Progress = _no_progress) -> PublishedSlot:
        """Verify, encode and publish the slot's frames atomically, through its publish gate."""
        prepared = self._prepared(slot, "finish")
        rendered = pipeline.Rendered(slot.recipe, prepared.actor, prepared.speech, prepared.plan, slot.frames,
                                     slot.clock, prepared.warnings, slot.inputs, slot.stream, slot.stream.verdict)
        published = pipeline.finish(self.output_dir, rendered, self.backends, self.settings.verify, progress,
                                    should_stop=slot.cancel.is_set, gate=slot.gate.publishing)
        # Published: the slot's own hls/ is the stream now; the staging copy goes.
        _remove_staging(slot.stream.folder)
        return published

    def render(self, slot: Slot, progress: Progress = _no_progress,
               before_chunk: Callable[[int, int], None] | None = None) -> PublishedSlot:
        """All three stages in a row (the one-shot `vortexd render`); the slot must hold a slab.
        `before_chunk(start, stop)` runs before each chunk of the warp (the one-shot render waits
        there for those frames' pages of its slab, committed beside the prepare stage and the warp)."""
        slot.prepared = self.prepare(slot, progress)
        self.warp(slot, progress, before_chunk=before_chunk)
        return self.finish(slot, progress)

    def warm_up(self, slab: np.ndarray) -> None:
        """Load every configured backend and run each once (prepare and a chunk of warp into
        `slab`, then the CLIP judge on it), so the first slot pays no first-call costs."""
        settings = self.settings
        flux = self.backends.flux  # loads Flux if configured: missing weights stop the start-up here
        if flux is not None:
            # Flux runs once on its own; the slot below uses the sample actor. A warm-up slot with
            # a prompt stopped the start-up whenever Flux drew no face for it (random or poorly
            # fitting weights: NoFaceError after face_attempts pictures), and the face gate and
            # crop it would have warmed are the ones the sample actor goes through anyway.
            flux.generate(WARM_UP_PROMPT, 0)
        recipe = Recipe.model_validate({
            "slot_id": "warm-up",
            "actor": {},
            "speech": {"text": WARM_UP_TEXT, "voice": settings.default_voice},
            "output": {"duration_s": settings.warp_chunk_frames / 24, "fps": 24}})
        if settings.kokoro_warm_up:
            self.backends.kokoro.warm_up()
        slot = Slot("warm-up", 0, recipe, lease=HeldSlab(slab))
        slot.prepared = self.prepare(slot)
        frames = self.warp(slot)  # the stream encoder warms up too; its files are not kept
        _remove_staging(slot.stream.folder)
        judge = self.backends.clip if settings.verify else None
        if judge is not None:  # loads the ensemble now: missing weights stop the start-up
            judge.score(frames, slot.prepared.actor.image)

    def fp32_rerenders(self) -> int:
        """Warp chunks the backend rendered again in fp32 (LivePortrait's fp16 guard; 0 for the mesh)."""
        return getattr(self.backends.warp, "fp32_rerenders", 0)

    def render_filler(self, slab: np.ndarray, seconds: float, folder: Path) -> Path:
        """The channel's filler: the sample actor idling — blinks, breath, no speech — for
        `seconds`, rendered and encoded like any slot; its stream is published as `folder/hls`
        (returned). The same every time (the renders are deterministic)."""
        from scipy.io import wavfile

        key = {"seconds": seconds, "warp": self.backends.warp.name, "versions": pipeline.versions()}
        if _filler_kept(folder, key):
            return folder / "hls"  # made by an earlier start with the same code: the same bytes
        folder.mkdir(parents=True, exist_ok=True)
        silence = folder / "silence.wav"
        wavfile.write(silence, 24_000, np.zeros(int(round(seconds * 24_000)), np.int16))
        recipe = Recipe.model_validate({"slot_id": "filler", "speech": {"audio": str(silence)},
                                        "output": {"duration_s": seconds, "fps": 24}})
        slot = Slot(".filler", 0, recipe, lease=HeldSlab(slab))
        slot.prepared = self.prepare(slot)
        self.warp(slot, verify=False)  # silence is the point: nothing to check it against
        hls = folder / "hls"
        shutil.rmtree(hls, ignore_errors=True)
        (folder / "video.mp4").unlink(missing_ok=True)
        publish_stream(slot.stream, folder)
        _remove_staging(slot.stream.folder)
        (folder / FILLER_KEY).write_text(json.dumps(key, sort_keys=True))
        return hls

    @staticmethod
    def _prepared(slot: Slot, stage: str) -> Prepared:
        if slot.prepared is None:
            raise RuntimeError(f"{stage} of slot {slot.slot_id!r} before its prepare stage")
        return slot.prepared


def _one_at_a_time(progress: Progress) -> Progress:
    """`progress`, called by one thread at a time (a printer's line is never split by another's)."""
    lock = threading.Lock()

    def report(stage: str, done: int, total: int) -> None:
        with lock:
            progress(stage, done, total)
    return report


def _remove_staging(folder: Path) -> None:
    """Remove a slot's live staging folder, and the staging place itself once it is empty."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass  # other slots are being made: their staging stays


def _filler_kept(folder: Path, key: dict) -> bool:
    """Whether `folder` holds a whole filler made with `key`."""
    try:
        kept = json.loads((folder / FILLER_KEY).read_text())
        whole = "#EXT-X-ENDLIST" in (folder / "hls" / "index.m3u8").read_text()
    except (OSError, ValueError):
        return False
    return whole and kept == json.loads(json.dumps(key, sort_keys=True))
