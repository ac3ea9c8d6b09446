"""Slab leases: back-pressure, FIFO fairness, release on every path, hand-off between tasks and threads."""

from __future__ import annotations

import asyncio
import gc

import numpy as np
import pytest

from vram import (Arena, ArenaPlan, NoFreeSlab, Region, RegionBudgetExceeded, SlabAlreadyLeased, SlabPool,
                  SlabPoolError, slab_region_bytes)

FRAMES, HEIGHT, WIDTH = 6, 8, 10


def _pool(count: int = 2) -> SlabPool:
    plan = ArenaPlan((Region("other", 1000),
                      Region("video_slabs", slab_region_bytes(count, FRAMES, HEIGHT, WIDTH))))
    return SlabPool(Arena.create(plan, "cpu"), count=count, frames=FRAMES, height=HEIGHT, width=WIDTH)


async def _settle() -> None:
    """Let every ready task run until nothing changes."""
    for _ in range(5):
        await asyncio.sleep(0)


def _loop_factories():
    yield pytest.param(asyncio.new_event_loop, id="asyncio")
    try:
        import uvloop
    except ImportError:
        yield pytest.param(None, id="uvloop", marks=pytest.mark.skip(reason="uvloop is not installed"))
    else:
        yield pytest.param(uvloop.new_event_loop, id="uvloop")


@pytest.fixture(params=list(_loop_factories()))
def run(request):
    """Run a coroutine to completion (5 s limit) on the stock asyncio loop and on uvloop (the daemon's)."""

    def runner(coro):
        with asyncio.Runner(loop_factory=request.param) as loop_runner:
            return loop_runner.run(asyncio.wait_for(coro, timeout=5))

    return runner


def test_slabs_are_carved_once_from_the_arena_and_reused(run):
    """Slabs are (frames, H, W, 3) uint8 views in the arena; 50 lease cycles hand out the same two addresses."""
    pool = _pool()

    async def scenario():
        seen = set()
        for k in range(50):
            async with pool.lease(f"slot{k}") as slab:
                assert slab.shape == (FRAMES, HEIGHT, WIDTH, 3) and slab.dtype == np.uint8
                seen.add(slab.ctypes.data)
        return seen

    seen = run(scenario())
    assert seen <= {s.ctypes.data for s in pool.slabs} and len(seen) >= 1
    assert all(s.base is not None for s in pool.slabs)
    assert not np.shares_memory(pool.slabs[0], pool.slabs[1])


def test_third_lease_waits_until_one_is_released(run):
    """With two slabs held, a third lease blocks (back-pressure) and gets the slab that is released."""
    pool = _pool()

    async def scenario():
        first = await pool.acquire("k0")
        second = await pool.acquire("k1")
        third = asyncio.create_task(pool.acquire("k2"))
        await _settle()
        assert not third.done() and pool.waiting == ("k2",) and pool.free_count == 0
        second.release()
        lease = await third
        assert lease.index == second.index and pool.in_use() == {"k0": first.index, "k2": second.index}
        first.release()
        lease.release()
        assert pool.in_use() == {} and pool.free_count == 2

    run(scenario())


def test_waiters_are_served_in_arrival_order(run):
    """Queued slots get slabs first come, first served, and a newcomer cannot jump the queue."""
    pool = _pool(count=1)
    order: list[str] = []

    async def worker(slot_id: str) -> None:
        async with pool.lease(slot_id):
            order.append(slot_id)
            await asyncio.sleep(0)

    async def scenario():
        holder = await pool.acquire("first")
        tasks = []
        for name in ("a", "b", "c", "d"):
            tasks.append(asyncio.create_task(worker(name)))
            await _settle()
        assert pool.waiting == ("a", "b", "c", "d")
        holder.release()
        with pytest.raises(NoFreeSlab):
            pool.lease_nowait("jumper")
        await asyncio.gather(*tasks)

    run(scenario())
    assert order == ["a", "b", "c", "d"]


def test_slab_is_released_when_the_block_raises(run):
    """An exception inside `async with pool.lease(...)` propagates and the slab is back in the pool."""
    pool = _pool()

    async def scenario():
        with pytest.raises(ZeroDivisionError):
            async with pool.lease("boom") as slab:
                slab[0, 0, 0] = 255
                1 / 0
        assert pool.in_use() == {} and pool.free_count == 2

    run(scenario())


def test_slab_is_released_when_the_holder_is_cancelled(run):
    """Cancelling a task that holds a slab releases it and wakes the next waiter."""
    pool = _pool(count=1)

    async def hold_forever() -> None:
        async with pool.lease("holder"):
            await asyncio.Event().wait()

    async def scenario():
        holder = asyncio.create_task(hold_forever())
        await _settle()
        waiter = asyncio.create_task(pool.acquire("next"))
        await _settle()
        holder.cancel()
        lease = await waiter
        assert holder.cancelled() and pool.in_use() == {"next": lease.index}
        lease.release()

    run(scenario())


def test_cancelled_waiter_leaves_the_queue_without_a_slab(run):
    """A waiter cancelled while queued takes no slab; the next release goes to the following waiter."""
    pool = _pool(count=1)

    async def scenario():
        holder = pool.lease_nowait("holder")
        doomed = asyncio.create_task(pool.acquire("doomed"))
        await _settle()
        after = asyncio.create_task(pool.acquire("after"))
        await _settle()
        doomed.cancel()
        await _settle()
        assert doomed.cancelled() and pool.waiting == ("after",)
        holder.release()
        lease = await after
        assert pool.in_use() == {"after": lease.index}
        lease.release()
        assert pool.free_count == 1 and pool.waiting == ()

    run(scenario())


def test_waiter_cancelled_after_the_hand_off_passes_the_slab_on(run):
    """A waiter cancelled just after a slab was handed to it never owns it: the slab goes to the next waiter."""
    pool = _pool(count=1)

    async def scenario():
        holder = pool.lease_nowait("holder")
        doomed = asyncio.create_task(pool.acquire("doomed"))
        await _settle()
        after = asyncio.create_task(pool.acquire("after"))
        await _settle()
        holder.release()          # hands the slab to "doomed" synchronously...
        assert pool.in_use() == {"doomed": holder.index}
        doomed.cancel()           # ...which is cancelled before it ever runs again
        lease = await after
        assert doomed.cancelled() and pool.in_use() == {"after": lease.index}
        lease.release()
        assert pool.free_count == 1

    run(scenario())


def test_cancelled_last_waiter_returns_the_slab_to_the_free_list(run):
    """When the only waiter is cancelled after the hand-off, the slab ends up free, not leaked."""
    pool = _pool(count=1)

    async def scenario():
        holder = pool.lease_nowait("holder")
        doomed = asyncio.create_task(pool.acquire("doomed"))
        await _settle()
        holder.release()
        doomed.cancel()
        await _settle()
        assert doomed.cancelled() and pool.in_use() == {} and pool.free_count == 1
        pool.lease_nowait("fresh").release()

    run(scenario())


def test_release_is_idempotent_and_never_double_hands_a_slab():
    """Releasing twice is harmless: the second call returns False and the slab is not handed out twice."""
    pool = _pool()
    lease = pool.lease_nowait("a")
    assert lease.release() is True and lease.release() is False
    with lease:
        pass
    held = [pool.lease_nowait("b"), pool.lease_nowait("c")]
    assert {h.index for h in held} == {0, 1} and pool.free_count == 0
    with pytest.raises(NoFreeSlab, match="2 of 2 leased"):
        pool.lease_nowait("d")
    with pytest.raises(SlabPoolError, match="already released"):
        lease.slab


def test_lease_handed_between_tasks_is_released_by_the_receiver(run):
    """The acquiring task can pass its lease to another task, whose release wakes a waiter."""
    pool = _pool(count=1)

    async def warp(queue: asyncio.Queue) -> None:
        lease = await pool.acquire("slot-1")
        lease.slab[:] = 9
        await queue.put(lease)

    async def encode(queue: asyncio.Queue) -> int:
        async with await queue.get() as lease:
            return int(lease.slab.sum())

    async def scenario():
        queue: asyncio.Queue = asyncio.Queue()
        await warp(queue)
        waiter = asyncio.create_task(pool.acquire("slot-2"))
        total = await asyncio.create_task(encode(queue))
        nxt = await waiter
        assert total == 9 * FRAMES * HEIGHT * WIDTH * 3 and pool.in_use() == {"slot-2": nxt.index}
        nxt.release()

    run(scenario())


def test_release_from_a_worker_thread_wakes_the_waiter(run):
    """release() called from another thread (blocking encode work) hands the slab to the loop's waiter."""
    pool = _pool(count=1)

    async def scenario():
        lease = await pool.acquire("warped")
        waiter = asyncio.create_task(pool.acquire("next"))
        await _settle()
        assert await asyncio.to_thread(lease.release) is True
        nxt = await waiter
        assert pool.in_use() == {"next": nxt.index}
        nxt.release()

    run(scenario())


def test_one_slab_per_slot(run):
    """A slot that already holds or awaits a slab cannot ask for another."""
    pool = _pool(count=1)

    async def scenario():
        lease = pool.lease_nowait("s")
        with pytest.raises(SlabAlreadyLeased, match="holds"):
            await pool.acquire("s")
        waiter = asyncio.create_task(pool.acquire("t"))
        await _settle()
        with pytest.raises(SlabAlreadyLeased, match="waiting"):
            await pool.acquire("t")
        lease.release()
        (await waiter).release()

    run(scenario())


def test_dropped_lease_is_reclaimed_with_a_warning():
    """A lease garbage-collected without release warns (ResourceWarning) and its slab returns to the pool."""
    pool = _pool(count=1)
    with pytest.warns(ResourceWarning, match="unreleased"):
        pool.lease_nowait("forgotten")
        gc.collect()
    assert pool.free_count == 1


def test_region_too_small_for_the_slabs_is_refused():
    """Asking for more slabs than the region's budget holds raises RegionBudgetExceeded."""
    plan = ArenaPlan((Region("video_slabs", slab_region_bytes(2, FRAMES, HEIGHT, WIDTH)),))
    with pytest.raises(RegionBudgetExceeded, match="slab2"):
        SlabPool(Arena.create(plan, "cpu"), count=3, frames=FRAMES, height=HEIGHT, width=WIDTH)


def test_random_cancellations_never_leak_or_share_a_slab(run):
    """60 tasks on 2 slabs with a third of them cancelled at random moments: no slab is ever shared or lost."""
    pool = _pool(count=2)
    rng = np.random.default_rng(11)
    holders: dict[int, str] = {}
    violations: list[str] = []

    async def worker(slot_id: str) -> None:
        async with pool.lease(slot_id) as slab:
            index = next(i for i, s in enumerate(pool.slabs) if s is slab)
            if index in holders:
                violations.append(f"{slot_id} got slab {index} held by {holders[index]}")
            holders[index] = slot_id
            try:
                for _ in range(int(rng.integers(0, 4))):
                    await asyncio.sleep(0)
            finally:
                del holders[index]

    async def scenario():
        tasks = [asyncio.create_task(worker(f"s{k}")) for k in range(60)]
        for k in rng.choice(60, size=20, replace=False):
            for _ in range(int(rng.integers(0, 3))):
                await asyncio.sleep(0)
            tasks[k].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(r, asyncio.CancelledError) for r in results) >= 1
        assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results)

    run(scenario())
    assert violations == []
    assert pool.in_use() == {} and pool.waiting == () and pool.free_count == 2
