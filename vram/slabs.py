"""Video slabs leased from the arena: await one (back-pressure, first come first served), release on every path.

A slab is a (frames, height, width, 3) uint8 view carved once from the `video_slabs` region; leasing
hands out that same memory again and again, so no allocation happens per slot. A lease is an
object that can travel between tasks (the warp actor acquires it, the encode actor releases it);
`release()` is idempotent and may be called from any thread.

Fairness and cancellation: a released slab goes straight to the oldest live waiter, and nobody
jumps the queue while others wait. A waiter cancelled before it gets a slab simply leaves the
queue; one cancelled after a slab was handed to it gives that slab on to the next waiter, so a
cancelled task never ends up owning (or leaking) a slab.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from vram.arena import Arena
from vram.errors import NoFreeSlab, SlabAlreadyLeased, SlabPoolError


@dataclass(eq=False)
class _Waiter:
    slot_id: str
    future: asyncio.Future


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class SlabLease:
    """One slab held by one slot until `release()` (idempotent; also on `with`/`async with` exit)."""

    def __init__(self, pool: SlabPool, index: int, slot_id: str) -> None:
        self._pool = pool
        self.index = index
        self.slot_id = slot_id
        self._lock = threading.Lock()
        self._released = False

    @property
    def slab(self) -> Any:
        """The leased (frames, H, W, 3) uint8 slab; refused once released, since another slot may own it."""
        if self._released:
            raise SlabPoolError(f"slab {self.index} of slot {self.slot_id!r} was already released")
        return self._pool.slabs[self.index]

    @property
    def released(self) -> bool:
        """True once the slab went back to the pool."""
        return self._released

    def release(self) -> bool:
        """Give the slab back (to the oldest waiter, else the free list). True if this call released it."""
        with self._lock:
            if self._released:
                return False
            self._released = True
        self._pool._give_back(self.index)
        return True

    def __enter__(self) -> SlabLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    async def __aenter__(self) -> SlabLease:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        # Last line of defence: a lease dropped without release would shrink the pool for good.
        if not getattr(self, "_released", True):
            try:
                warnings.warn(f"slab lease of slot {self.slot_id!r} was garbage-collected unreleased",
                              ResourceWarning, stacklevel=1)
                self.release()
            except Exception:  # noqa: BLE001 - never raise from a finaliser (e.g. at interpreter exit)
                pass

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"SlabLease(slot_id={self.slot_id!r}, index={self.index}, {state})"


class SlabPool:
    """`count` video slabs carved once from `region` of `arena`, leased one per slot.

    Use one pool per region: a second pool on the same arena and region would get the same memory
    back (views are stable by name) and the two would hand out the same slabs.
    """

    def __init__(self, arena: Arena, region: str = "video_slabs", count: int = 2, frames: int = 1080,
                 height: int = 512, width: int = 512) -> None:
        if count <= 0:
            raise SlabPoolError(f"a slab pool needs at least one slab, got count={count}")
        self.region = region
        self.slab_shape = (frames, height, width, 3)
        self.slabs: tuple[Any, ...] = tuple(
            arena.view(region, self.slab_shape, np.uint8, f"slab{i}") for i in range(count))
        self._lock = threading.Lock()
        self._free: deque[int] = deque(range(count))
        self._owner: dict[int, str] = {}
        self._waiters: deque[_Waiter] = deque()

    @property
    def count(self) -> int:
        """Number of slabs in the pool."""
        return len(self.slabs)

    @property
    def free_count(self) -> int:
        """Slabs nobody holds right now."""
        with self._lock:
            return len(self._free)

    @property
    def waiting(self) -> tuple[str, ...]:
        """Slot ids queued for a slab, oldest first (its length is the back-pressure queue depth)."""
        with self._lock:
            return tuple(w.slot_id for w in self._waiters if not w.future.done())

    def in_use(self) -> dict[str, int]:
        """`{slot_id: slab index}` for every slab currently leased."""
        with self._lock:
            return {slot_id: index for index, slot_id in self._owner.items()}

    def _has_live_waiters(self) -> bool:
        """True when a not-yet-cancelled task is queued. Caller holds the lock."""
        return any(not w.future.done() for w in self._waiters)

    def _check_new(self, slot_id: str) -> None:
        """Refuse a slot that already holds or awaits a slab (one slab per slot). Caller holds the lock."""
        if not isinstance(slot_id, str) or not slot_id:
            raise SlabPoolError(f"slot_id must be a non-empty string, got {slot_id!r}")
        if slot_id in self._owner.values():
            raise SlabAlreadyLeased(f"slot {slot_id!r} already holds a slab")
        if any(w.slot_id == slot_id and not w.future.done() for w in self._waiters):
            raise SlabAlreadyLeased(f"slot {slot_id!r} is already waiting for a slab")

    def lease_nowait(self, slot_id: str) -> SlabLease:
        """A slab now, or NoFreeSlab when none is free or other slots are already queued."""
        with self._lock:
            self._check_new(slot_id)
            if not self._free or self._has_live_waiters():
                raise NoFreeSlab(f"no free slab for slot {slot_id!r}: {len(self._owner)} of {self.count} leased "
                                 f"({', '.join(self._owner.values())}), {len(self._waiters)} waiting")
            index = self._free.popleft()
            self._owner[index] = slot_id
        return SlabLease(self, index, slot_id)

    async def acquire(self, slot_id: str) -> SlabLease:
        """A lease on a slab, waiting in FIFO order while all are in use (the back-pressure point)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._check_new(slot_id)
            if self._free and not self._has_live_waiters():
                index = self._free.popleft()
                self._owner[index] = slot_id
                return SlabLease(self, index, slot_id)
            waiter = _Waiter(slot_id, loop.create_future())
            self._waiters.append(waiter)
        try:
            index = await waiter.future
        except BaseException:
            self._abandon(waiter)
            raise
        return SlabLease(self, index, slot_id)

    @asynccontextmanager
    async def lease(self, slot_id: str) -> AsyncIterator[Any]:
        """`async with pool.lease(slot_id) as slab:` — the slab array, released however the block ends."""
        held = await self.acquire(slot_id)
        try:
            yield held.slab
        finally:
            held.release()

    # -- hand-off -----------------------------------------------------------------------------

    def _abandon(self, waiter: _Waiter) -> None:
        """Clean up after a waiter whose task was cancelled (or failed) while awaiting."""
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return
        # Already handed a slab: pass it on. If the hand-off is still in flight from another thread,
        # `_resolve` will find the future cancelled and pass it on instead.
        future = waiter.future
        if future.done() and not future.cancelled():
            self._give_back(future.result())

    def _give_back(self, index: int) -> None:
        """Hand slab `index` to the oldest live waiter, or put it back on the free list."""
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.future.done():
                    self._owner[index] = waiter.slot_id
                    break
            else:
                self._owner.pop(index, None)
                self._free.append(index)
                return
        loop = waiter.future.get_loop()
        if _running_loop() is loop:
            self._resolve(waiter, index)
            return
        try:
            loop.call_soon_threadsafe(self._resolve, waiter, index)
        except RuntimeError:
            # The waiter's loop is closed, so it will never run again: the slab goes to the next one.
            self._give_back(index)

    def _resolve(self, waiter: _Waiter, index: int) -> None:
        """On the waiter's loop: wake it with the slab, unless it was cancelled meanwhile."""
        if waiter.future.done():
            self._give_back(index)
        else:
            waiter.future.set_result(index)

    def __repr__(self) -> str:
        return (f"SlabPool(region={self.region!r}, count={self.count}, shape={self.slab_shape}, "
                f"in_use={self.in_use()}, waiting={list(self.waiting)})")
