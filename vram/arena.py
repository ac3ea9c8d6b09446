"""The arena: one allocation at start-up, regions at fixed offsets, typed views with stable addresses.

Lifecycle: `Arena.create(plan, device)` checks the plan against the device's free memory *before*
allocating anything and raises `ArenaDoesNotFit` with the whole budget table; otherwise it makes
exactly one allocation, which holds the view regions (the video slabs). Stages carve named views
from a view region by bump allocation; a view requested again under the same name comes back at
the same address (CUDA graphs and TensorRT bindings rely on that). `release(region)` forgets a
region's views so a reloaded backend can carve afresh; the memory itself is never returned to the
device until the arena is dropped.

A model stage's region is a pool region: the stage allocates through `stage_pool(region)` (see
vram.stage_pool), capped at the region's budget, and `usage()` reports what it really holds.
"""

from __future__ import annotations

import math
import operator
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

from vram.backing import CudaBacking, HostBacking
from vram.device import Device, available_bytes, parse_device
from vram.errors import (ArenaClosed, ArenaDoesNotFit, InvalidView, RegionBudgetExceeded, StageMemoryExceeded,
                         UnknownRegion, ViewConflict)
from vram.plan import ALIGNMENT_BYTES, POOL, ArenaPlan, align_up
from vram.stage_pool import StagePool, make_stage_pool
from vram.table import format_budget_table, format_bytes, format_stage_table


class RegionUsage(NamedTuple):
    """Budget and bytes in use of one region (unpacks as `(budget_bytes, used_bytes)`)."""

    budget_bytes: int
    used_bytes: int


@dataclass(frozen=True)
class ViewInfo:
    """Where a named view sits: byte offset from the arena start, size, shape and dtype name."""

    region: str
    name: str
    offset_bytes: int
    n_bytes: int
    shape: tuple[int, ...]
    dtype: str


def _normalise_shape(shape: tuple[int, ...] | int, name: str) -> tuple[int, ...]:
    """`shape` as a tuple of Python ints (numpy integers accepted: shapes are often computed)."""
    raw = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    dims = []
    for dim in raw:
        try:
            value = None if isinstance(dim, bool) else operator.index(dim)
        except TypeError:
            value = None
        if value is None or value < 0:
            raise InvalidView(f"view {name!r}: shape must be non-negative ints, got {shape!r}")
        dims.append(value)
    return tuple(dims)


class Arena:
    """A single block of device (or host) memory split into budgeted regions. Thread-safe."""

    def __init__(self, plan: ArenaPlan, device: Device, backing: HostBacking | CudaBacking,
                 capacity_bytes: int) -> None:
        """Use `Arena.create`; this wires an already-made backing."""
        self.plan = plan
        self.device = device
        self.capacity_bytes = capacity_bytes
        self._backing = backing
        self._lock = threading.Lock()
        self._used_bytes = {name: 0 for name in plan.names}
        self._views: dict[str, dict[str, tuple[ViewInfo, Any]]] = {name: {} for name in plan.names}
        self._stage_pools: dict[str, StagePool] = {}
        self._closed = False

    @classmethod
    def create(cls, plan: ArenaPlan, device: str = "cpu", *, prefault: bool = True) -> Arena:
        """Check `plan` against `device` ("cpu", "cuda", "cuda:N") and make the one allocation.

        Raises ArenaDoesNotFit (message: the whole budget table) when the arena plus the plan's
        headroom exceeds the device's free memory. `prefault` (host only) commits every page now so
        the memory is committed at start-up rather than on first use.
        """
        parsed = parse_device(device)
        capacity_bytes = available_bytes(parsed)
        cls.check_fits(plan, parsed, capacity_bytes)
        backing = CudaBacking(plan.total_bytes, parsed) if parsed.is_cuda else HostBacking(
            plan.total_bytes, prefault=prefault)
        return cls(plan, parsed, backing, capacity_bytes)

    @staticmethod
    def check_fits(plan: ArenaPlan, device: Device, capacity_bytes: int) -> None:
        """Raise ArenaDoesNotFit, carrying the whole budget table, when `plan` needs more than `capacity_bytes`."""
        if plan.required_bytes <= capacity_bytes:
            return
        table = format_budget_table(plan, capacity_bytes, device=str(device))
        raise ArenaDoesNotFit(
            f"arena plan does not fit on {device}: needs {format_bytes(plan.required_bytes)} "
            f"({plan.required_bytes} B) with headroom, {format_bytes(capacity_bytes)} ({capacity_bytes} B) "
            f"free\n{table}",
            device=str(device), required_bytes=plan.required_bytes, capacity_bytes=capacity_bytes, table=table)

    # -- the allocation ---------------------------------------------------------------------------

    @property
    def buffer(self):
        """The single allocation (numpy uint8 array on the host, uint8 tensor on CUDA)."""
        return self._backing.buffer

    @property
    def base_address(self) -> int:
        """Address of the arena's first byte."""
        return self._backing.base_address

    @property
    def total_bytes(self) -> int:
        """Size of the single allocation."""
        return self.plan.total_bytes

    def address_of(self, view: Any) -> int:
        """Address of a view's first byte (host pointer or CUDA device pointer)."""
        return self._backing.address(view)

    def budget_table(self) -> str:
        """The plan's budget table against the free memory measured at creation."""
        return format_budget_table(self.plan, self.capacity_bytes, device=str(self.device))

    # -- views ------------------------------------------------------------------------------------

    def _region_or_raise(self, region: str) -> None:
        if region not in self._used_bytes:
            raise UnknownRegion(region, self.plan.names)

    def _kind_or_raise(self, region: str, pool: bool) -> None:
        self._region_or_raise(region)
        if (self.plan.region(region).kind == POOL) != pool:
            how = ("its stage allocates through arena.stage_pool()" if not pool
                   else "it is carved with arena.view()")
            raise InvalidView(f"region {region!r} is a {self.plan.region(region).kind} region: {how}")

    def view(self, region: str, shape: tuple[int, ...] | int, dtype: Any, name: str):
        """A `shape`/`dtype` view carved from `region`, at a 256-byte-aligned offset.

        The same `name` with the same shape and dtype returns the same memory again (stable address);
        a different shape or dtype under that name raises ViewConflict. Carving past the region's
        budget raises RegionBudgetExceeded naming the region, the request, the budget and the use.
        """
        if not isinstance(name, str) or not name:
            raise InvalidView(f"a view needs a non-empty name, got {name!r}")
        self._kind_or_raise(region, pool=False)
        dims = _normalise_shape(shape, name)
        resolved, itemsize = self._backing.resolve_dtype(dtype)
        n_bytes = math.prod(dims) * itemsize
        with self._lock:
            if self._closed:
                raise ArenaClosed("the arena is closed")
            existing = self._views[region].get(name)
            if existing is not None:
                info, view = existing
                if info.shape != dims or info.dtype != str(resolved):
                    raise ViewConflict(
                        f"view {name!r} in region {region!r} is already carved as {info.shape} {info.dtype}; "
                        f"asked for {dims} {resolved}. Release the region to carve a new layout.")
                return view
            budget_bytes = self.plan.region(region).budget_bytes
            used_bytes = self._used_bytes[region]
            start_bytes = align_up(used_bytes)
            if start_bytes + n_bytes > budget_bytes:
                raise RegionBudgetExceeded(region, name, n_bytes, budget_bytes, used_bytes)
            offset_bytes = self.plan.offset_bytes(region) + start_bytes
            view = self._backing.carve(offset_bytes, n_bytes, dims, resolved)
            self._views[region][name] = (ViewInfo(region, name, offset_bytes, n_bytes, dims, str(resolved)), view)
            self._used_bytes[region] = start_bytes + n_bytes
            return view

    def views(self, region: str) -> tuple[ViewInfo, ...]:
        """Where every view of `region` sits, in carving order."""
        self._region_or_raise(region)
        with self._lock:
            return tuple(info for info, _ in self._views[region].values())

    def release(self, region: str) -> None:
        """Forget `region`'s views so it can be carved afresh (e.g. after a backend reload).

        Views handed out earlier still point into the region: drop them before carving again, or
        the old and new views will alias.
        """
        self._region_or_raise(region)
        with self._lock:
            self._views[region].clear()
            self._used_bytes[region] = 0

    # -- accounting -------------------------------------------------------------------------------

    def stage_pool(self, region: str, *, high_priority: bool = False) -> StagePool:
        """The stage pool of pool region `region` (made on first use, then reused): a context manager
        that routes and accounts the entering thread's PyTorch allocations, capped at the budget.
        `high_priority` (first call decides) gives the stage the high-priority CUDA stream."""
        self._kind_or_raise(region, pool=True)
        with self._lock:
            if self._closed:
                raise ArenaClosed("the arena is closed")
            pool = self._stage_pools.get(region)
            if pool is None:
                pool = make_stage_pool(region, self.plan.region(region).budget_bytes, self.device,
                                       high_priority=high_priority)
                self._stage_pools[region] = pool
            return pool

    def usage(self) -> dict[str, RegionUsage]:
        """`{region: (budget_bytes, used_bytes)}`; used = carved views (with alignment gaps) in a view
        region, what the stage holds through its pool in a pool region."""
        with self._lock:
            used = dict(self._used_bytes)
            pools = dict(self._stage_pools)
        return {r.name: RegionUsage(r.budget_bytes, pools[r.name].used_bytes() if r.name in pools else used[r.name])
                for r in self.plan.regions}

    def peaks(self) -> dict[str, int]:
        """`{pool region: its stage's peak bytes}` for the pools in use (measured at warm-up, then
        the high-water mark since)."""
        with self._lock:
            pools = dict(self._stage_pools)
        return {name: pool.peak_bytes() for name, pool in pools.items()}

    def stage_table(self, refused: StageMemoryExceeded | None = None) -> str:
        """The stage-pool regions' budgets against what each stage holds and peaked at; with the
        error of an allocation the region `refused`, that stage's peak is what it asked for."""
        peaks = self.peaks()
        if refused is not None:
            peaks[refused.region] = max(peaks.get(refused.region, 0), refused.used_bytes)
        return format_stage_table(self.plan, {name: u.used_bytes for name, u in self.usage().items()}, peaks)

    def over_budget(self) -> dict[str, RegionUsage]:
        """Regions whose use (views, or a stage's pool) is above their budget."""
        return {name: u for name, u in self.usage().items() if u.used_bytes > u.budget_bytes}

    def close(self) -> None:
        """Stop handing out views and drop the arena's reference to its allocation; the memory is
        returned once the last view into it is gone."""
        with self._lock:
            self._closed = True
            for views in self._views.values():
                views.clear()
            self._stage_pools.clear()
        self._backing = _ClosedBacking(self._backing.base_address)

    def __enter__(self) -> Arena:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Arena(device={self.device}, total={format_bytes(self.total_bytes)}, "
                f"regions={list(self.plan.names)}, alignment={ALIGNMENT_BYTES} B)")


class _ClosedBacking:
    """What a closed arena holds instead of its buffer: the old address, for repr and logs only."""

    def __init__(self, base_address: int) -> None:
        self.base_address = base_address

    @property
    def buffer(self):
        """Refused: a closed arena has no buffer."""
        raise ArenaClosed("the arena is closed")

    def resolve_dtype(self, dtype: Any):
        """Refused: a closed arena hands out no views."""
        raise ArenaClosed("the arena is closed")

    @staticmethod
    def address(view: Any) -> int:
        """Refused: a closed arena has no addresses."""
        raise ArenaClosed("the arena is closed")
