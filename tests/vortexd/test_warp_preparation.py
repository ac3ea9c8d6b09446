"""The warp's per-actor preparation runs once, in the prepare stage, and the warp stage reuses it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from vortexd import pipeline
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
