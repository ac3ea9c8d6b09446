"""Helpers for tests and benchmarks: render frames without publishing, measure head motion on frames."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.types import MotionPlan, Speech
from vortexd import pipeline
from vortexd.recipe import Recipe, parse_recipe
from vortexd.settings import Settings
from vortexd.slot import HeldSlab, Slot
from vortexd.slot_runner import SlotRunner

# Landmarks that move with the skull but not with the mouth or eyes: forehead, nose bridge,
# outer eye corners, cheek edges. Their centroid is the "head position" the judge tracks.
RIGID_LANDMARKS = (10, 6, 33, 263, 234, 454)


@dataclass(frozen=True)
class RenderedFrames:
    """Frames of a slot rendered in memory, with the speech and plan that drove them."""

    frames: np.ndarray
    speech: Speech
    plan: MotionPlan
    recipe: Recipe


def render_frames(recipe_data: dict[str, Any], base_dir: Path, settings: Settings | None = None,
                  backends: pipeline.Backends | None = None) -> RenderedFrames:
    """Run image → tts → motion → warp for a recipe mapping; no verify, encode or publish."""
    settings = settings or Settings(output_dir=base_dir)
    backends = backends or pipeline.Backends(settings)
    recipe = parse_recipe(recipe_data, base_dir)
    slot = Slot(recipe.slot_id, 0, recipe, lease=HeldSlab(pipeline.allocate_slab(recipe.output.n_frames)))
    runner = SlotRunner(settings, backends, base_dir)
    slot.prepared = runner.prepare(slot)
    frames = runner.warp(slot)
    return RenderedFrames(frames, slot.prepared.speech, slot.prepared.plan, recipe)


def liveportrait_settings(folder: Path, weights: str) -> dict[str, Any]:
    """Settings for a LivePortrait warp: `weights` "tiny" or "full" writes random weights in the
    official layout into `folder` (the test networks, or the release's sizes: the path's mechanics
    and speed, not its looks); anything else is the folder of the official release."""
    import dataclasses

    from stages.warp.liveportrait.random_weights import TINY, write_random_checkpoints

    if weights not in ("tiny", "full"):
        return {"warp_backend": "liveportrait", "liveportrait_weights_dir": Path(weights)}
    folder = folder / "liveportrait"
    if weights == "tiny":
        write_random_checkpoints(folder, TINY, seed=0)
        return {"warp_backend": "liveportrait", "liveportrait_weights_dir": folder,
                "liveportrait_model_params": dataclasses.asdict(TINY), "arena_budgets_mib": {"liveportrait": 256}}
    write_random_checkpoints(folder, seed=0)
    return {"warp_backend": "liveportrait", "liveportrait_weights_dir": folder,
            "liveportrait_compile_cache_dir": folder.parent / "inductor"}


def head_motion_energy(landmarks: np.ndarray) -> float:
    """Mean squared frame-to-frame speed (px²/frame²) of the rigid-landmark centroid."""
    centroid = np.nanmean(landmarks[:, RIGID_LANDMARKS, :2], axis=1)
    speed = np.diff(centroid, axis=0)
    return float(np.nanmean(np.sum(speed**2, axis=1)))


def head_positions(landmarks: np.ndarray) -> np.ndarray:
    """(T, 2) rigid-landmark centroid per frame, in pixels."""
    return np.nanmean(landmarks[:, RIGID_LANDMARKS, :2], axis=1)


def judge_driven_slot(video: Path, text: str, seconds: float, mode: str, out: Path,
                      backends: pipeline.Backends, face: Path | None = None) -> dict[str, Any]:
    """Render and publish a slot driven by `video` saying `text` (the actor: portrait `face`, or the
    sample), decode the MP4 and judge it against the video (motion transfer) and the speech (lip
    sync); the figures as a dict. A slot in which the tracker loses the face (LivePortrait on random
    weights renders none) is not judged: its "report" is None, and "face_frames" says in how many
    frames the face was found."""
    from stages.encode.decode import decode_mp4
    from stages.image.face import track_landmarks
    from stages.motion.driving import fit_to_slot, track_video
    from stages.verify.lipsync import measure_av_offset
    from stages.verify.motion_transfer import measure_transfer

    actor = face.stem if face is not None else "sample"
    fields = {"slot_id": f"driven-{video.stem}-{actor}", "speech": {"text": text},
              "motion": {"driving": video.name, "driving_mode": mode, "seed": 1}, "output": {"duration_s": seconds}}
    base = video.parent
    if face is not None:
        # A recipe reads files from its own folder only: the portrait and the clip go there together.
        base = out / f"inputs-{video.stem}-{face.stem}"
        base.mkdir(parents=True, exist_ok=True)
        for source in (video, face):
            shutil.copyfile(source, base / source.name)
        fields["actor"] = {"image": face.name}
    recipe = parse_recipe(fields, base)
    started = time.perf_counter()
    slot = Slot(recipe.slot_id, 0, recipe, lease=HeldSlab(pipeline.allocate_slab(recipe.output.n_frames)))
    published = SlotRunner(backends.settings.model_copy(update={"verify": True}), backends, out).render(slot)
    prepared = slot.prepared
    render_s = time.perf_counter() - started
    decoded = decode_mp4(published.path / "video.mp4")
    tracked = track_video(video)
    motion = pipeline.load_driving_motion(video)
    fitted = fit_to_slot(motion, prepared.plan.n_frames, prepared.plan.fps)
    landmarks = track_landmarks(decoded.frames).astype(float)
    face_frames = int(np.isfinite(landmarks[:, 0, 0]).sum())
    row = {"video": video.name, "render_s": render_s, "face_frames": (face_frames, len(landmarks)),
           "report": None, "lag_frames": None, "lag_corr": None}
    if face_frames < len(landmarks):
        return row
    row["report"] = measure_transfer(tracked.landmarks, tracked.fps, motion.reference_frame, landmarks,
                                     prepared.plan.fps, fitted.positions, fitted.joins)
    lipsync = measure_av_offset(decoded.frames, prepared.speech.audio, prepared.speech.phonemes,
                                fps=prepared.plan.fps, sample_rate_hz=prepared.speech.sample_rate_hz)
    return {**row, "lag_frames": lipsync.lag_frames, "lag_corr": lipsync.correlation}
