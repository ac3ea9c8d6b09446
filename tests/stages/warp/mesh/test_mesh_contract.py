"""The backend contract: exact background, determinism, slices, no per-frame allocation, errors."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from stages.errors import StageInputError
from stages.types import Actor
from tests.stages.warp.mesh.conftest import make_plan, new_slab

WILD = dict(head_yaw_deg=np.linspace(-25, 25, 8), head_pitch_deg=np.linspace(15, -15, 8),
            head_roll_deg=np.linspace(-10, 10, 8), shift_x_px=np.linspace(-60, 60, 8),
            shift_y_px=np.linspace(40, -40, 8), jaw_open=np.linspace(0, 1.5, 8), blink=0.6, smile=1.0)


def test_pixels_outside_the_head_roi_are_the_actor_image(prepared, astronaut_actor):
    """Even under extreme head motion, every pixel outside the ROI equals the actor image."""
    slab = new_slab(8, fill=7)
    prepared.render(make_plan(8, **WILD), slice(0, 8), slab)
    outside = np.ones((512, 512), bool)
    outside[prepared.roi.slices] = False
    assert outside.sum() > 0
    for frame in slab:
        assert np.array_equal(frame[outside], astronaut_actor.image[outside])


def test_rest_plan_reproduces_the_actor(prepared, astronaut_actor):
    """All curves at 0 give back the actor image (up to rounding, and a few repainted tooth tips)."""
    slab = new_slab(1)
    prepared.render(make_plan(1), slice(0, 1), slab)
    diff = np.abs(slab[0].astype(int) - astronaut_actor.image).max(axis=-1)
    assert diff.mean() < 0.05
    assert (diff > 3).sum() <= 40  # tooth tips poking into the lips' edge band, painted as lip


CHUNKINGS = {
    "one call": [70],
    "uneven, split inside a block": [17, 23, 30],
    "across a block edge": [31, 2, 37],
    "single frames": [1] * 70,
}


@pytest.mark.parametrize("sizes", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_render_is_deterministic_and_independent_of_chunking(prepared, sizes):
    """Same plan → identical bytes in every frame, however the caller chunks the render.

    70 frames cross two block edges; the plan moves every layer (head, jaw, lips, lids) so any
    frame whose fields were computed differently would show it.
    """
    n = sum(sizes)
    rng = np.random.default_rng(3)
    plan = make_plan(n, jaw_open=rng.uniform(0, 1, n), blink=rng.uniform(0, 1, n),
                     head_yaw_deg=rng.uniform(-6, 6, n), head_roll_deg=rng.uniform(-3, 3, n),
                     lip_width=rng.uniform(-1, 1, n), smile=rng.uniform(0, 1, n))
    whole, chunked = new_slab(n), new_slab(n)
    prepared.render(plan, slice(0, n), whole)
    bounds = np.cumsum([0] + sizes)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        prepared.render(plan, slice(int(lo), int(hi)), chunked)
    differing = [k for k in range(n) if not np.array_equal(whole[k], chunked[k])]
    assert not differing, f"frames {differing} depend on the chunking"


def test_rendering_a_slice_touches_only_those_frames(prepared):
    """render(plan, 10:20, out) writes frames 10..19 and leaves every other frame alone."""
    slab = new_slab(30, fill=123)
    prepared.render(make_plan(30, jaw_open=0.7), slice(10, 20), slab)
    assert (slab[:10] == 123).all() and (slab[20:] == 123).all()
    assert not (slab[10:20] == 123).all(axis=(1, 2, 3)).any()


def test_rendering_a_chunk_does_not_allocate_per_frame(prepared):
    """Peak traced allocation while rendering 96 frames stays tiny next to the frames (75 MB)."""
    n = 96
    rng = np.random.default_rng(5)
    plan = make_plan(n, jaw_open=rng.uniform(0, 1, n), blink=rng.uniform(0, 1, n),
                     lips_closed=rng.uniform(0, 1, n) > 0.8, head_roll_deg=rng.uniform(-3, 3, n))
    slab = new_slab(n)
    prepared.render(plan, slice(0, n), slab)  # warm-up: thread pool, lazy cv2 state
    tracemalloc.start()
    prepared.render(plan, slice(0, n), slab)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 512 * 1024


def test_bad_inputs_name_the_field(prepared, astronaut_actor):
    """Unusable actor, plan, slab or range raise StageInputError naming what was wrong."""
    from stages.warp.mesh import MeshWarpBackend

    with pytest.raises(StageInputError) as err:
        MeshWarpBackend().prepare(Actor(astronaut_actor.image[:256], astronaut_actor.landmarks_px,
                                        np.eye(2, 3), "x", "x"))
    assert err.value.field == "actor.image"
    with pytest.raises(StageInputError) as err:
        MeshWarpBackend().prepare(Actor(astronaut_actor.image, astronaut_actor.landmarks_px[:100],
                                        np.eye(2, 3), "x", "x"))
    assert err.value.field == "actor.landmarks_px"
    bad = make_plan(4, jaw_open=[0.0, np.nan, 0.0, 0.0])
    with pytest.raises(StageInputError) as err:
        prepared.render(bad, slice(0, 4), new_slab(4))
    assert err.value.field == "plan.jaw_open"
    with pytest.raises(StageInputError) as err:
        prepared.render(make_plan(4), slice(0, 4), np.zeros((4, 512, 512, 3), np.float32))
    assert err.value.field == "out"
    with pytest.raises(StageInputError) as err:
        prepared.render(make_plan(8), slice(0, 8), new_slab(4))
    assert err.value.field == "frames"
