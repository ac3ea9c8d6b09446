"""Device memory: the static arena, its regions and budgets, and video-slab leases.

Imports nothing else of Vortex; torch is imported only when a CUDA device is used.

    plan = reference_plan()                     # or ArenaPlan.from_budgets({...}, headroom_bytes=...)
    arena = Arena.create(plan, "cuda:0")        # ArenaDoesNotFit (with the budget table) before allocating
    weights = arena.view("kokoro", (n,), np.float16, "weights")
    slabs = SlabPool(arena)                     # 2 x (1080, 512, 512, 3) uint8
    async with slabs.lease(slot_id) as slab: ...
"""

from vram.arena import Arena, RegionUsage, ViewInfo
from vram.device import Device, available_bytes, host_available_bytes, parse_device
from vram.errors import (ArenaClosed, ArenaDoesNotFit, DeviceUnavailable, InvalidDevice, InvalidPlan, InvalidView,
                         NoFreeSlab, RegionBudgetExceeded, SlabAlreadyLeased, SlabPoolError, UnknownRegion,
                         ViewConflict, VramError)
from vram.plan import (ALIGNMENT_BYTES, GIB, KIB, MIB, ArenaPlan, Region, align_up, reference_plan, slab_bytes,
                       slab_region_bytes)
from vram.slabs import SlabLease, SlabPool
from vram.stage_pool import CudaStagePool, StagePool
from vram.table import format_budget_table, format_bytes

__all__ = [
    "ALIGNMENT_BYTES", "GIB", "KIB", "MIB",
    "Arena", "ArenaClosed", "ArenaDoesNotFit", "ArenaPlan", "CudaStagePool", "Device", "DeviceUnavailable",
    "InvalidDevice", "InvalidPlan", "InvalidView", "NoFreeSlab", "Region", "RegionBudgetExceeded", "RegionUsage",
    "SlabAlreadyLeased", "SlabLease", "SlabPool", "SlabPoolError", "StagePool", "UnknownRegion", "ViewConflict",
    "ViewInfo", "VramError",
    "align_up", "available_bytes", "format_budget_table", "format_bytes", "host_available_bytes", "parse_device",
    "reference_plan", "slab_bytes", "slab_region_bytes",
]
