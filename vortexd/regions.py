"""Which model regions the daemon's arena has: one per model stage it runs, and no other.

Each is a stage-pool region (vram.POOL): the stage's weights and working memory come from it,
capped at its budget. `arena_budgets_mib` sets the budgets and may name regions for every stage a
node could run (a shipped config does); a region whose stage is not configured here would count
against the device for nothing, so it is left out and said so once at start-up. A configured stage
without a budget gets the reference plan's. Kokoro runs on the CPU (onnxruntime), outside torch,
so its region is never reserved on this build.
"""

from __future__ import annotations

from stages.types import FRAME_SIZE_PX
from vortexd.settings import Settings
from vram import MIB, Arena, ArenaPlan, reference_plan, slab_region_bytes

DEFAULT_REGION_MIB = {region.name: region.budget_bytes // MIB for region in reference_plan().regions
                      if region.name in ("liveportrait", "flux", "clip")}
"""The reference plan's budgets (vram.reference_plan): LivePortrait fp16 with its graph buffers
3584, Flux-schnell with T5 and the VAE 10240, the two-model CLIP ensemble in fp16 1280."""

WARP_REGION = "liveportrait"
"""The region whose stage keeps priority (the high-priority CUDA stream)."""


def _stages_in_use(settings: Settings) -> set[str]:
    uses = {
        "liveportrait": settings.warp_backend == "liveportrait",
        "flux": settings.image_backend == "flux",
        "clip": settings.verify and settings.verify_backend == "clip",
    }
    return {name for name, used in uses.items() if used}


def model_region_budgets(settings: Settings) -> tuple[dict[str, int], list[str]]:
    """(bytes by model region to reserve, names configured but left out because no stage uses them)."""
    in_use = _stages_in_use(settings)
    unused = [name for name in settings.arena_budgets_mib if name not in in_use]
    reserved = {name: settings.arena_budgets_mib.get(name, DEFAULT_REGION_MIB[name]) * MIB
                for name in DEFAULT_REGION_MIB if name in in_use}
    return reserved, unused


def create_arena(settings: Settings) -> Arena:
    """The daemon's arena on `settings.device`: a pool region per model stage it runs, and the video
    slabs as the one allocation; ArenaDoesNotFit (with the budget table) before allocating."""
    budgets, _ = model_region_budgets(settings)
    model_regions = set(budgets)
    budgets["video_slabs"] = slab_region_bytes(settings.slab_count, settings.max_slot_frames,
                                               FRAME_SIZE_PX, FRAME_SIZE_PX)
    plan = ArenaPlan.from_budgets(budgets, pools=model_regions)
    return Arena.create(plan, settings.device, prefault=settings.arena_prefault)
