"""Helpers for tests and benchmarks: render frames without publishing, measure head motion on frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.types import MotionPlan, Speech
from vortexd import pipeline
from vortexd.recipe import Recipe, parse_recipe
from vortexd.settings import Settings

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
    actor = pipeline.make_actor(recipe, settings, backends)
    speech, _ = pipeline.make_speech(recipe, backends)
    plan = pipeline.make_plan(recipe, speech)
    slab = pipeline.allocate_slab(plan.n_frames)
    pipeline.warp_frames(backends, actor, plan, slab)
    return RenderedFrames(slab, speech, plan, recipe)


def head_motion_energy(landmarks: np.ndarray) -> float:
    """Mean squared frame-to-frame speed (px²/frame²) of the rigid-landmark centroid."""
    centroid = np.nanmean(landmarks[:, RIGID_LANDMARKS, :2], axis=1)
    speed = np.diff(centroid, axis=0)
    return float(np.nanmean(np.sum(speed**2, axis=1)))


def head_positions(landmarks: np.ndarray) -> np.ndarray:
    """(T, 2) rigid-landmark centroid per frame, in pixels."""
    return np.nanmean(landmarks[:, RIGID_LANDMARKS, :2], axis=1)
