"""`vortexd render`: one slot, start to finish, in this process (no daemon)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vortexd import pipeline
from vortexd.pipeline import Backends, Progress, StageClock
from vortexd.recipe import Recipe, RecipeError
from vortexd.settings import Settings


@dataclass(frozen=True)
class RenderResult:
    """Where the slot was published and what its manifest says."""

    slot_dir: Path
    manifest: dict[str, Any]


def _plain(value: Any) -> Any:
    """JSON-ready copy of `value` (dataclasses, numpy scalars/arrays, paths)."""
    def default(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return dataclasses.asdict(obj)
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")

    return json.loads(json.dumps(value, default=default))


def input_hashes(recipe: Recipe) -> dict[str, str]:
    """sha256 of each input file the recipe names, by field (the daemon's are its spool copies,
    named by that same hash: the bytes accepted at submit)."""
    files = {"actor.image": recipe.actor.image, "speech.audio": recipe.speech.audio}
    return {field: hashlib.sha256(Path(path).read_bytes()).hexdigest()
            for field, path in files.items() if path is not None}


def build_manifest(recipe: Recipe, backends: Backends, speech, plan, verdict, clock: StageClock,
                   warnings_seen: list[str], actor_source: str) -> dict[str, Any]:
    """The manifest.json content of a slot (file hashes are added by publish_slot)."""
    verdict_fields = dataclasses.asdict(verdict) if verdict is not None else None
    return _plain({
        "slot_id": recipe.slot_id,
        "recipe_sha256": recipe.content_hash(),
        "recipe": recipe.model_dump(mode="json"),
        "seed": recipe.motion.seed,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "video": {"fps": plan.fps, "frames": plan.n_frames, "duration_s": plan.n_frames / plan.fps,
                  "width": 512, "height": 512, "codec": "h264", "audio_codec": "aac",
                  "audio_sample_rate_hz": speech.sample_rate_hz},
        "backends": {"image": "flux" if actor_source.startswith("flux:") else "library",
                     "tts": speech.backend, "voice": speech.voice, "warp": backends.warp.name,
                     "verify": "objective+clip" if verdict_fields and verdict_fields.get("clip") else "objective",
                     "motion_source": plan.meta.get("source")},
        "actor_source": actor_source,
        "inputs": input_hashes(recipe),
        "versions": pipeline.versions(),
        "models": {"tts": backends.kokoro.model_info()} if speech.backend == "kokoro" else {},
        "stage_seconds": {k: round(v, 4) for k, v in clock.seconds.items()},
        "verdict": verdict_fields,
        "warnings": warnings_seen,
    })


def render_slot(recipe: Recipe, settings: Settings, out_root: Path, progress: Progress | None = None,
                backends: Backends | None = None) -> RenderResult:
    """Render `recipe` and publish `<out_root>/<slot_id>/{video.mp4, manifest.json}` atomically.

    Fails before any work if the slot is already published or a configured backend cannot load;
    on any error nothing is left in `out_root`.
    """
    progress = progress or pipeline._no_progress
    if (out_root / recipe.slot_id).exists():
        raise RecipeError("slot_id", f"slot {recipe.slot_id!r} is already published in {out_root}")
    if backends is None:
        owned = Backends(settings)
        try:
            return render_slot(recipe, settings, out_root, progress, owned)
        finally:
            owned.close()
    # Load the configured model backends now: missing weights fail before any work.
    backends.flux
    if settings.verify:
        backends.clip
    # The video's memory first, too: a slot this process cannot hold fails before any work.
    slab = pipeline.allocate_slab(recipe.output.n_frames)
    clock = StageClock()

    def speak():
        with clock.time("tts"):
            return pipeline.make_speech(recipe, backends)

    # Speech does not depend on the picture: it runs in a second thread while the image is
    # loaded and the warp prepared for it, as the daemon's prepare stage does.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="render-tts") as pool:
        speech_job = pool.submit(speak)
        with clock.time("image"):
            actor = pipeline.make_actor(recipe, settings, backends)
        progress("image", 1, 1)
        with clock.time("warp_prepare"):
            pipeline.prepare_warp(backends, actor)
        speech, warnings_seen = speech_job.result()
    progress("tts", 1, 1)
    with clock.time("motion"):
        plan = pipeline.make_plan(recipe, speech)
    progress("motion", 1, 1)
    slab = slab[: plan.n_frames]
    with clock.time("warp"):
        pipeline.warp_frames(backends, actor, plan, slab, progress)
    verdict = None
    if settings.verify:
        with clock.time("verify"):
            verdict = pipeline.verify_frames(backends, slab, speech, plan.fps, actor, recipe.actor.prompt)
        progress("verify", 1, 1)

    out_root.mkdir(parents=True, exist_ok=True)
    slot_dir = publish_video(out_root, recipe, backends, speech, plan, slab, verdict, clock, warnings_seen,
                             actor.source, progress)
    manifest = json.loads((slot_dir / "manifest.json").read_text())
    return RenderResult(slot_dir=slot_dir, manifest=manifest)


def publish_video(out_root: Path, recipe: Recipe, backends: Backends, speech, plan, slab: np.ndarray, verdict,
                  clock: StageClock, warnings_seen: list[str], actor_source: str,
                  progress: Progress = pipeline._no_progress) -> Path:
    """Encode `slab` with the speech and publish it with its manifest, atomically; returns the folder."""
    from stages.encode import encode_mp4, publish_slot

    def write(folder: Path) -> dict[str, Any]:
        with clock.time("encode"):
            encode_mp4(slab[: plan.n_frames], speech.audio, folder / "video.mp4", fps=plan.fps,
                       sample_rate_hz=speech.sample_rate_hz)
        progress("encode", 1, 1)
        return build_manifest(recipe, backends, speech, plan, verdict, clock, warnings_seen, actor_source)

    return publish_slot(out_root, recipe.slot_id, write)
