"""The steps of one slot, as plain functions shared by `vortexd render` and the daemon's actors.

Each step takes what the previous produced and returns a frozen result; none holds state
except the backend caches in `Backends`, so the daemon can run steps of different slots on
different actors at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import importlib.metadata
import threading
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
from stages.registry import load_backend_class
from stages.types import FRAME_SIZE_PX, Actor, MotionPlan, Speech
from vortexd.manifest import build_manifest
from vortexd.recipe import ExpressionSegment, Recipe
from vortexd.regions import WARP_REGION, model_region_budgets
from vortexd.settings import Settings
from vram import StageMemoryExceeded

if TYPE_CHECKING:  # the encoder (PyAV) loads only when a slot is published
    from stages.encode import PublishedSlot

log = structlog.get_logger("vortexd.pipeline")


class BackendUnavailable(RuntimeError):
    """A configured backend cannot load and no fallback is allowed."""


Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): called as work advances (frames for warp, 0/1 for the rest)."""


def _no_progress(stage: str, done: int, total: int) -> None:
    """Progress sink that drops reports (the default)."""


class Backends:
    """The stage backends one process uses, created lazily and kept (models load once)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.arena = None
        """The daemon's arena (vram.Arena) once allocated: model stages then load into its regions."""
        self._prepared: dict[str, object] = {}
        self._prepared_lock = threading.Lock()

    def region(self, name: str):
        """The stage pool of arena region `name` (vram.StagePool), or None without an arena or
        such a region (a one-shot render, a stage the plan has no region for)."""
        if self.arena is None or name not in self.arena.plan.names:
            return None
        return self.arena.stage_pool(name, high_priority=name == WARP_REGION)

    @functools.cached_property
    def espeak(self):
        """The espeak-ng TTS backend."""
        return load_backend_class("tts", "espeak")()

    @functools.cached_property
    def kokoro(self):
        """The Kokoro-82M TTS backend (worker processes start on first use or warm-up)."""
        settings = self.settings
        return load_backend_class("tts", "kokoro")(model_dir=settings.kokoro_model_dir,
                                                    cache_dir=settings.kokoro_cache_dir,
                                                    workers=settings.kokoro_workers)

    def tts_for(self, voice: str):
        """The TTS backend that speaks `voice`: "kokoro:<name>" is Kokoro, anything else espeak."""
        return self.kokoro if voice.lower().startswith("kokoro:") else self.espeak

    def voices(self) -> dict[str, list[str]]:
        """Every voice a recipe may name, by backend."""
        return {"espeak": self.espeak.voices(), "kokoro": self.kokoro.voices()}

    def close(self) -> None:
        """Stop backend worker processes (Kokoro) and free loaded models, if any were started."""
        if "kokoro" in self.__dict__:
            self.kokoro.close()
        if self.__dict__.get("flux") is not None:
            self.flux.close()

    @functools.cached_property
    def warp(self):
        """The configured warp backend, or the mesh warp if it cannot load and fallback is allowed."""
        settings = self.settings
        mesh = load_backend_class("warp", "mesh")
        if settings.warp_backend == "mesh":
            return mesh()
        return self._load_or_fall_back("warp", settings.warp_backend, self._load_real_warp,
                                       settings.warp_fallback == "mesh", "mesh", mesh)

    @functools.cached_property
    def flux(self):
        """The Flux image backend when `image_backend = "flux"`, else None (the actor library).

        Weights that cannot load either refuse (the default) or, with image_fallback =
        "library", are reported once and prompts are served from the actor library.
        """
        settings = self.settings
        if settings.image_backend == "library":
            return None
        return self._load_or_fall_back("image", "flux", self._load_flux, settings.image_fallback == "library",
                                       "library", lambda: None)

    @functools.cached_property
    def clip(self):
        """The CLIP judge when `verify_backend = "clip"`, else None (objective checks only).

        Weights that cannot load either refuse (the default) or, with verify_fallback =
        "objective", are reported once and the slot is verified by the objective checks alone.
        """
        settings = self.settings
        if settings.verify_backend == "objective":
            return None
        return self._load_or_fall_back("verify", "clip", self._load_clip, settings.verify_fallback == "objective",
                                       "objective", lambda: None)

    @staticmethod
    def _load_or_fall_back(stage: str, wanted: str, load: Callable[[], object], may_fall_back: bool,
                           fallback_name: str, fallback: Callable[[], object]):
        """`load()`, or on missing weights/packages: refuse with BackendUnavailable, or (if the
        operator allows it) say so once and use `fallback()`."""
        try:
            return load()
        except (StageInputError, ImportError, OSError) as exc:
            if not may_fall_back:
                raise BackendUnavailable(f"{stage} backend {wanted!r} cannot load: {exc}") from exc
            # Said once, here: backends are cached, so this never repeats per slot.
            log.warning(f"{stage}_backend_fallback", wanted=wanted, using=fallback_name, reason=str(exc))
            return fallback()

    def _load_real_warp(self):
        settings = self.settings
        backend = load_backend_class("warp", settings.warp_backend)
        if settings.warp_backend == "liveportrait":
            from stages.warp.liveportrait.config import config_from_model_params

            weights_dir = _required_dir(settings, "liveportrait_weights_dir",
                                        "the folder that holds pretrained_weights/liveportrait/")
            chunk = settings.liveportrait_chunk_frames
            budget_bytes = model_region_budgets(settings)[0][WARP_REGION]
            extra = ({"config": config_from_model_params(settings.liveportrait_model_params)}
                     if settings.liveportrait_model_params else {})
            return backend(weights_dir, device=settings.device, chunk_frames=None if chunk == "auto" else chunk,
                           compile=settings.liveportrait_compile, budget_bytes=budget_bytes,
                           compile_cache_dir=settings.liveportrait_compile_cache_dir, memory=self.region(WARP_REGION),
                           **extra)
        return backend()

    def _load_flux(self):
        from stages.image.flux import FluxImageBackend, FluxOptions

        settings = self.settings
        weights_dir = _required_dir(settings, "flux_weights_dir", "a local FLUX.1-schnell folder in the "
                                    "diffusers layout (model_index.json, transformer/, vae/, …)")
        return FluxImageBackend(FluxOptions(weights_dir=weights_dir, device=settings.device,
                                            steps=settings.flux_steps, quantization=settings.flux_quantization),
                                memory=self.region("flux"))

    def _load_clip(self):
        from stages.verify.clip.judge import ClipJudge

        settings = self.settings
        weights_dir = _required_dir(settings, "clip_weights_dir",
                                    "the folder that holds one folder per CLIP model and bpe_simple_vocab_16e6.txt.gz")
        return ClipJudge.from_folder(weights_dir, tuple(settings.clip_models), device=settings.device,
                                     memory=self.region("clip"))

    def prepared_warp(self, actor: Actor):
        """The warp backend prepared for `actor`, cached by the actor's content hash.

        Safe from several threads. Preparation runs outside the lock, so a warp that finds its
        actor cached never waits behind another actor being prepared; two threads preparing the
        same new actor at once both do the work and one result is kept.
        """
        key = actor.source_sha256
        with self._prepared_lock:
            prepared = self._prepared.get(key)
        if prepared is not None:
            return prepared
        prepared = self.warp.prepare(actor)
        with self._prepared_lock:
            # Keep a handful: the daemon alternates between few actors; each entry is small.
            if key not in self._prepared and len(self._prepared) >= 8:
                self._prepared.pop(next(iter(self._prepared)))
            return self._prepared.setdefault(key, prepared)

    def evict_prepared(self, keep: Actor) -> int:
        """Forget every prepared actor but `keep`'s (their memory goes back to the warp's region
        once no render holds them); returns how many were forgotten."""
        with self._prepared_lock:
            others = [key for key in self._prepared if key != keep.source_sha256]
            for key in others:
                del self._prepared[key]
        return len(others)


def _required_dir(settings: Settings, field: str, what: str) -> Path:
    """The folder setting `field`, or StageInputError saying it is unset and what it must name."""
    value = getattr(settings, field)
    if value is None:
        raise StageInputError(field, f"is not set; it must name {what}")
    return value


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


@functools.lru_cache(maxsize=8)
def _driving_motion(path: Path, size_bytes: int, mtime_ns: int):
    from stages.motion.driving import load_driving

    return load_driving(path)


def load_driving_motion(path: Path):
    """The motion of a driving video or template (stages.motion.driving), cached by file identity:
    the daemon reads it at submit to check it, and its prepare stage reuses the result."""
    stat = Path(path).stat()
    return _driving_motion(Path(path), stat.st_size, stat.st_mtime_ns)


def make_plan(recipe: Recipe, speech: Speech) -> MotionPlan:
    """The motion planner: per-frame curves for the whole slot (from the driving clip's motion
    too, when the recipe names one)."""
    from stages.motion import plan_motion

    motion = recipe.motion
    driving = load_driving_motion(motion.driving) if motion.driving is not None else None
    return plan_motion(speech, expression_segments(recipe), seed=motion.seed, n_frames=recipe.output.n_frames,
                       fps=recipe.output.fps, driving=driving, driving_mode=motion.driving_mode)


def allocate_slab(n_frames: int) -> np.ndarray:
    """A video slab for the one-shot renderer (the daemon leases them from its long-lived arena).

    Carved from a prefaulted host arena rather than np.empty: committing ~850 MB of fresh pages in
    the kernel up front takes a fraction of a second, while faulting them in one by one during the
    warp costs seconds on this class of machine.
    """
    from vram import Arena, ArenaPlan, VramError, format_bytes, slab_region_bytes

    region_bytes = slab_region_bytes(1, n_frames, FRAME_SIZE_PX, FRAME_SIZE_PX)
    try:
        arena = Arena.create(ArenaPlan.from_budgets({"video_slabs": region_bytes}), "cpu", prefault=True)
    except (VramError, MemoryError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno != errno.ENOMEM:
            raise
        raise StageInputError("output.duration_s", f"{n_frames} frames need {format_bytes(region_bytes)} of "
                              f"memory for the video, more than this process can get ({exc})",
                              frames=n_frames, bytes=region_bytes) from None
    return arena.view("video_slabs", (n_frames, FRAME_SIZE_PX, FRAME_SIZE_PX, 3), np.uint8, "slab")


def prepare_warp(backends: Backends, actor: Actor) -> None:
    """The warp stage's one-off work for `actor` (the mesh rig; F and M for LivePortrait), cached.

    Run it in the prepare stage, beside speech, so that the warp of a slot, the critical path,
    starts rendering at once instead of paying this first.
    """
    backends.prepared_warp(actor)


def warp_frames(backends: Backends, actor: Actor, plan: MotionPlan, slab: np.ndarray,
                progress: Progress = _no_progress, should_stop: Callable[[], bool] = lambda: False) -> None:
    """The warp stage: render every frame of `plan` into `slab`, chunk by chunk.

    Prepared actors stay cached in the warp's region; when a chunk finds the region full, the
    other actors are let go and the chunk is rendered once more before the slot is failed.
    """
    prepared = backends.prepared_warp(actor)
    chunk = backends.settings.warp_chunk_frames
    for start in range(0, plan.n_frames, chunk):
        if should_stop():
            raise InterruptedError("warp cancelled")
        frames = slice(start, min(start + chunk, plan.n_frames))
        try:
            prepared.render(plan, frames, slab)
        except StageMemoryExceeded as exc:
            evicted = backends.evict_prepared(keep=actor)
            if not evicted:
                raise
            log.warning("warp_region_full", action=f"forgot {evicted} prepared actor(s), rendering again",
                        region=exc.region, used_bytes=exc.used_bytes, budget_bytes=exc.budget_bytes)
            prepared.render(plan, frames, slab)
        progress("warp", frames.stop, plan.n_frames)


def verify_frames(backends: Backends, slab: np.ndarray, speech: Speech, fps: int, actor: Actor,
                  actor_prompt: str | None = None):
    """The verify stage: objective checks on the frames and the speech, then the CLIP scores
    when a CLIP backend is configured (a CLIP failure fails the verdict like any other check)."""
    from stages.verify import verify_slot

    verdict = verify_slot(slab, speech, fps)
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


def finish(out_root: Path, slot: Rendered, backends: Backends, verify: bool, progress: Progress = _no_progress,
           should_stop: Callable[[], bool] = lambda: False,
           gate: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> PublishedSlot:
    """The finish stage: verify (when enabled), encode and publish atomically; returns the
    folder and its manifest. `should_stop()` true after verifying: nothing is published; the
    final rename happens inside `gate()`, which refuses it for a slot withdrawn meanwhile."""
    verdict = None
    if verify:
        with slot.clock.time("verify"):
            verdict = verify_frames(backends, slot.frames, slot.speech, slot.plan.fps, slot.actor,
                                    slot.recipe.actor.prompt)
        progress("verify", 1, 1)
    if should_stop():
        raise InterruptedError("finish cancelled")
    return _encode_and_publish(out_root, slot, backends, verdict, progress, gate)


def _encode_and_publish(out_root: Path, slot: Rendered, backends: Backends, verdict,
                        progress: Progress, gate: Callable[[], contextlib.AbstractContextManager]) -> PublishedSlot:
    from stages.encode import encode_mp4, publish_slot

    def write(folder: Path) -> dict[str, Any]:
        with slot.clock.time("encode"):
            encode_mp4(slot.frames, slot.speech.audio, folder / "video.mp4", fps=slot.plan.fps,
                       sample_rate_hz=slot.speech.sample_rate_hz)
        progress("encode", 1, 1)
        return build_manifest(slot.recipe, backends, slot.speech, slot.plan, verdict, slot.clock, slot.warnings,
                              slot.actor.source, versions(), inputs=slot.inputs or None)

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
            progress: Progress = _no_progress, should_stop: Callable[[], bool] = lambda: False) -> Prepared:
    """The prepare stage: image (and the warp's one-off preparation for it) beside speech, then
    the motion plan. `should_stop()` true once both are done: no plan is made."""
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
        plan = make_plan(recipe, speech)
    progress("motion", 1, 1)
    return Prepared(actor, speech, plan, warnings_seen)
