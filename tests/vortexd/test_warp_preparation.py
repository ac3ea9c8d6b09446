"""The warp's per-actor and per-plan preparation runs once, in the prepare stage (a driving clip
read by LivePortrait among it), and the warp stage only renders."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

from stages.types import DrivingSource
from tests.support.short_clip import SHARED_DRIVING, first_frames_clip
from tests.support.slots import liveportrait_settings
from vortexd import pipeline
from vortexd.backends import Backends
from vortexd.recipe import parse_recipe
from vortexd.settings import Settings


@pytest.fixture(scope="module")
def sample():
    """The built-in sample actor, its plan for a 2 s slot, and fresh embedded backends."""
    recipe = parse_recipe({"slot_id": "prep", "speech": {"text": "Hello there."},
                           "output": {"duration_s": 2.0}}, Path.cwd())
    settings = Settings(output_dir=Path("/nonexistent"))
    backends = pipeline.Backends(settings)
    actor = pipeline.make_actor(recipe, settings)
    speech, _ = pipeline.make_speech(recipe, backends)
    yield backends, actor, pipeline.make_plan(recipe, speech)
    backends.close()


def _count_prepares(backends: pipeline.Backends, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls into the real backend's prepare (each still does the real work)."""
    calls: list[int] = []
    real_prepare = backends.warp.prepare

    def counting_prepare(actor):
        calls.append(1)
        return real_prepare(actor)

    monkeypatch.setattr(backends.warp, "prepare", counting_prepare)
    return calls


def test_warp_after_prepare_stage_does_not_prepare_again(sample, monkeypatch) -> None:
    """prepare_warp in the prepare stage does the one-off work; warp_frames then only renders."""
    backends, actor, plan = sample
    backends._prepared.clear()
    calls = _count_prepares(backends, monkeypatch)
    pipeline.prepare_warp(backends, actor)
    assert len(calls) == 1
    slab = np.zeros((plan.n_frames, 512, 512, 3), np.uint8)
    pipeline.warp_frames(backends, actor, plan, slab)
    assert len(calls) == 1 and slab.any()


def test_concurrent_callers_share_one_preparation(sample) -> None:
    """Two threads asking for the same new actor at once get the very same prepared object."""
    backends, actor, _ = sample
    backends._prepared.clear()
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(backends.prepared_warp(actor))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 2 and got[0] is got[1] is backends.prepared_warp(actor)


needs_clips = pytest.mark.skipif(not (SHARED_DRIVING / "d12.mp4").exists(), reason="needs ../shared/driving")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-frame cut of a real talking-head clip (seconds of tracking, two M batches)."""
    return first_frames_clip(SHARED_DRIVING / "d12.mp4", tmp_path_factory.mktemp("clip") / "cut.mp4", 20)


def _driven_recipe(clip: Path, mode: str = "pose"):
    return parse_recipe({"slot_id": "driven", "speech": {"text": "Hello."}, "output": {"duration_s": 0.5},
                         "motion": {"driving": str(clip), "driving_mode": mode}}, clip.parent)


@needs_clips
def test_a_driven_plan_carries_its_clip_typed_with_the_hash_submit_recorded(sample, clip) -> None:
    """make_plan types the recipe's clip (path, sha256, mode) on the plan: the hash submit recorded
    when given (not read again), else the file's own; the manifest's record stays in meta."""
    backends = sample[0]
    recipe = _driven_recipe(clip, "full")
    speech, _ = pipeline.make_speech(recipe, backends)
    recorded = {"motion.driving": {"path": "cut.mp4", "sha256": "5" * 64, "bytes": clip.stat().st_size}}
    plan = pipeline.make_plan(recipe, speech, recorded)
    assert plan.driving == DrivingSource(clip, "5" * 64, "full") and plan.driving.kind == "video"
    assert plan.meta["driving"]["mode"] == "full" and plan.meta["driving"]["kind"] == "video"
    hashed = pipeline.make_plan(recipe, speech).driving
    assert hashed.sha256 == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert pipeline.make_plan(parse_recipe({"slot_id": "plain", "speech": {"text": "Hello."}}, Path.cwd()),
                              speech).driving is None


@needs_clips
def test_the_mesh_warp_renders_a_driven_plan_from_its_curves_as_before(sample, clip) -> None:
    """Through the prepare stage a driven slot's frames on the mesh warp are those of its curves
    alone: the typed clip and the (no-op) motion step change nothing there."""
    backends = sample[0]
    prepared = pipeline.prepare(_driven_recipe(clip), backends.settings, backends, pipeline.StageClock())
    slab = np.zeros((prepared.plan.n_frames, 512, 512, 3), np.uint8)
    pipeline.warp_frames(backends, prepared.actor, prepared.plan, slab)
    curves_only = np.zeros_like(slab)
    backends.warp.prepare(prepared.actor).render(dataclasses.replace(prepared.plan, driving=None),
                                                 slice(0, prepared.plan.n_frames), curves_only)
    assert slab.any() and np.array_equal(slab, curves_only)


@needs_clips
def test_liveportrait_reads_a_driven_slots_clip_in_the_prepare_stage_and_the_warp_runs_no_m(
        tmp_path: Path, clip: Path) -> None:
    """The prepare stage (the daemon's, `vortexd render`'s) reads the clip, timed as warp_prepare;
    the warp stage then renders the slot without one call into M."""
    pytest.importorskip("torch")
    settings = Settings(output_dir=tmp_path, **liveportrait_settings(tmp_path, "tiny"))
    backends = Backends(settings)
    clock = pipeline.StageClock()
    try:
        prepared = pipeline.prepare(_driven_recipe(clip), settings, backends, clock)
        warp, plan = backends.warp, prepared.plan
        assert warp.driving_clips.prepared_fits() == [(plan.driving.key, plan.n_frames, plan.fps)]
        assert clock.seconds["warp_prepare"] > 0
        calls: list[int] = []
        hook = warp.networks.motion.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
        slab = np.zeros((plan.n_frames, 512, 512, 3), np.uint8)
        pipeline.warp_frames(backends, prepared.actor, plan, slab)
        hook.remove()
    finally:
        backends.close()
    assert calls == [] and slab.any()
