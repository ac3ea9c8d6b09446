"""The stage bodies of one slot (prepare, warp, finish) and their parts, as plain functions: the
one slot runner (slot_runner.py) calls them for `vortexd render`, the daemon's warm-up, its stage
workers and the test helpers.

Each step takes what the previous produced and returns a frozen result; none holds state
except the backend caches in `Backends`, so steps of different slots can run on different stage
workers at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import importlib.metadata
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from stages.errors import StageInputError
from stages.fit import fit_speech
from stages.types import FRAME_SIZE_PX, Actor, DrivingSource, MotionPlan, Speech
from vortexd.backends import Backends
from vortexd.manifest import build_manifest
from vortexd.recipe import ExpressionSegment, Recipe
from vortexd.settings import Settings
from vortexd.slot_stream import StreamRecord, publish_stream
from vram import StageMemoryExceeded

if TYPE_CHECKING:  # the encoder (PyAV) loads only when a slot is published
    from stages.encode import PublishedSlot

log = structlog.get_logger("vortexd.pipeline")


Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): called as work advances (frames for warp, 0/1 for the rest)."""


def _no_progress(stage: str, done: int, total: int) -> None:
    """Progress sink that drops reports (the default)."""


def make_actor(recipe: Recipe, settings: Settings, backends: Backends | None = None) -> Actor:
    """The image stage: the recipe's image; for a prompt, a Flux portrait (image_backend = "flux")
    or a library pick; else the sample portrait."""
    from stages.image import load_actor

    flux = backends.flux if backends is not None and recipe.actor.image is None else None
    if flux is not None and recipe.actor.prompt is not None:
        # The motion seed also seeds the picture: one recipe, one deterministic slot.
        return flux.make_actor(recipe.actor.prompt, seed=recipe.motion.seed)

    return load_actor(image=recipe.actor.image, prompt=recipe.actor.prompt,
                      library_dir=settings.actor_library_dir)


def make_speech(recipe: Recipe, backends: Backends) -> tuple[Speech, list[str]]:
    """The TTS stage, fitted to the slot: (speech, warnings for the manifest)."""
    spec = recipe.speech
    if spec.audio is not None:
        from stages.tts import load_wav

        raw = load_wav(spec.audio)
    else:
        raw = backends.tts_for(spec.voice).synthesize(spec.text, voice=spec.voice, rate_wpm=spec.rate_wpm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = fit_speech(raw, recipe.output.duration_s)
    return fitted, [str(w.message) for w in caught]


def expression_segments(recipe: Recipe):
    """The recipe's expression as the planner's PresetSegment tuple."""
    from stages.motion import normalize_expression

    value = recipe.motion.expression
    if isinstance(value, list) and value and isinstance(value[0], ExpressionSegment):
        value = [{"preset": s.preset, "start_s": s.start_s} for s in value]
    return normalize_expression(value, recipe.output.duration_s)


def load_driving_motion(path: Path):
    """The motion of a driving video or template (stages.motion.driving, which keeps it by
    content: the check at submit reads it, the prepare stage finds it kept)."""
    from stages.motion.driving import load_driving

    return load_driving(path)


def make_plan(recipe: Recipe, speech: Speech, inputs: dict[str, Any] | None = None) -> MotionPlan:
    """The motion planner: per-frame curves for the whole slot (from the driving clip's motion
    too, when the recipe names one: the plan then carries the clip as `plan.driving`, hashed as
    `inputs` — the record made at submit — says, or hashed here without one)."""
    from stages.motion import plan_motion

    motion = recipe.motion
    driving = load_driving_motion(motion.driving) if motion.driving is not None else None
    plan = plan_motion(speech, expression_segments(recipe), seed=motion.seed, n_frames=recipe.output.n_frames,
                       fps=recipe.output.fps, driving=driving, driving_mode=motion.driving_mode)
    if motion.driving is None:
        return plan
    return dataclasses.replace(plan, driving=driving_source(recipe, inputs))


def driving_source(recipe: Recipe, inputs: dict[str, Any] | None = None) -> DrivingSource:
    """The recipe's driving clip as a typed DrivingSource: its file (the spool's copy, for a slot
    submitted to the daemon), the SHA-256 from `inputs` when submit recorded it (else hashed now),
    and the recipe's driving mode."""
    path = Path(recipe.motion.driving)
    sha256 = ((inputs or {}).get("motion.driving") or {}).get("sha256")
    if sha256 is None:
        with path.open("rb") as file:
            sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    return DrivingSource(path, sha256, recipe.motion.driving_mode)


def allocate_slab(n_frames: int, *, prefault: bool = True) -> np.ndarray:
    """A video slab for the one-shot renderer (the daemon leases them from its long-lived arena).

    Carved from a host arena (huge pages) rather than np.empty: committing ~850 MB of fresh pages
    in the kernel takes about a second of CPU here, while faulting them in one by one during the
    warp costs more. `prefault=False` leaves that to the caller (vortexd.slab_prefault commits
    them beside the prepare stage).
    """
    from vram import Arena, ArenaPlan, VramError, format_bytes, slab_region_bytes

    region_bytes = slab_region_bytes(1, n_frames, FRAME_SIZE_PX, FRAME_SIZE_PX)
    try:
        arena = Arena.create(ArenaPlan.from_budgets({"video_slabs": region_bytes}), "cpu", prefault=prefault)
    except (VramError, MemoryError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno != errno.ENOMEM:
            raise
        raise StageInputError("output.duration_s", f"{n_frames} frames need {format_bytes(region_bytes)} of "
                              f"memory for the video, more than this process can get ({exc})",
                              frames=n_frames, bytes=region_bytes) from None
    return arena.view("video_slabs", (n_frames, FRAME_SIZE_PX, FRAME_SIZE_PX, 3), np.uint8, "slab")


def prepare_warp(backends: Backends, actor: Actor, plan: MotionPlan | None = None) -> None:
    """The warp stage's one-off work for `actor` (the mesh rig; F and M for LivePortrait), cached,
    and, given its `plan`, for the plan's motion (LivePortrait: M over a driving clip's face crops,
    fitted to the slot; the warp refuses a driven plan without it).

    Run it in the prepare stage, beside speech, so that the warp of a slot, the critical path,
    starts rendering at once instead of paying this first.
    """
    prepared = backends.prepared_warp(actor)
    if plan is not None:
        prepared.prepare_motion(plan)


def warp_frames(backends: Backends, actor: Actor, plan: MotionPlan, slab: np.ndarray,
                progress: Progress = _no_progress, should_stop: Callable[[], bool] = lambda: False,
                on_chunk: Callable[[int, int], None] = lambda start, stop: None,
                before_chunk: Callable[[int, int], None] = lambda start, stop: None) -> None:
    """The warp stage: render every frame of `plan` into `slab`, chunk by chunk; `on_chunk(start,
    stop)` is told of each chunk as it lands (the slot's stream encodes it then), and
    `before_chunk(start, stop)` before it is rendered (a one-shot render waits there for the
    chunk's pages of its slab).

    Prepared actors stay cached in the warp's region; when a chunk finds the region full, the
    other actors are let go and the chunk is rendered once more before the slot is failed.
    """
    prepared = backends.prepared_warp(actor)
    chunk = backends.settings.warp_chunk_frames
    for start in range(0, plan.n_frames, chunk):
        if should_stop():
            raise InterruptedError("warp cancelled")
        frames = slice(start, min(start + chunk, plan.n_frames))
        before_chunk(frames.start, frames.stop)
        try:
            prepared.render(plan, frames, slab)
        except StageMemoryExceeded as exc:
            evicted = backends.evict_prepared(keep=actor)
            if not evicted:
                raise
            log.warning("warp_region_full", action=f"forgot {evicted} prepared actor(s), rendering again",
                        region=exc.region, used_bytes=exc.used_bytes, budget_bytes=exc.budget_bytes)
            prepared.render(plan, frames, slab)
        on_chunk(frames.start, frames.stop)
        progress("warp", frames.stop, plan.n_frames)


def verify_frames(backends: Backends, slab: np.ndarray, speech: Speech, fps: int, actor: Actor,
                  actor_prompt: str | None = None, objective=None):
    """The verify stage: objective checks on the frames and the speech (`objective`, when they
    were made beside the warp), then the CLIP scores when a CLIP backend is configured (a CLIP
    failure fails the verdict like any other check)."""
    from stages.verify import verify_slot

    verdict = objective if objective is not None else verify_slot(slab, speech, fps)
    judge = backends.clip
    if judge is None:
        return verdict
    from stages.verify.clip.judge import clip_problems

    settings = backends.settings
    scores = judge.score(slab, actor.image, actor_prompt)
    problems = verdict.problems + tuple(clip_problems(scores, settings.clip_min_identity,
                                                      settings.clip_min_caption))
    return dataclasses.replace(verdict, clip=scores.as_dict(), problems=problems, passed=not problems)


def versions() -> dict[str, str]:
    """Versions of the libraries whose output ends up in a slot (for the manifest)."""
    found = {}
    for package in ("vortex", "mediapipe", "espeakng-loader", "av", "numpy", "opencv-contrib-python"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "absent"
    return found


class StageClock:
    """Wall-clock seconds per stage, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Add the elapsed time of the `with` block to `stage`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class Rendered:
    """A slot after its warp: what the finish stage verifies, encodes and publishes."""

    recipe: Recipe
    actor: Actor
    speech: Speech
    plan: MotionPlan
    frames: np.ndarray
    clock: StageClock
    warnings: list[str]
    inputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The recipe's input files as snapshotted at submit: field → {path, sha256, bytes}."""
    stream: StreamRecord | None = None
    """The slot's stream, encoded while it warped (what finish publishes as hls/ and video.mp4)."""
    objective_verdict: Any = None
    """The objective checks, made on the frames as they were warped (None: made in finish)."""


def finish(out_root: Path, slot: Rendered, backends: Backends, verify: bool, progress: Progress = _no_progress,
           should_stop: Callable[[], bool] = lambda: False,
           gate: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> PublishedSlot:
    """The finish stage: verify (when enabled), then publish the stream encoded during the warp
    (hls/ and video.mp4 remuxed from it) with the manifest, atomically; returns the folder and
    its manifest. `should_stop()` true after verifying: nothing is published; the
    final rename happens inside `gate()`, which refuses it for a slot withdrawn meanwhile."""
    verdict = None
    if verify:
        with slot.clock.time("verify"):
            verdict = verify_frames(backends, slot.frames, slot.speech, slot.plan.fps, slot.actor,
                                    slot.recipe.actor.prompt, slot.objective_verdict)
        progress("verify", 1, 1)
    if should_stop():
        raise InterruptedError("finish cancelled")
    return _encode_and_publish(out_root, slot, backends, verdict, progress, gate)


def _encode_and_publish(out_root: Path, slot: Rendered, backends: Backends, verdict,
                        progress: Progress, gate: Callable[[], contextlib.AbstractContextManager]) -> PublishedSlot:
    from stages.encode import publish_slot

    if slot.stream is None:
        raise RuntimeError(f"slot {slot.recipe.slot_id!r} has no stream: its warp did not encode it")

    def write(folder: Path) -> dict[str, Any]:
        with slot.clock.time("remux"):
            publish_stream(slot.stream, folder)
        progress("encode", 1, 1)
        manifest = build_manifest(slot.recipe, backends, slot.speech, slot.plan, verdict, slot.clock, slot.warnings,
                                  slot.actor.source, versions(), inputs=slot.inputs or None)
        return {**manifest, **slot.stream.manifest_fields()}

    out_root.mkdir(parents=True, exist_ok=True)
    return publish_slot(out_root, slot.recipe.slot_id, write, gate)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A slot after its prepare stage: the actor (warp prepared for it), the speech, the plan."""

    actor: Actor
    speech: Speech
    plan: MotionPlan
    warnings: list[str]


def prepare(recipe: Recipe, settings: Settings, backends: Backends, clock: StageClock,
            progress: Progress = _no_progress, should_stop: Callable[[], bool] = lambda: False,
            inputs: dict[str, Any] | None = None) -> Prepared:
    """The prepare stage: image (and the warp's one-off preparation for it) beside speech, then
    the motion plan and the warp's preparation for it (a driving clip read by LivePortrait).
    `should_stop()` true once both are done: no plan is made. `inputs`: the record submit made
    (field → {path, sha256, bytes}), so the driving clip is not hashed again."""
    def speak() -> tuple[Speech, list[str]]:
        with clock.time("tts"):
            return make_speech(recipe, backends)

    # Speech does not depend on the picture: it runs in a second thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-tts") as pool:
        speech_job = pool.submit(speak)
        with clock.time("image"):
            actor = make_actor(recipe, settings, backends)
        progress("image", 1, 1)
        # Here, not in the warp stage: in the daemon this overlaps the previous slot's warp.
        with clock.time("warp_prepare"):
            prepare_warp(backends, actor)
        speech, warnings_seen = speech_job.result()
    progress("tts", 1, 1)
    if should_stop():
        raise InterruptedError("prepare cancelled")
    with clock.time("motion"):
        plan = make_plan(recipe, speech, inputs)
    progress("motion", 1, 1)
    # The plan's share of the warp's one-off work (timed with the actor's): never in the warp stage.
    with clock.time("warp_prepare"):
        prepare_warp(backends, actor, plan)
    return Prepared(actor, speech, plan, warnings_seen)
