"""Device memory: the static arena, its regions and budgets, and video-slab leases.

Imports nothing else of Vortex; torch is imported only when a CUDA device or a stage pool is used.

    plan = reference_plan()                     # or ArenaPlan.from_budgets({...}, headroom_bytes=...)
    arena = Arena.create(plan, "cuda:0")        # ArenaDoesNotFit (with the budget table) before allocating
    with arena.stage_pool("liveportrait"):      # a model stage's weights and working memory, capped
        ...
    slabs = SlabPool(arena)                     # 2 x (1080, 512, 512, 3) uint8
    async with slabs.lease(slot_id) as slab: ...
"""

from vram.arena import Arena, RegionUsage, ViewInfo
from vram.backing import POPULATE_STEP_BYTES, populate_in_steps
from vram.device import Device, available_bytes, host_available_bytes, parse_device
from vram.errors import (ArenaClosed, ArenaDoesNotFit, DeviceUnavailable, InvalidDevice, InvalidPlan, InvalidView,
                         NoFreeSlab, RegionBudgetExceeded, SlabAlreadyLeased, SlabPoolError, StageMemoryExceeded,
                         UnknownRegion, ViewConflict, VramError)
from vram.plan import (ALIGNMENT_BYTES, GIB, KIB, MIB, POOL, VIEWS, ArenaPlan, Region, align_up, reference_plan,
                       slab_bytes, slab_region_bytes)
from vram.slabs import SlabLease, SlabPool
from vram.stage_pool import CudaStagePool, HostStagePool, StagePool, make_stage_pool
from vram.table import format_budget_table, format_bytes, format_stage_table

__all__ = [
    "ALIGNMENT_BYTES", "GIB", "KIB", "MIB", "POOL", "POPULATE_STEP_BYTES", "VIEWS",
    "Arena", "ArenaClosed", "ArenaDoesNotFit", "ArenaPlan", "CudaStagePool", "Device", "DeviceUnavailable",
    "HostStagePool", "InvalidDevice", "InvalidPlan", "InvalidView", "NoFreeSlab", "Region", "RegionBudgetExceeded",
    "RegionUsage", "SlabAlreadyLeased", "SlabLease", "SlabPool", "SlabPoolError", "StageMemoryExceeded", "StagePool",
    "UnknownRegion", "ViewConflict", "ViewInfo", "VramError",
    "align_up", "available_bytes", "format_budget_table", "format_bytes", "format_stage_table",
    "host_available_bytes", "make_stage_pool", "parse_device", "populate_in_steps", "reference_plan", "slab_bytes",
    "slab_region_bytes",
]
