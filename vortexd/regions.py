"""Which arena regions the daemon reserves: only those of the model stages it runs.

`arena_budgets_mib` may name regions for every stage a node could run (a shipped config does);
a region whose stage is not configured here would hold device memory nobody uses, so it is
left out of the plan and said so once at start-up. Kokoro runs on the CPU (onnxruntime), so its
region is never reserved on this build.
"""

from __future__ import annotations

from vortexd.settings import Settings
from vram import MIB


def _region_in_use(name: str, settings: Settings) -> bool:
    uses = {
        "liveportrait": settings.warp_backend == "liveportrait",
        "flux": settings.image_backend == "flux",
        "clip": settings.verify and settings.verify_backend == "clip",
    }
    return uses.get(name, False)


def model_region_budgets(settings: Settings) -> tuple[dict[str, int], list[str]]:
    """(bytes by region to reserve, names configured but left out because no stage uses them)."""
    reserved, unused = {}, []
    for name, mib in settings.arena_budgets_mib.items():
        if _region_in_use(name, settings):
            reserved[name] = mib * MIB
        else:
            unused.append(name)
    return reserved, unused
