"""The stage backends one process uses: all four model kinds (warp, tts, image, verify) by name
from the registry (stages/registry.py), created lazily and kept, each model stage loaded into its
arena region. A backend whose weights are missing refuses to load or, where the operator allows
it, falls back to the embedded one — said once, here, since backends are cached.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from stages.errors import StageInputError
from stages.registry import load_backend_class
from stages.types import Actor
from vortexd.regions import WARP_REGION, model_region_budgets
from vortexd.settings import Settings

log = structlog.get_logger("vortexd.backends")


class BackendUnavailable(RuntimeError):
    """A configured backend cannot load and no fallback is allowed."""


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
        from stages.image.flux import FluxOptions

        flux = load_backend_class("image", "flux")
        settings = self.settings
        weights_dir = _required_dir(settings, "flux_weights_dir", "a local FLUX.1-schnell folder in the "
                                    "diffusers layout (model_index.json, transformer/, vae/, …)")
        return flux(FluxOptions(weights_dir=weights_dir, device=settings.device,
                                            steps=settings.flux_steps, quantization=settings.flux_quantization),
                                memory=self.region("flux"))

    def _load_clip(self):
        judge = load_backend_class("verify", "clip")
        settings = self.settings
        weights_dir = _required_dir(settings, "clip_weights_dir",
                                    "the folder that holds one folder per CLIP model and bpe_simple_vocab_16e6.txt.gz")
        return judge.from_folder(weights_dir, tuple(settings.clip_models), device=settings.device,
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
