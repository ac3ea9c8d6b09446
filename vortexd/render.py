"""`vortexd render`: one slot, start to finish, in this process (no daemon)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vortexd import pipeline
from vortexd.pipeline import Backends, Progress
from vortexd.recipe import Recipe, RecipeError
from vortexd.settings import Settings
from vortexd.slot import HeldSlab, Slot
from vortexd.slot_runner import SlotRunner


@dataclass(frozen=True)
class RenderResult:
    """Where the slot was published and what its manifest says."""

    slot_dir: Path
    manifest: dict[str, Any]


def render_slot(recipe: Recipe, settings: Settings, out_root: Path, progress: Progress | None = None,
                backends: Backends | None = None) -> RenderResult:
    """Render `recipe` and publish `<out_root>/<slot_id>/{video.mp4, manifest.json}` atomically.

    Fails before any work if the slot is already published or a configured backend cannot load;
    on any error nothing is left in `out_root`.
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
    slab = pipeline.allocate_slab(recipe.output.n_frames)
    slot = Slot(recipe.slot_id, 0, recipe, lease=HeldSlab(slab))
    published = SlotRunner(settings, backends, out_root).render(slot, progress)
    return RenderResult(slot_dir=published.path, manifest=published.manifest)
