"""The warp stage in its region at run time, through the functions the daemon's actors call:
over-budget fails that slot only, and nothing leaks from slot to slot."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stages.warp.liveportrait.random_weights import TINY, write_random_checkpoints  # noqa: E402
from vortexd import pipeline  # noqa: E402
from vortexd.recipe import parse_recipe  # noqa: E402
from vortexd.regions import create_arena  # noqa: E402
from vortexd.settings import Settings  # noqa: E402
from vortexd.slot import HeldSlab, Slot  # noqa: E402
from vortexd.slot_runner import SlotRunner  # noqa: E402
from vram import MIB, StageMemoryExceeded  # noqa: E402

BUDGET_MIB = 48


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    """Backends as the daemon holds them: LivePortrait (tiny random weights) loaded into its arena region."""
    weights = tmp_path_factory.mktemp("liveportrait")
    write_random_checkpoints(weights, TINY, seed=5)
    settings = Settings(output_dir=tmp_path_factory.mktemp("out"), warp_backend="liveportrait",
                        liveportrait_weights_dir=weights, liveportrait_model_params=dataclasses.asdict(TINY),
                        arena_budgets_mib={"liveportrait": BUDGET_MIB}, max_slot_frames=48, arena_prefault=False,
                        warp_chunk_frames=24)
    arena = create_arena(settings)
    backends = pipeline.Backends(settings)
    backends.arena = arena
    yield backends, arena
    backends.close()
    arena.close()


def _slot(backends: pipeline.Backends, i: int) -> tuple[pipeline.Rendered, np.ndarray]:
    recipe = parse_recipe({"slot_id": f"region-{i}", "speech": {"text": f"Slot number {i} is on air."},
                           "motion": {"seed": i}, "output": {"duration_s": 1.0}}, Path.cwd())
    actor = pipeline.make_actor(recipe, backends.settings)
    speech, warnings = pipeline.make_speech(recipe, backends)
    plan = pipeline.make_plan(recipe, speech)
    frames = np.zeros((plan.n_frames, 512, 512, 3), np.uint8)
    return pipeline.Rendered(recipe, actor, speech, plan, frames, pipeline.StageClock(), warnings), frames


def _warp(backends: pipeline.Backends, slot: pipeline.Rendered) -> None:
    pipeline.warp_frames(backends, slot.actor, slot.plan, slot.frames)


def test_twenty_slots_leave_the_region_as_they_found_it(node) -> None:
    """After every slot the region holds exactly what it held after the first (weights, engine, actor),
    and the peak never grows: no slot leaves memory behind."""
    backends, arena = node
    used, peaks = [], []
    for i in range(20):
        slot, _ = _slot(backends, i)
        _warp(backends, slot)
        used.append(arena.usage()["liveportrait"].used_bytes)
        peaks.append(arena.peaks()["liveportrait"])
    assert len(set(used)) == 1 and len(set(peaks)) == 1, (used, peaks)
    assert 0 < used[0] < peaks[0] <= BUDGET_MIB * MIB


def test_a_warp_over_its_region_fails_that_slot_only_and_the_next_publishes(node, tmp_path: Path) -> None:
    """With the region nearly full (another tenant's tensor), the warp fails with the stage's figures;
    its working memory is returned at once, and once the region has room the next slot renders the
    same frames as before and publishes."""
    backends, arena = node
    region = arena.stage_pool("liveportrait")
    reference, reference_frames = _slot(backends, 7)
    _warp(backends, reference)
    baseline = region.used_bytes()
    with region:  # leave less room than one chunk's step needs
        tenant = torch.empty(BUDGET_MIB * MIB - baseline - 2 * MIB, dtype=torch.uint8)
    failing, _ = _slot(backends, 7)
    with pytest.raises(StageMemoryExceeded) as caught:
        _warp(backends, failing)
    assert caught.value.region == "liveportrait" and caught.value.budget_bytes == BUDGET_MIB * MIB
    assert "'liveportrait' is over its budget" in str(caught.value)
    assert region.used_bytes() == baseline + tenant.nbytes
    del tenant
    assert region.used_bytes() == baseline
    retry, retry_frames = _slot(backends, 7)
    # Warped (and streamed) and published through the one slot runner, as the daemon does.
    runner = SlotRunner(backends.settings.model_copy(update={"verify": False}), backends, tmp_path)
    slot = Slot(retry.recipe.slot_id, 0, retry.recipe, lease=HeldSlab(retry_frames))
    slot.prepared = pipeline.Prepared(retry.actor, retry.speech, retry.plan, retry.warnings)
    runner.warp(slot)
    assert np.array_equal(retry_frames, reference_frames)
    published = runner.finish(slot)
    assert (published.path / "video.mp4").stat().st_size > 0 and region.used_bytes() == baseline


def test_a_full_region_lets_go_of_other_actors_before_failing_a_slot(tmp_path: Path, shared_dir: Path) -> None:
    """The warp's region sized for one cached actor: a slot with a second actor finds it full,
    forgets the first actor and renders; the next slot with the first actor prepares it again."""
    from vram import Arena, ArenaPlan, slab_region_bytes

    weights = tmp_path / "weights"
    write_random_checkpoints(weights, TINY, seed=5)
    settings = Settings(output_dir=tmp_path / "out", warp_backend="liveportrait", liveportrait_weights_dir=weights,
                        liveportrait_model_params=dataclasses.asdict(TINY), liveportrait_chunk_frames=4,
                        max_slot_frames=24, warp_chunk_frames=24)

    def node(budget_bytes: int) -> pipeline.Backends:
        backends = pipeline.Backends(settings)
        backends.arena = Arena.create(ArenaPlan.from_budgets(
            {"liveportrait": budget_bytes, "video_slabs": slab_region_bytes(1, 24, 512, 512)},
            pools={"liveportrait"}), "cpu", prefault=False)
        return backends

    astronaut, _ = _slot(node(BUDGET_MIB * MIB), 1)
    other = pipeline.make_actor(parse_recipe({"slot_id": "s10", "actor": {"image": "s10.jpg"},
                                              "speech": {"text": "Hi."}}, shared_dir / "faces"), settings)
    probe = node(BUDGET_MIB * MIB)
    _warp(probe, astronaut)
    region = probe.region("liveportrait")
    one_actor_peak, resident = region.peak_bytes(), region.used_bytes()
    probe.prepared_warp(other)
    actor_bytes = region.used_bytes() - resident
    assert actor_bytes > 0

    tight = node(one_actor_peak + actor_bytes // 2)
    _warp(tight, astronaut)
    with_other = dataclasses.replace(astronaut, actor=other)
    _warp(tight, with_other)  # full with two actors: the astronaut is let go, the slot renders
    assert tight.evict_prepared(keep=other) == 0
    _warp(tight, astronaut)  # and the astronaut comes back the same way
    assert tight.region("liveportrait").peak_bytes() <= one_actor_peak + actor_bytes // 2
