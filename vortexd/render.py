"""`vortexd render`: one slot, start to finish, in this process (no daemon)."""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.errors import StageInputError
from stages.types import FRAME_SIZE_PX
from vortexd import pipeline
from vortexd.pipeline import Backends, Progress
from vortexd.recipe import Recipe, RecipeError
from vortexd.settings import Settings
from vortexd.slab_prefault import SlabPrefault
from vortexd.slot import HeldSlab, Slot
from vortexd.slot_runner import SlotRunner
from vram import format_bytes, slab_region_bytes

RENDER_HEADROOM_BYTES = 1 << 30
"""Address space a one-shot render maps beyond its video slab and what is already mapped when the
check runs: MediaPipe, OpenCV, PyAV and SciPy's libraries, their threads' stacks, the warp's and
verify's working arrays. Measured 0.76 GiB over the slab and the 0.40 GiB mapped at the check, the
same for 4 s and 60 s slots (mesh warp, verify on, 2 cores); rounded up to 1 GiB for machines
that start more threads. With less, a render fails part-way, and often not as a Python error at
all (std::bad_alloc aborts MediaPipe, a thread pool cannot start): hence the check first."""


class NotEnoughMemory(MemoryError):
    """This process cannot hold the render; the message says what needs how much."""


def address_space_left() -> tuple[int, int] | None:
    """(bytes this process may still map, its limit) under its address-space limit (`ulimit -v`,
    RLIMIT_AS), or None where there is no limit."""
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit == resource.RLIM_INFINITY:
        return None
    with open("/proc/self/status") as status:
        mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    return limit - mapped, limit


def check_address_space(n_frames: int) -> None:
    """Refuse, before any work, a render of `n_frames` whose video slab and working memory do not
    fit under this process's address-space limit (raises NotEnoughMemory)."""
    room = address_space_left()
    if room is None:
        return
    left, limit = room
    video = slab_region_bytes(1, n_frames, FRAME_SIZE_PX, FRAME_SIZE_PX)
    if video + RENDER_HEADROOM_BYTES > left:
        raise NotEnoughMemory(
            f"{n_frames} frames need {format_bytes(video)} for the video and about "
            f"{format_bytes(RENDER_HEADROOM_BYTES)} more to render them, but the address-space limit "
            f"(ulimit -v {limit // 1024}) leaves this process {format_bytes(max(left, 0))}")


@dataclass(frozen=True)
class RenderResult:
    """Where the slot was published and what its manifest says."""

    slot_dir: Path
    manifest: dict[str, Any]


def render_slot(recipe: Recipe, settings: Settings, out_root: Path, progress: Progress | None = None,
                backends: Backends | None = None) -> RenderResult:
    """Render `recipe` and publish `<out_root>/<slot_id>/{video.mp4, manifest.json}` atomically.

    Fails before any work if the slot is already published, a configured backend cannot load or
    the slot cannot fit in this process's memory (NotEnoughMemory); on any error nothing is left
    in `out_root`.
    """
    progress = progress or pipeline._no_progress
    if (out_root / recipe.slot_id).exists():
        raise RecipeError("slot_id", f"slot {recipe.slot_id!r} is already published in {out_root}")
    if backends is None:
        owned = Backends(settings)
        try:
            return render_slot(recipe, settings, out_root, progress, owned)
        finally:
            owned.close()
    # Load the configured model backends now: missing weights fail before any work.
    backends.flux
    if settings.verify:
        backends.clip
    # The video's memory first, too: a slot this process cannot hold fails before any work.
    check_address_space(recipe.output.n_frames)
    slab = pipeline.allocate_slab(recipe.output.n_frames, prefault=False)
    slot = Slot(recipe.slot_id, 0, recipe, lease=HeldSlab(slab))
    # The slab's pages are committed beside the prepare stage and the warp (see
    # vortexd.slab_prefault); each chunk waits for its own: a machine out of memory is refused
    # before a frame lands where it has no page.
    prefault = SlabPrefault(slab)
    frame_bytes = slab[0].nbytes
    try:
        published = SlotRunner(settings, backends, out_root).render(
            slot, progress,
            before_chunk=lambda start, stop: _committed(prefault, stop * frame_bytes, recipe.output.n_frames, slab.nbytes))
    except BaseException:
        prefault.wait_quietly()  # a stage's error is the one to report; the thread must end first
        raise
    return RenderResult(slot_dir=published.path, manifest=published.manifest)


def _committed(prefault: SlabPrefault, needed_bytes: int, n_frames: int, n_bytes: int) -> None:
    """Wait for the slab's first `needed_bytes`; StageInputError on output.duration_s where memory ran out."""
    try:
        prefault.wait_for(needed_bytes)
    except MemoryError as exc:
        raise StageInputError("output.duration_s", f"{n_frames} frames need {format_bytes(n_bytes)} of memory "
                              f"for the video, more than this process can get ({exc})",
                              frames=n_frames, bytes=n_bytes) from None
