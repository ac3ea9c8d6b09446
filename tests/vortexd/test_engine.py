"""The slot engine without a daemon: submit, cancel in each state, failures, drain, restart.

A real SlotEngine (journal, scheduler, slab pool, publish gate) on scripted stage bodies
(tests/support/engine.py), so each case runs in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from stages.errors import StageInputError
from tests.support.engine import EngineUnderTest, ScriptedRunner, text_recipe
from vortexd.engine_errors import NotServing, SlotAlreadyFinal, UnknownSlot
from vortexd.recipe import RecipeError
from vortexd.slot_state import SlotState


def run(scenario) -> None:
    """Run an async scenario on a fresh loop."""
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_submitted_slots_publish_in_order_with_their_frames(tmp_path: Path) -> None:
    """Three slots go queued → … → published; each folder holds its own frames; journal and
    events agree; a second submit of the same recipe is a duplicate."""
    import numpy as np

    async def scenario() -> None:
        box = EngineUnderTest(tmp_path)
        engine = box.start()
        states: list[tuple[str, str]] = []

        async def watch() -> None:
            async for event in box.events.subscribe():
                if event["kind"] == "state":
                    states.append((event["slot_id"], event["data"]["state"]))

        watcher = asyncio.create_task(watch())
        receipts = [await engine.submit(text_recipe(f"s{k}")) for k in range(3)]
        assert [r.seq for r in receipts] == [1, 2, 3] and not any(r.duplicate for r in receipts)
        assert (await engine.submit(text_recipe("s0"))).duplicate
        for k in range(3):
            await box.wait_state(f"s{k}", "published")
        await asyncio.sleep(0.05)
        watcher.cancel()
        await box.close()
        for k in range(3):
            frames = np.load(box.settings.output_dir / f"s{k}" / "frames.npy")
            assert frames.shape == (4, 8, 8, 3) and frames[0, 0, 0, 0] == k + 1
        walk = [state for slot_id, state in states if slot_id == "s1"]
        assert walk == ["queued", "preparing", "prepared", "warping", "warped", "finishing", "published"]
        assert box.runner.started.count(("s0", "warp")) == 1

    run(scenario)


@pytest.mark.parametrize("stage", ["queued", "prepare", "warp", "finish"])
def test_a_cancelled_slot_stops_where_it_is_and_is_never_published(tmp_path: Path, stage: str) -> None:
    """Cancel while queued (it never starts) or while any stage runs (the stage is interrupted);
    the slot is journaled cancelled with the reason, nothing is published, its slab comes back,
    and the next slot still publishes."""
    async def scenario() -> None:
        runner = ScriptedRunner(tmp_path / "out")
        if stage != "queued":
            runner.hold("a", stage)
        box = EngineUnderTest(tmp_path, runner)
        engine = box.start()
        if stage == "queued":
            engine.drain()
        await engine.submit(text_recipe("a"))
        if stage != "queued":
            await box.wait_state("a", {"prepare": "preparing", "warp": "warping", "finish": "finishing"}[stage])
        state, interrupted = await engine.cancel("a", "wrong script")
        assert state is SlotState.CANCELLED and interrupted == (None if stage == "queued" else stage)
        engine.resume()
        await engine.submit(text_recipe("b"))
        await box.wait_state("b", "published")
        row = box.journal.get("a")
        assert row.state == "cancelled" and row.error == "wrong script"
        assert not (box.settings.output_dir / "a").exists()
        assert box.slabs.free_count == box.slabs.count
        with pytest.raises(SlotAlreadyFinal):
            await engine.cancel("a")
        await box.close()

    run(scenario)


def test_cancel_refuses_unknown_and_published_slots(tmp_path: Path) -> None:
    """Unknown slots and published ones are refused with domain errors naming them."""
    async def scenario() -> None:
        box = EngineUnderTest(tmp_path)
        engine = box.start()
        with pytest.raises(UnknownSlot):
            await engine.cancel("ghost")
        await engine.submit(text_recipe("done"))
        await box.wait_state("done", "published")
        with pytest.raises(SlotAlreadyFinal, match="published"):
            await engine.cancel("done")
        await box.close()

    run(scenario)


def test_a_transient_fault_is_retried_and_the_slot_still_publishes(tmp_path: Path) -> None:
    """Disk full while publishing: the slot stays warped (journaled, nothing half-published),
    the finish runs again after its back-off and publishes."""
    async def scenario() -> None:
        runner = ScriptedRunner(tmp_path / "out")
        runner.fail("a", "finish", OSError(errno.ENOSPC, "No space left on device"))
        box = EngineUnderTest(tmp_path, runner, cadence_s=6.0)
        engine = box.start()
        await engine.submit(text_recipe("a"))
        await box.wait_state("a", "published")
        assert runner.started.count(("a", "finish")) == 2
        events = [e.data for e in box.journal.events("a") if e.kind == "state"]
        assert any("will be tried again" in (e.get("error") or "") for e in events)
        assert engine.scheduler.stats.retries == 1
        await box.close()

    run(scenario)


def test_a_fault_in_the_recipe_is_final_and_counted_as_rejected(tmp_path: Path) -> None:
    """A stage that finds the input unusable (no face) fails the slot at once: no retry."""
    async def scenario() -> None:
        runner = ScriptedRunner(tmp_path / "out")
        runner.fail("a", "prepare", StageInputError("actor.image", "no human face found"))
        box = EngineUnderTest(tmp_path, runner)
        engine = box.start()
        await engine.submit(text_recipe("a"))
        assert await box.wait_state("a", "failed") == "failed"
        assert "no human face" in box.journal.get("a").error
        assert runner.started.count(("a", "prepare")) == 1
        assert engine.scheduler.stats.rejected == 1
        await box.close()

    run(scenario)


def test_a_slot_abandoned_as_late_is_never_published_afterwards(tmp_path: Path) -> None:
    """A finish still running at the deadline is abandoned; when it comes back nothing is
    published and the slot is counted once, as late."""
    async def scenario() -> None:
        runner = ScriptedRunner(tmp_path / "out")
        release = runner.hold("a", "finish")
        box = EngineUnderTest(tmp_path, runner, cadence_s=1.0, margin_s=0.2)
        engine = box.start()
        await engine.submit(text_recipe("a"))
        await box.wait_state("a", "late")
        release.set()
        await asyncio.sleep(0.3)
        assert box.state("a") == "late"
        assert not (box.settings.output_dir / "a").exists()
        text = box.metrics.render().decode()
        assert 'vortex_slots_total{outcome="late"} 1.0' in text
        assert 'vortex_slots_total{outcome="published_late"} 0.0' in text
        await box.close()

    run(scenario)


def test_a_drain_waits_for_every_slot_in_flight_including_queued_jobs(tmp_path: Path) -> None:
    """With a slow finish, slots queue up in the finish lane's mailbox; stop() waits for all of
    them to publish (and the slot already prepared ahead), starts nothing new, and leaves the
    never-started slot journaled queued."""
    async def scenario() -> None:
        runner = ScriptedRunner(tmp_path / "out", seconds={"prepare": 0.01, "warp": 0.01, "finish": 0.3})
        box = EngineUnderTest(tmp_path, runner, cadence_s=8.0)
        engine = box.start()
        for k in range(4):
            await engine.submit(text_recipe(f"s{k}"))
        await box.wait_state("s1", "finishing")
        # The job is sent to the lane just after the journal says "finishing".
        while engine.snapshot().lanes["finish"]["queued"] == 0 and box.state("s0") != "published":
            await asyncio.sleep(0.005)
        queued_jobs = engine.snapshot().lanes["finish"]
        assert queued_jobs["current"] == "s0" and queued_jobs["queued"] == 1
        assert box.state("s2") in ("preparing", "prepared")  # prepared ahead, waiting for a slab
        assert await engine.stop(timeout_s=10.0) is True
        assert [box.state(f"s{k}") for k in range(4)] == ["published", "published", "published", "queued"]
        with pytest.raises(NotServing):
            await engine.submit(text_recipe("s4"))
        await box.close()

    run(scenario)


def test_a_drain_out_of_time_leaves_slots_resumable_and_a_restart_publishes_each_once(tmp_path: Path) -> None:
    """Out of drain time, the slot in flight is interrupted but not failed: the journal keeps it
    where it was; a new engine on the same journal resumes it and publishes it exactly once."""
    async def first_life() -> None:
        runner = ScriptedRunner(tmp_path / "out")
        runner.hold("a", "warp")
        box = EngineUnderTest(tmp_path, runner)
        engine = box.start()
        await engine.submit(text_recipe("a"))
        await engine.submit(text_recipe("b"))
        await box.wait_state("a", "warping")
        assert await engine.stop(timeout_s=0.2) is False
        assert box.state("a") == "warping" and box.journal.get("a").error is None
        await box.close()

    async def second_life() -> None:
        box = EngineUnderTest(tmp_path)
        box.start()
        for slot_id in ("a", "b"):
            await box.wait_state(slot_id, "published")
        assert box.journal.get("a").attempts == 1
        assert [s for s in box.runner.started if s[0] == "a"] == [("a", "prepare"), ("a", "warp"), ("a", "finish")]
        await box.close()

    run(first_life)
    run(second_life)


def test_a_recipe_too_long_for_a_slab_is_refused_naming_the_field(tmp_path: Path) -> None:
    """More frames than a slab holds: RecipeError on output.duration_s, nothing journaled."""
    async def scenario() -> None:
        box = EngineUnderTest(tmp_path)
        engine = box.start()
        with pytest.raises(RecipeError) as err:
            await engine.submit(text_recipe("long", seconds=10.0))
        assert err.value.field == "output.duration_s"
        assert box.journal.get("long") is None
        await box.close()

    run(scenario)
